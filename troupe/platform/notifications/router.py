"""The caller's own notifications (not in the spec's route list; users of the
real-time feature need to read and clear them)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from troupe.platform.deps import CurrentUser, DbSession
from troupe.platform.notifications import service
from troupe.platform.notifications.schemas import NotificationList, NotificationOut, ReadAllResult
from troupe.platform.schemas import Envelope, PageLimit, PageParams, Pagination, ok

router = APIRouter(prefix="/api/notifications", tags=["notifications"])


@router.get("", response_model=Envelope[NotificationList])
async def list_notifications(
    session: DbSession, user: CurrentUser,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    limit: Annotated[PageLimit, Query()] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    unread: Annotated[bool, Query(description="Only unread notifications")] = False,
    category: Annotated[str | None, Query(max_length=50)] = None,
):
    params = PageParams(page=page, limit=limit, order=order)
    items, total, unread_total = await service.list_for(session=session, user=user, page=params,
                                                        unread_only=unread, category=category)
    return ok(NotificationList(items=items, unread=unread_total),
              pagination=Pagination.of(page=page, limit=limit, total=total))


@router.post("/read-all", response_model=Envelope[ReadAllResult])
async def mark_all_read(session: DbSession, user: CurrentUser):
    return ok(ReadAllResult(updated=await service.mark_all_read(session=session, user=user)))


@router.post("/{notification_id}/read", response_model=Envelope[NotificationOut])
async def mark_read(notification_id: uuid.UUID, session: DbSession, user: CurrentUser):
    return ok(await service.mark_read(session=session, user=user, notification_id=notification_id))
