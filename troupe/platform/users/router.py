from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from troupe.platform.deps import Authorized, CurrentUser, DbSession
from troupe.platform.schemas import Envelope, Message, PageLimit, PageParams, Pagination, ok
from troupe.platform.users import service
from troupe.platform.users.schemas import (
    AcceptInvitation,
    ActivityEntry,
    InvitationOut,
    InviteRequest,
    Membership,
    RoleUpdate,
    StatusUpdate,
    UserOut,
    UserSort,
    UserUpdate,
)

# DbSession commits only after the response has been sent (FastAPI's request-scoped
# yield dependencies), so writes commit here: a client acting on the answer (logout,
# then refresh) must find them, and a failed commit must not answer success.
router = APIRouter(prefix="/api/users", tags=["users"])


@router.get("", response_model=Envelope[list[UserOut]])
async def list_users(
    user: Authorized("users:read"),
    session: DbSession,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    limit: Annotated[PageLimit, Query()] = 20,
    search: Annotated[str | None, Query(max_length=200, description="Username, email or name contains")] = None,
    role: Literal["super_admin", "admin", "user", "viewer"] | None = None,
    status: Literal["active", "inactive", "suspended"] | None = None,
    sort: UserSort = "createdAt",
    order: Literal["asc", "desc"] = "desc",
) -> Envelope[list[UserOut]]:
    params = PageParams(page=page, limit=limit, search=search, sort=sort, order=order)
    items, total = await service.list_users(session=session, params=params, role=role, status=status, sort=sort)
    return ok(items, pagination=Pagination.of(page=page, limit=limit, total=total))


@router.get("/me", response_model=Envelope[UserOut])
async def me(user: CurrentUser, session: DbSession) -> Envelope[UserOut]:
    return ok(await service.get_user(session=session, caller=user, user_id=user.id))


@router.post("/invitations/accept", response_model=Envelope[Membership],
             summary="Accept a company invitation addressed to the caller")
async def accept_invitation(body: AcceptInvitation, user: CurrentUser, session: DbSession) -> Envelope[Membership]:
    result = await service.accept_invitation(session=session, user_id=user.id, email=user.email,
                                             token=body.token)
    await session.commit()
    return ok(result)


@router.get("/{user_id}", response_model=Envelope[UserOut], summary="A user (users:read, or yourself)")
async def get_user(user_id: uuid.UUID, user: CurrentUser, session: DbSession) -> Envelope[UserOut]:
    return ok(await service.get_user(session=session, caller=user, user_id=user_id))


@router.put("/{user_id}", response_model=Envelope[UserOut], summary="Update a profile (users:update, or yourself)")
async def update_user(user_id: uuid.UUID, body: UserUpdate, user: CurrentUser,
                      session: DbSession) -> Envelope[UserOut]:
    result = await service.update_user(session=session, caller=user, user_id=user_id, data=body)
    await session.commit()
    return ok(result)


@router.delete("/{user_id}", response_model=Envelope[Message], summary="Soft-delete an account and end its sessions")
async def delete_user(user_id: uuid.UUID, user: Authorized("users:delete"), session: DbSession) -> Envelope[Message]:
    await service.delete_user(session=session, caller=user, user_id=user_id)
    await session.commit()
    return ok(Message(message="User deleted"))


@router.put("/{user_id}/role", response_model=Envelope[UserOut])
async def set_role(user_id: uuid.UUID, body: RoleUpdate, user: Authorized("users:manage"),
                   session: DbSession) -> Envelope[UserOut]:
    result = await service.set_role(session=session, caller=user, user_id=user_id, role=body.role)
    await session.commit()
    return ok(result)


@router.put("/{user_id}/status", response_model=Envelope[UserOut])
async def set_status(user_id: uuid.UUID, body: StatusUpdate, user: Authorized("users:manage"),
                     session: DbSession) -> Envelope[UserOut]:
    result = await service.set_status(session=session, caller=user, user_id=user_id, status=body.status,
                                      reason=body.reason)
    await session.commit()
    return ok(result)


@router.get("/{user_id}/activity", response_model=Envelope[list[ActivityEntry]],
            summary="Audit trail of an account (users:read, or yourself)")
async def activity(
    user_id: uuid.UUID,
    user: CurrentUser,
    session: DbSession,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    limit: Annotated[PageLimit, Query()] = 20,
    source: Annotated[str | None, Query(max_length=100, description="Only logs of this source, e.g. audit")] = None,
) -> Envelope[list[ActivityEntry]]:
    items, total = await service.activity(session=session, caller=user, user_id=user_id, page=page, limit=limit,
                                          source=source)
    return ok(items, pagination=Pagination.of(page=page, limit=limit, total=total))


@router.post("/{user_id}/invite", response_model=Envelope[InvitationOut], status_code=201,
             summary="Invite a user into a company (its owner, or companies:manage)")
async def invite(user_id: uuid.UUID, body: InviteRequest, user: CurrentUser,
                 session: DbSession) -> Envelope[InvitationOut]:
    result = await service.invite(session=session, caller=user, user_id=user_id, data=body)
    await session.commit()
    return ok(result)
