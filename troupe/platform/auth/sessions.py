"""Access tokens, refresh-token families and their revocation.

A refresh token is opaque and stored as its SHA-256. Every login starts a
*family*; every refresh rotates the token inside it (the old row gets
``revoked_at`` and ``replaced_by``) and keeps the family's absolute expiry.
Presenting a token that was already rotated or revoked means it leaked, so the
whole family is revoked."""

from __future__ import annotations

import ipaddress
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe import runtime_settings
from troupe.config import get_settings
from troupe.db import models
from troupe.infra.redis import get_redis
from troupe.platform.deps import revoked_jti_key
from troupe.security import access_claims, create_access_token, new_opaque_token, token_hash
from troupe.timeutil import utcnow

# Without "remember me" a session lasts at most a day (capped by REFRESH_TOKEN_EXPIRES_IN).
SHORT_SESSION = timedelta(days=1)


@dataclass(frozen=True)
class IssuedTokens:
    token: str
    refresh_token: str
    expires_in: int


async def user_company_ids(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    """Companies the user owns or belongs to (the JWT ``companies`` claim)."""
    rows = await session.scalars(
        select(models.Company.id)
        .where(or_(models.Company.owner_id == user_id, models.Company.team_members.any(user_id)))
        .order_by(models.Company.created_at))
    return [str(cid) for cid in rows]


async def access_token_for(session: AsyncSession, user: models.User) -> tuple[str, int]:
    claims = access_claims(user_id=str(user.id), email=user.email, username=user.username, role=user.role or "user",
                           companies=await user_company_ids(session, user.id), token_version=user.token_version)
    # security.sessionTimeout (minutes) can only shorten JWT_EXPIRES_IN.
    timeout = (await runtime_settings.current()).security.session_timeout
    return create_access_token(claims, max_lifetime=timeout * 60)


async def issue_tokens(session: AsyncSession, user: models.User, *, remember: bool = False,
                       device_info: str | None = None, ip_address: str | None = None) -> IssuedTokens:
    """A new session: an access token and the first refresh token of a new family."""
    lifetime = get_settings().refresh_token_expires_in
    if not remember:
        lifetime = min(lifetime, SHORT_SESSION)
    refresh = new_opaque_token()
    session.add(models.RefreshToken(user_id=user.id, token=token_hash(refresh), expires_at=utcnow() + lifetime,
                                    device_info=device_info, ip_address=_inet(ip_address),
                                    family_id=uuid.uuid4()))
    await session.flush()
    token, expires_in = await access_token_for(session, user)
    return IssuedTokens(token, refresh, expires_in)


async def rotate(session: AsyncSession, old: models.RefreshToken, user: models.User) -> IssuedTokens:
    refresh = new_opaque_token()
    now = utcnow()
    new = models.RefreshToken(user_id=user.id, token=token_hash(refresh), expires_at=old.expires_at,
                              device_info=old.device_info, ip_address=old.ip_address, family_id=old.family_id)
    session.add(new)
    await session.flush()
    old.revoked_at, old.replaced_by, old.last_used_at = now, new.id, now
    await session.flush()
    token, expires_in = await access_token_for(session, user)
    return IssuedTokens(token, refresh, expires_in)


async def revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(update(models.RefreshToken)
                          .where(models.RefreshToken.family_id == family_id, models.RefreshToken.revoked_at.is_(None))
                          .values(revoked_at=utcnow()))


async def revoke_all_sessions(session: AsyncSession, user: models.User) -> None:
    """Every refresh token of the user, and (through token_version) every access token."""
    await session.execute(update(models.RefreshToken)
                          .where(models.RefreshToken.user_id == user.id, models.RefreshToken.revoked_at.is_(None))
                          .values(revoked_at=utcnow()))
    user.token_version = (user.token_version or 0) + 1
    await session.flush()


async def revoke_access_token(jti: str, exp: int) -> None:
    """Refuse this access token at once (kept in Redis until it would expire anyway)."""
    ttl = max(1, int(exp - time.time()))
    await get_redis().set(revoked_jti_key(jti), "1", ex=ttl)


def _inet(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None
