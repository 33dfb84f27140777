"""Object scope: which companies (and what they hold) a caller may touch.

Policy: SUPER_ADMIN and ADMIN act on every tenant through their role. Everyone
else acts through ownership or membership: the owner may do everything on the
company and what belongs to it; a ``member`` may read and execute; a
``viewer`` may read. An object the caller may not read is reported as not
found (RES_001), so ids of other tenants do not leak.
"""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import ColumnElement, or_, true
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.errors import forbidden, not_found
from troupe.platform.deps import Principal

CompanyRole = Literal["admin", "owner", "member", "viewer"]
Need = Literal["read", "execute", "write"]

_ALLOWED: dict[str, frozenset[str]] = {
    "admin": frozenset({"read", "execute", "write"}),
    "owner": frozenset({"read", "execute", "write"}),
    "member": frozenset({"read", "execute"}),
    "viewer": frozenset({"read"}),
}


def role_in(company: models.Company, user: Principal) -> CompanyRole | None:
    if user.is_global:
        return "admin"
    if company.owner_id == user.id:
        return "owner"
    if user.id in (company.team_members or []):
        role = (company.member_roles or {}).get(str(user.id), "member")
        return "viewer" if role == "viewer" else "member"
    return None


def may(company: models.Company, user: Principal, need: Need) -> bool:
    role = role_in(company, user)
    return role is not None and need in _ALLOWED[role]


async def load_company(session: AsyncSession, user: Principal, company_id: uuid.UUID | str,
                       need: Need = "read", *, for_update: bool = False) -> models.Company:
    """The company if the caller may ``need`` it; RES_001 if they can't see it,
    AUTH_004 if they can see it but not do this."""
    try:
        cid = company_id if isinstance(company_id, uuid.UUID) else uuid.UUID(str(company_id))
    except ValueError as exc:
        raise not_found("Company") from exc
    company = await session.get(models.Company, cid, with_for_update=for_update)
    if company is None or role_in(company, user) is None:
        raise not_found("Company")
    if not may(company, user, need):
        raise forbidden(f"Your role in this company does not allow {need}")
    return company


def visible_companies(user: Principal) -> ColumnElement[bool]:
    """SQL filter for companies the caller may read."""
    if user.is_global:
        return true()
    return or_(models.Company.owner_id == user.id, models.Company.team_members.any(user.id))


def member_company_ids_subquery(user: Principal):
    """Ids of companies the caller may read, for filtering what they hold."""
    from sqlalchemy import select

    return select(models.Company.id).where(visible_companies(user)).scalar_subquery()
