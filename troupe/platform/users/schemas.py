"""User JSON (the spec's User model, never a hash or token column) and the users bodies."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, field_validator

from troupe.platform.schemas import CamelModel, RoundTripInput, StrictInput, deep_merge, omittable

Role = Literal["admin", "user", "viewer"]
Status = Literal["active", "inactive", "suspended"]
# In answers: every platform role (rbac.Role), and the invitations table's CHECK constraint.
AccountRole = Literal["super_admin", "admin", "user", "viewer"]
InvitationStatus = Literal["pending", "accepted", "revoked", "expired"]

# The spec gives the shape of UserProfile but no values; these are what a new account sees.
DEFAULT_PREFERENCES: dict[str, Any] = {
    "theme": "auto",
    "sidebarCollapsed": False,
    "notifications": {"email": True, "sms": False, "push": True, "slack": False, "taskCompletion": True,
                      "systemAlerts": True, "weeklyReport": False},
    "dashboard": {"defaultView": "overview", "chartsEnabled": True, "refreshInterval": 30, "compactMode": False},
}
DEFAULT_PROFILE: dict[str, Any] = {"timezone": "UTC", "language": "en"}


def full_profile(profile: dict[str, Any] | None, preferences: dict[str, Any] | None) -> dict[str, Any]:
    """``users.profile`` holds bio..language, ``users.preferences`` the preferences object."""
    out = deep_merge(DEFAULT_PROFILE, profile or {})
    out["preferences"] = deep_merge(DEFAULT_PREFERENCES, preferences or {})
    return out


@lru_cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


# --------------------------------------------------------------------------- responses


class NotificationSettings(CamelModel):
    email: bool
    sms: bool
    push: bool
    slack: bool
    webhook: str | None = None
    task_completion: bool
    system_alerts: bool
    weekly_report: bool


class DashboardSettings(CamelModel):
    default_view: Literal["overview", "companies", "agents", "tools"]
    charts_enabled: bool
    refresh_interval: int = Field(description="Seconds")
    compact_mode: bool


class Preferences(CamelModel):
    theme: Literal["light", "dark", "auto"]
    sidebar_collapsed: bool
    notifications: NotificationSettings
    dashboard: DashboardSettings


class UserProfile(CamelModel):
    bio: str | None = None
    company: str | None = None
    location: str | None = None
    website: str | None = None
    timezone: str
    language: str
    preferences: Preferences


class Permission(CamelModel):
    """The spec's Permission, derived from the role table (``troupe.rbac``); the id is the
    permission string the JWT carries."""

    id: str = Field(description="The permission string, e.g. companies:create")
    name: str
    resource: str
    action: Literal["create", "read", "update", "delete", "execute", "manage", "publish", "cancel"]
    conditions: dict[str, Any] | None = None
    scope: Literal["global", "company", "own"] = Field(
        description="global: every tenant; company: the user's companies, as their company role allows; "
                    "own: only objects the user owns or created")


class UserOut(CamelModel):
    id: uuid.UUID
    email: str
    username: str
    first_name: str
    last_name: str
    avatar: str | None = None
    role: AccountRole
    status: Status
    permissions: list[Permission]
    profile: UserProfile
    companies: list[uuid.UUID]
    email_verified: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_login_at: datetime | None = None


class ActivityEntry(CamelModel):
    id: uuid.UUID
    level: str
    source: str
    message: str
    action: str | None = None
    details: dict[str, Any] | None = None
    company_id: uuid.UUID | None = None
    request_id: str | None = None
    created_at: datetime | None = None


class InvitationOut(CamelModel):
    id: uuid.UUID
    company_id: uuid.UUID
    user_id: uuid.UUID | None = None
    email: str
    role: Literal["member", "viewer"]
    message: str | None = None
    status: InvitationStatus
    invited_by: uuid.UUID | None = None
    expires_at: datetime
    created_at: datetime | None = None
    accepted_at: datetime | None = None


class Membership(CamelModel):
    company_id: uuid.UUID
    role: str


# --------------------------------------------------------------------------- requests


class NotificationPatch(StrictInput):
    email: bool | None = None
    sms: bool | None = None
    push: bool | None = None
    slack: bool | None = None
    webhook: str | None = Field(None, max_length=2000, pattern=r"^https://\S+$")
    task_completion: bool | None = None
    system_alerts: bool | None = None
    weekly_report: bool | None = None


class DashboardPatch(StrictInput):
    default_view: Literal["overview", "companies", "agents", "tools"] | None = None
    charts_enabled: bool | None = None
    refresh_interval: int | None = Field(None, ge=5, le=86_400)
    compact_mode: bool | None = None


class PreferencesPatch(StrictInput):
    theme: Literal["light", "dark", "auto"] | None = None
    sidebar_collapsed: bool | None = None
    notifications: NotificationPatch | None = None
    dashboard: DashboardPatch | None = None


class ProfilePatch(StrictInput):
    bio: str | None = Field(None, max_length=2000)
    company: str | None = Field(None, max_length=200)
    location: str | None = Field(None, max_length=200)
    website: str | None = Field(None, max_length=500, pattern=r"^https?://\S+$")
    timezone: str | None = Field(None, max_length=64)
    language: str | None = Field(None, min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
    preferences: PreferencesPatch | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is not None and value not in _timezones():
            raise ValueError("unknown IANA time zone")
        return value


class UserUpdate(RoundTripInput):
    """What a user may change about an account; role and status have their own routes.
    The whole GET answer may be sent back: its other fields are ignored."""

    read_models = ("UserOut",)
    compared = frozenset({"role", "status", "email", "username"})  # sent changed: VAL_001, not ignored

    first_name: str = omittable(min_length=1, max_length=100)
    last_name: str = omittable(min_length=1, max_length=100)
    avatar: str | None = Field(None, max_length=2000, pattern=r"^(https?://|data:image/)\S+$")
    profile: ProfilePatch | None = None


class RoleUpdate(StrictInput):
    role: Role


class StatusUpdate(StrictInput):
    status: Status
    reason: str | None = Field(None, max_length=500)


class InviteRequest(StrictInput):
    company_id: uuid.UUID
    role: Literal["member", "viewer", "user"] = Field(
        "member", description="The role in the company; the spec's platform role 'user' means member")
    message: str | None = Field(None, max_length=2000)

    @field_validator("role")
    @classmethod
    def _user_is_member(cls, value: str) -> str:
        return "member" if value == "user" else value


class AcceptInvitation(StrictInput):
    token: str = Field(min_length=10, max_length=200)


UserSort = Literal["createdAt", "updatedAt", "lastLoginAt", "username", "email", "firstName", "lastName",
                   "role", "status"]
