"""The spec's permissions and roles. ``X:manage`` implies every action on X.

Scope policy (see README, "Access policy"): role permissions say *what kind* of
action a user may take; *which* objects they may take it on comes from
ownership and company membership, unless the role grants the permission
globally (SUPER_ADMIN, ADMIN).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    SUPER_ADMIN = "super_admin"
    ADMIN = "admin"
    USER = "user"
    VIEWER = "viewer"


PERMISSIONS: dict[str, str] = {
    "users:create": "Create users", "users:read": "View users", "users:update": "Update users",
    "users:delete": "Delete users", "users:manage": "Manage users",
    "companies:create": "Create companies", "companies:read": "View companies",
    "companies:update": "Update companies", "companies:delete": "Delete companies",
    "companies:execute": "Run company tasks", "companies:manage": "Manage companies",
    "agents:create": "Create agents", "agents:read": "View agents", "agents:update": "Update agents",
    "agents:delete": "Delete agents", "agents:execute": "Run agents", "agents:publish": "Publish agents",
    "tools:create": "Create tools", "tools:read": "View tools", "tools:update": "Update tools",
    "tools:delete": "Delete tools", "tools:execute": "Run tools", "tools:publish": "Publish tools",
    "workflows:create": "Create workflows", "workflows:read": "View workflows",
    "workflows:update": "Update workflows", "workflows:delete": "Delete workflows",
    "workflows:execute": "Run workflows",
    "tasks:create": "Create tasks", "tasks:read": "View tasks", "tasks:update": "Update tasks",
    "tasks:delete": "Delete tasks", "tasks:execute": "Run tasks", "tasks:cancel": "Cancel tasks",
    "system:read": "View system information", "system:update": "Update system settings",
    "system:manage": "Manage the system", "logs:read": "View logs", "metrics:read": "View metrics",
    "billing:read": "View billing", "billing:manage": "Manage billing",
}

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.SUPER_ADMIN: frozenset(PERMISSIONS),
    Role.ADMIN: frozenset({
        "users:read", "users:update", "companies:manage", "agents:manage", "tools:manage",
        "workflows:manage", "tasks:manage", "system:read", "logs:read", "metrics:read",
    }),
    Role.USER: frozenset({
        "companies:create", "companies:read", "companies:update",
        "agents:create", "agents:read", "agents:update", "agents:execute",
        "tools:create", "tools:read", "tools:update", "tools:execute",
        "workflows:create", "workflows:read", "workflows:update", "workflows:execute",
        "tasks:create", "tasks:read", "tasks:update", "tasks:execute",
    }),
    Role.VIEWER: frozenset({"companies:read", "agents:read", "tools:read", "workflows:read", "tasks:read"}),
}

# The spec's USER role can create companies, agents, tools, workflows and tasks
# but holds no delete/publish/cancel/company-execute permission. Ownership (and,
# for execute, membership) grants those on the objects concerned: the route
# admits the action, and the service checks the caller's standing on the object
# (company owner or member role, creator) before doing it.
OWNER_PERMISSIONS = frozenset({
    "companies:delete", "companies:execute", "agents:delete", "agents:publish", "tools:delete",
    "tools:publish", "workflows:delete", "tasks:delete", "tasks:cancel",
})

# Roles whose permissions apply to every tenant's objects.
GLOBAL_ROLES = frozenset({Role.SUPER_ADMIN, Role.ADMIN})


def role_permissions(role: str) -> frozenset[str]:
    try:
        return ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return frozenset()


def grants(granted: frozenset[str] | set[str], permission: str) -> bool:
    """True if ``permission`` is granted directly or through ``<resource>:manage``."""
    if permission in granted:
        return True
    resource = permission.split(":", 1)[0]
    return f"{resource}:manage" in granted


def allows(role: str, granted: frozenset[str] | set[str], permission: str) -> bool:
    """Role permission, or an owner-scoped one for the USER role (see OWNER_PERMISSIONS)."""
    return grants(granted, permission) or (role == Role.USER and permission in OWNER_PERMISSIONS)


def is_global(role: str) -> bool:
    return role in GLOBAL_ROLES


Scope = Literal["global", "company", "own"]


def role_grants(role: str) -> list[tuple[str, Scope]]:
    """What ``role`` may do and where, sorted by permission: the spec's ``Permission.scope``.

    ``global``: on every tenant's objects (SUPER_ADMIN, ADMIN). ``company``: within the
    companies the user owns or belongs to, as their company role allows. ``own``: only on
    objects the user owns or created (the USER role's OWNER_PERMISSIONS, but
    ``companies:execute``, which membership gives too)."""
    scope: Scope = "global" if is_global(role) else "company"
    granted: dict[str, Scope] = dict.fromkeys(role_permissions(role), scope)
    if role == Role.USER:
        for permission in OWNER_PERMISSIONS:
            # Running a company's tasks comes with membership too, not only ownership.
            granted.setdefault(permission, "company" if permission == "companies:execute" else "own")
    return sorted(granted.items())


def permission_name(permission: str) -> str:
    """The spec's label, or for a ``<resource>:manage`` it does not list, "Manage <resource>"."""
    resource, _, action = permission.partition(":")
    return PERMISSIONS.get(permission) or f"{action.capitalize()} {resource}"
