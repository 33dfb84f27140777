"""Dependencies shared by every router: the database session, the caller, and
the permission declared on each route."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi._compat import field_annotation_is_sequence
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from troupe import rbac
from troupe.db import models
from troupe.db.session import sessionmaker
from troupe.errors import AppError, ErrorCode, forbidden, invalid
from troupe.infra.redis import get_redis, rkey
from troupe.security import decode_access_token


async def get_db() -> AsyncIterator[AsyncSession]:
    """One session per request; committed when the handler returns normally.

    Used with ``scope="function"`` so the commit happens *before* the response is
    sent: a client never reads stale data after a write, and a failed commit is
    reported to it instead of being lost after a 200."""
    async with sessionmaker()() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


DbSession = Annotated[AsyncSession, Depends(get_db, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="Access token from /api/auth/login")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, with permissions from their *current* role."""

    id: uuid.UUID
    email: str
    username: str
    role: str
    permissions: frozenset[str]
    jti: str
    exp: int
    claims: dict = field(default_factory=dict, compare=False, hash=False)

    def can(self, permission: str) -> bool:
        return rbac.allows(self.role, self.permissions, permission)

    @property
    def is_global(self) -> bool:
        """Acts on every tenant's objects (SUPER_ADMIN, ADMIN)."""
        return rbac.is_global(self.role)


def revoked_jti_key(jti: str) -> str:
    return rkey("revoked", "jti", jti)


async def authenticate_token(token: str, session: AsyncSession) -> Principal:
    """Shared by HTTP and WebSocket: signature, expiry, revocation, account state."""
    claims = decode_access_token(token)
    if await get_redis().exists(revoked_jti_key(claims["jti"])):
        raise AppError(ErrorCode.INVALID_TOKEN, "Token has been revoked")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise AppError(ErrorCode.INVALID_TOKEN, "Invalid token") from exc
    user = await session.get(models.User, user_id)
    if user is None or user.deleted_at is not None:
        raise AppError(ErrorCode.INVALID_TOKEN, "Account no longer exists")
    if user.status != "active":
        raise AppError(ErrorCode.UNAUTHORIZED, f"Account is {user.status}")
    # Bumping token_version (logout everywhere, suspension, password change)
    # invalidates every access token issued before it.
    if int(claims.get("tv", 0)) != user.token_version:
        raise AppError(ErrorCode.INVALID_TOKEN, "Token has been revoked")
    return Principal(id=user.id, email=user.email, username=user.username, role=user.role,
                     permissions=rbac.role_permissions(user.role), jti=claims["jti"], exp=int(claims["exp"]),
                     claims=claims)


async def get_current_user(
    request: Request,
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AppError(ErrorCode.UNAUTHORIZED, "Authentication required",
                       headers={"WWW-Authenticate": "Bearer"})
    principal = await authenticate_token(credentials.credentials, session)
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(get_current_user)]


class RequirePermission:
    """Route dependency: ``Depends(RequirePermission("companies:update"))``.

    It checks the *kind* of action against the role; object scope (owner,
    member, viewer) is checked by the service against the object itself."""

    def __init__(self, *permissions: str) -> None:
        unknown = [p for p in permissions if p not in rbac.PERMISSIONS and not p.endswith(":manage")]
        if unknown:
            raise ValueError(f"unknown permissions {unknown}")
        self.permissions = permissions

    async def __call__(self, user: CurrentUser) -> Principal:
        missing = [p for p in self.permissions if not user.can(p)]
        if missing:
            raise forbidden(f"Missing permission: {', '.join(missing)}")
        return user


def Authorized(*permissions: str) -> type[Principal]:  # noqa: N802 - reads as a type in signatures
    """``user: Authorized("tasks:read")`` = the caller, having that permission."""
    return Annotated[Principal, Depends(RequirePermission(*permissions))]  # type: ignore[return-value]


# --------------------------------------------------------------------------- query strings


def _single_valued_query_names(route: APIRoute) -> frozenset[str]:
    """The route's query parameters that take one value (not lists), by their names in the URL."""
    cached = getattr(route, "_single_valued_query", None)
    if cached is not None:
        return cached
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        for param in dependant.query_params:
            annotation = param.field_info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # a model of parameters
                names.update(info.alias or name for name, info in annotation.model_fields.items()
                             if not field_annotation_is_sequence(info.annotation))
            elif not field_annotation_is_sequence(annotation):
                names.add(param.alias)
    route._single_valued_query = frozenset(names)  # type: ignore[attr-defined]
    return route._single_valued_query  # type: ignore[attr-defined]


async def single_valued_query(connection: HTTPConnection) -> None:
    """``?search=a&search=b`` for a one-value parameter is refused (VAL_001 naming it)
    rather than read as its last value: the document says the parameter is one string."""
    route = connection.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    keys = [key for key, _ in connection.query_params.multi_items()]
    repeated = {key for key in keys if keys.count(key) > 1}
    for name in sorted(repeated & _single_valued_query_names(route)):
        raise invalid(f"{name} takes a single value", field=name)


def _nul_path(value: Any, path: str = "") -> str | None:
    """Where a JSON value holds U+0000 (in a string or a key), as handlers name fields."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        inner = f"{path}.{key}" if path else str(key)
        if "\x00" in str(key):
            return inner
        found = _nul_path(item, inner)
        if found is not None:
            return found
    return None


async def no_nul_characters(connection: HTTPConnection) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000: a query value or JSON body carrying one is
    refused here (VAL_003 naming the field) instead of failing at the database with a 500."""
    for key, value in connection.query_params.multi_items():
        if "\x00" in key or "\x00" in value:
            raise invalid(f"{key} contains a NUL character", field=key, code=ErrorCode.INVALID_FORMAT)
    if not isinstance(connection, Request) or "json" not in connection.headers.get("content-type", ""):
        return  # uploads stream their own bodies (multipart); nothing else carries text
    body = await connection.body()  # already read (and kept) by FastAPI for the route's body model
    if b"\\u0000" not in body and b"\x00" not in body:
        return
    try:
        path = _nul_path(json.loads(body))
    except ValueError:
        return  # not JSON: the route's own parsing answers it
    if path is not None:
        raise invalid(f"{path or 'body'} contains a NUL character", field=path or "body",
                      code=ErrorCode.INVALID_FORMAT)
