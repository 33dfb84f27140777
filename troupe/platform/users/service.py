"""Users: profiles, administration (role, status, soft delete), activity,
company invitations, and the first super admin."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe import rbac, runtime_settings
from troupe.config import get_settings
from troupe.db import models
from troupe.errors import AppError, ErrorCode, forbidden, invalid, not_found
from troupe.infra.mail import mail_link_base, send_mail
from troupe.platform.access import load_company
from troupe.platform.auth import sessions
from troupe.platform.auth.audit import audit
from troupe.platform.auth.passwords import check_strength, normalize_email
from troupe.platform.deps import Principal
from troupe.platform.schemas import PageParams, deep_merge
from troupe.platform.system.gates import ensure_feature, ensure_team_size
from troupe.platform.users.schemas import (
    ActivityEntry,
    InvitationOut,
    InviteRequest,
    Membership,
    Permission,
    UserOut,
    UserUpdate,
    full_profile,
)
from troupe.security import hash_password, new_opaque_token, token_hash
from troupe.timeutil import utcnow

_SORT_COLUMNS: dict[str, Any] = {
    "createdAt": models.User.created_at, "updatedAt": models.User.updated_at,
    "lastLoginAt": models.User.last_login_at, "username": models.User.username, "email": models.User.email,
    "firstName": models.User.first_name, "lastName": models.User.last_name, "role": models.User.role,
    "status": models.User.status,
}
# Profile keys kept in users.profile; the preferences object lives in users.preferences.
_PROFILE_KEYS = ("bio", "company", "location", "website", "timezone", "language")


# --------------------------------------------------------------------------- serialisation


def _companies_column() -> Any:
    """Per user row, ids of the companies they own or belong to (one correlated subquery)."""
    company = models.Company
    agg = (select(func.array_agg(company.id))
           .where(or_(company.owner_id == models.User.id, company.team_members.any(models.User.id)))
           .correlate(models.User)
           .scalar_subquery())
    return agg.label("company_ids")


async def new_account_profile() -> dict[str, Any]:
    """A new account's profile starts with the system settings' time zone and language."""
    general = (await runtime_settings.current()).general
    return {"timezone": general.timezone, "language": general.language}


def permissions_of(role: str) -> list[Permission]:
    out = []
    for permission, scope in rbac.role_grants(role):
        resource, _, action = permission.partition(":")
        out.append(Permission(id=permission, name=rbac.permission_name(permission), resource=resource,
                              action=action, scope=scope))  # type: ignore[arg-type]
    return out


def to_out(user: models.User, company_ids: list[uuid.UUID] | list[str] | None) -> UserOut:
    return UserOut(
        id=user.id, email=user.email, username=user.username, first_name=user.first_name,
        last_name=user.last_name, avatar=user.avatar, role=user.role or "user", status=user.status or "active",
        permissions=permissions_of(user.role or "user"),
        profile=full_profile(user.profile, user.preferences),  # type: ignore[arg-type]
        companies=[uuid.UUID(str(c)) for c in company_ids or []], email_verified=bool(user.email_verified),
        created_at=user.created_at, updated_at=user.updated_at, last_login_at=user.last_login_at)


async def user_out(session: AsyncSession, user: models.User) -> UserOut:
    return to_out(user, await sessions.user_company_ids(session, user.id))


async def load_user(session: AsyncSession, user_id: uuid.UUID, *, for_update: bool = False) -> models.User:
    """A live (not deleted) account, or RES_001."""
    user = await session.get(models.User, user_id, with_for_update=for_update, populate_existing=for_update)
    if user is None or user.deleted_at is not None:
        raise not_found("User")
    return user


def _self_or(caller: Principal, user_id: uuid.UUID, permission: str) -> None:
    if caller.id != user_id and not caller.can(permission):
        raise forbidden(f"Missing permission: {permission}")


# --------------------------------------------------------------------------- reads


def _escape_like(term: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", term)


def _list_filter(search: str | None, role: str | None, status: str | None) -> ColumnElement[bool]:
    conditions = [models.User.deleted_at.is_(None)]
    if search:
        pattern = f"%{_escape_like(search.strip())}%"
        conditions.append(or_(*(column.ilike(pattern, escape="\\") for column in (
            models.User.username, models.User.email, models.User.first_name, models.User.last_name))))
    if role:
        conditions.append(models.User.role == role)
    if status:
        conditions.append(models.User.status == status)
    return and_(*conditions)


async def list_users(*, session: AsyncSession, params: PageParams, role: str | None, status: str | None,
                     sort: str) -> tuple[list[UserOut], int]:
    where = _list_filter(params.search, role, status)
    total = await session.scalar(select(func.count()).select_from(models.User).where(where)) or 0
    column = _SORT_COLUMNS[sort]
    ordering = column.asc().nulls_last() if params.order == "asc" else column.desc().nulls_last()
    query: Select = (select(models.User, _companies_column()).where(where)
                     .order_by(ordering, models.User.id).offset(params.offset).limit(params.limit))
    rows = (await session.execute(query)).all()
    return [to_out(user, ids) for user, ids in rows], int(total)


async def get_user(*, session: AsyncSession, caller: Principal, user_id: uuid.UUID) -> UserOut:
    _self_or(caller, user_id, "users:read")
    return await user_out(session, await load_user(session, user_id))


async def activity(*, session: AsyncSession, caller: Principal, user_id: uuid.UUID, page: int, limit: int,
                   source: str | None) -> tuple[list[ActivityEntry], int]:
    _self_or(caller, user_id, "users:read")
    await load_user(session, user_id)
    where = [models.Log.user_id == user_id]
    if source:
        where.append(models.Log.source == source)
    total = await session.scalar(select(func.count()).select_from(models.Log).where(*where)) or 0
    logs = await session.scalars(select(models.Log).where(*where)
                                 .order_by(models.Log.created_at.desc(), models.Log.id)
                                 .offset((page - 1) * limit).limit(limit))
    entries = [ActivityEntry(id=log.id, level=log.level, source=log.source, message=log.message,
                             action=(log.details or {}).get("action") if isinstance(log.details, dict) else None,
                             details=log.details if isinstance(log.details, dict) else None,
                             company_id=log.company_id, request_id=log.request_id, created_at=log.created_at)
               for log in logs]
    return entries, int(total)


# --------------------------------------------------------------------------- writes


async def update_user(*, session: AsyncSession, caller: Principal, user_id: uuid.UUID,
                      data: UserUpdate) -> UserOut:
    _self_or(caller, user_id, "users:update")
    user = await load_user(session, user_id, for_update=True)
    if user.role == rbac.Role.SUPER_ADMIN and caller.id != user.id and caller.role != rbac.Role.SUPER_ADMIN:
        raise forbidden("Only a super admin may change a super admin's account")
    data.refuse_changed(to_out(user, []))  # role, status, email, username sent back must be unchanged
    changes = data.model_dump(exclude_unset=True, by_alias=False)
    for name in ("first_name", "last_name", "avatar"):
        if name in changes:  # only avatar may be null (the schema refuses null names)
            setattr(user, name, changes[name])
    if data.profile is not None:
        patch = data.profile.model_dump(exclude_unset=True, by_alias=True)
        preferences = patch.pop("preferences", None)
        # Explicit nulls clear the optional text fields; required ones keep their default.
        profile = {**(user.profile or {})}
        for key, value in patch.items():
            if value is None:
                profile.pop(key, None)
            else:
                profile[key] = value
        user.profile = {k: v for k, v in profile.items() if k in _PROFILE_KEYS}
        if preferences:
            user.preferences = deep_merge(user.preferences or {}, _drop_nulls(preferences))
    user.updated_at = utcnow()
    await session.flush()
    if caller.id != user.id:
        await audit(session, action="user.update", message=f"Profile of {user.username} updated by an administrator",
                    user_id=user.id, actor_id=caller.id, fields=sorted(changes))
    return await user_out(session, user)


def _drop_nulls(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _drop_nulls(v) if isinstance(v, dict) else v for k, v in value.items() if v is not None}


def _not_self(caller: Principal, user_id: uuid.UUID, what: str) -> None:
    if caller.id == user_id:
        raise forbidden(f"You cannot change your own {what}")


async def delete_user(*, session: AsyncSession, caller: Principal, user_id: uuid.UUID) -> None:
    """Soft delete: the row stays (history, foreign keys), the account is gone."""
    if caller.id == user_id:
        raise forbidden("You cannot delete your own account")
    user = await load_user(session, user_id, for_update=True)
    user.deleted_at = utcnow()
    user.status = "inactive"
    await sessions.revoke_all_sessions(session, user)
    await audit(session, action="user.delete", level="warn", message=f"Account {user.username} deleted",
                user_id=user.id, actor_id=caller.id)


async def set_role(*, session: AsyncSession, caller: Principal, user_id: uuid.UUID, role: str) -> UserOut:
    _not_self(caller, user_id, "role")
    user = await load_user(session, user_id, for_update=True)
    previous = user.role
    if previous != role:
        user.role = role
        user.updated_at = utcnow()
        await session.flush()
        await audit(session, action="user.role_change", level="warn",
                    message=f"Role of {user.username} changed from {previous} to {role}",
                    user_id=user.id, actor_id=caller.id, previous=previous, role=role)
    return await user_out(session, user)


async def set_status(*, session: AsyncSession, caller: Principal, user_id: uuid.UUID, status: str,
                     reason: str | None) -> UserOut:
    _not_self(caller, user_id, "status")
    user = await load_user(session, user_id, for_update=True)
    previous = user.status
    if previous != status:
        user.status = status
        user.updated_at = utcnow()
        if status != "active":
            # A suspended or inactive account keeps no live session.
            await sessions.revoke_all_sessions(session, user)
        else:
            user.login_attempts, user.locked_until = 0, None
        await session.flush()
        await audit(session, action="user.status_change", level="warn",
                    message=f"Status of {user.username} changed from {previous} to {status}",
                    user_id=user.id, actor_id=caller.id, previous=previous, status=status, reason=reason)
    return await user_out(session, user)


# --------------------------------------------------------------------------- invitations


async def invite(*, session: AsyncSession, caller: Principal, user_id: uuid.UUID,
                 data: InviteRequest) -> InvitationOut:
    """Invite an existing account into a company (owner, or anyone with companies:manage)."""
    await ensure_feature("collaboration_enabled")
    company = await load_company(session, caller, data.company_id, "write", for_update=True)
    target = await load_user(session, user_id)
    if target.status != "active":
        raise invalid(f"The account is {target.status}", field="id")
    if target.id == company.owner_id or target.id in (company.team_members or []):
        raise AppError(ErrorCode.RESOURCE_ALREADY_EXISTS, "The user is already in this company")
    # A new invitation replaces any pending one for the same person and company.
    await session.execute(update(models.Invitation)
                          .where(models.Invitation.company_id == company.id,
                                 models.Invitation.invited_user_id == target.id,
                                 models.Invitation.status == "pending")
                          .values(status="revoked"))
    token = new_opaque_token()
    invitation = models.Invitation(company_id=company.id, email=target.email, invited_user_id=target.id,
                                   role=data.role, message=data.message, token_hash=token_hash(token),
                                   invited_by=caller.id, status="pending",
                                   expires_at=utcnow() + get_settings().invitation_expires_in)
    session.add(invitation)
    await session.flush()
    await audit(session, action="invitation.create", message=f"Invited to {company.name} as {data.role}",
                user_id=target.id, actor_id=caller.id, company_id=company.id, invitationId=str(invitation.id),
                role=data.role)
    await send_mail(to=target.email, subject=f"You are invited to join {company.name} on Troupe",
                    body=_invitation_body(company.name, caller.username, data.role, data.message, token,
                                          await mail_link_base()),
                    headers={"X-Troupe-Kind": "invitation"})
    return InvitationOut(id=invitation.id, company_id=company.id, user_id=target.id, email=target.email,
                         role=invitation.role, message=invitation.message, status=invitation.status,
                         invited_by=caller.id, expires_at=invitation.expires_at, created_at=invitation.created_at)


def _invitation_body(company: str, inviter: str, role: str, message: str | None, token: str,
                     link_base: str | None) -> str:
    settings = get_settings()
    lines = [f"{inviter} invited you to join the company \"{company}\" on Troupe as a {role}."]
    if message:
        lines += ["", f"Their message: {message}"]
    lines += ["", f"Invitation token: {token}", "",
              "Accept it while logged in: POST /api/users/invitations/accept {\"token\": \"<token>\"}"]
    if link_base:
        lines += ["", f"Or open {link_base}/invitations/accept?token={token}"]
    lines += ["", f"The invitation expires in {settings.invitation_expires_in}."]
    return "\n".join(lines)


async def accept_invitation(*, session: AsyncSession, user_id: uuid.UUID, email: str, token: str,
                            field: str = "token") -> Membership:
    """Join the company of the invitation addressed to this account (by id or email)."""
    await ensure_feature("collaboration_enabled")
    invitation = await session.scalar(select(models.Invitation)
                                      .where(models.Invitation.token_hash == token_hash(token))
                                      .with_for_update())
    addressed = invitation is not None and (
        invitation.invited_user_id == user_id or invitation.email.lower() == email.lower())
    if invitation is None or not addressed:
        raise AppError(ErrorCode.RESOURCE_NOT_FOUND, "Invitation not found", field=field)
    if invitation.status != "pending":
        raise AppError(ErrorCode.RESOURCE_EXPIRED, f"Invitation is {invitation.status}", field=field)
    if invitation.expires_at < utcnow():
        raise AppError(ErrorCode.RESOURCE_EXPIRED, "Invitation has expired", field=field)
    company = await session.get(models.Company, invitation.company_id, with_for_update=True)
    if company is None:
        raise AppError(ErrorCode.RESOURCE_NOT_FOUND, "Company not found", field=field)
    if user_id != company.owner_id:
        members = list(company.team_members or [])
        if user_id not in members:
            await ensure_team_size(len(members) + 1, field=field)
            company.team_members = [*members, user_id]
        company.member_roles = {**(company.member_roles or {}), str(user_id): invitation.role}
    invitation.status, invitation.accepted_at, invitation.invited_user_id = "accepted", utcnow(), user_id
    await session.flush()
    await audit(session, action="invitation.accept", message=f"Joined {company.name} as {invitation.role}",
                user_id=user_id, company_id=company.id, invitationId=str(invitation.id))
    return Membership(company_id=company.id, role=invitation.role)


# --------------------------------------------------------------------------- bootstrap


async def _free_username(session: AsyncSession, email: str) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", email.split("@")[0].lower())[:40].strip("_") or "admin"
    base = base if len(base) >= 3 else f"{base}_admin"
    candidate = base
    while await session.scalar(select(models.User.id).where(func.lower(models.User.username) == candidate)):
        candidate = f"{base}_{uuid.uuid4().hex[:6]}"
    return candidate


async def ensure_admin(*, email: str, password: str) -> str:
    """Idempotent: create the account as super_admin, or promote (and reactivate)
    an existing one. An existing account keeps its password."""
    from troupe.db.session import session_scope

    email = normalize_email(email)
    async with session_scope() as session:
        user = await session.scalar(select(models.User).where(func.lower(models.User.email) == email)
                                    .with_for_update())
        if user is None:
            await check_strength(password, email=email)
            user = models.User(email=email, username=await _free_username(session, email),
                               password_hash=await hash_password(password), first_name="Admin",
                               last_name="User", role=rbac.Role.SUPER_ADMIN.value, status="active",
                               email_verified=True, profile=await new_account_profile(), preferences={},
                               password_changed_at=utcnow())
            session.add(user)
            await session.flush()
            outcome = "created"
        elif user.role == rbac.Role.SUPER_ADMIN and user.status == "active" and user.deleted_at is None:
            return f"{email} is already a super admin"
        else:
            user.role, user.status, user.deleted_at = rbac.Role.SUPER_ADMIN.value, "active", None
            outcome = "promoted"
        await audit(session, action="admin.bootstrap", level="warn", message=f"Super admin {outcome}: {email}",
                    user_id=user.id)
    return f"{email} {outcome} as super admin"


async def promote_admin(*, email: str) -> str:
    """Make an existing account super_admin (CLI ``promote``)."""
    from troupe.db.session import session_scope

    email = normalize_email(email)
    async with session_scope() as session:
        user = await session.scalar(select(models.User).where(func.lower(models.User.email) == email,
                                                              models.User.deleted_at.is_(None)))
        if user is None:
            raise not_found("User")
        user.role, user.status = rbac.Role.SUPER_ADMIN.value, "active"
        await audit(session, action="user.role_change", level="warn", message=f"Promoted {email} to super admin",
                    user_id=user.id, role=rbac.Role.SUPER_ADMIN.value, via="cli")
    return f"{email} promoted to super admin"
