"""Create, list and mark notifications (delivery itself: troupe.events.notifications)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.errors import not_found
from troupe.events.notifications import deliver
from troupe.platform.deps import Principal
from troupe.platform.notifications.schemas import NotificationOut, NotifyResult
from troupe.platform.schemas import PageParams
from troupe.timeutil import utcnow


def _out(row: models.Notification) -> NotificationOut:
    return NotificationOut(id=str(row.id), type=row.type, title=row.title, message=row.message, data=row.data,
                           read=bool(row.read), read_at=row.read_at, category=row.category,
                           priority=row.priority, created_at=row.created_at)


async def notify(*, session: AsyncSession, user_id: uuid.UUID | str, type: str, title: str,  # noqa: A002
                 message: str, data: dict[str, Any] | None = None, category: str = "general",
                 priority: str = "medium") -> NotifyResult:
    """Store, announce live and send by the user's channels (``troupe.events.notifications``)."""
    delivered = await deliver(session, user_id=user_id, type_=type, title=title, message=message, data=data,
                              category=category, priority=priority)
    return NotifyResult(notification=_out(delivered.row), channels=delivered.channels)


async def list_for(*, session: AsyncSession, user: Principal, page: PageParams, unread_only: bool,
                   category: str | None) -> tuple[list[NotificationOut], int, int]:
    """The caller's notifications, newest first; returns (page, total matching, unread total)."""
    mine = models.Notification.user_id == user.id
    where = [mine]
    if unread_only:
        where.append(models.Notification.read.is_not(True))
    if category:
        where.append(models.Notification.category == category)
    total = await session.scalar(select(func.count()).select_from(models.Notification).where(*where))
    unread = await session.scalar(select(func.count()).select_from(models.Notification)
                                  .where(mine, models.Notification.read.is_not(True)))
    order = models.Notification.created_at.asc() if page.order == "asc" else models.Notification.created_at.desc()
    rows = (await session.scalars(select(models.Notification).where(*where)
                                  .order_by(order, models.Notification.id).offset(page.offset)
                                  .limit(page.limit))).all()
    return [_out(r) for r in rows], int(total or 0), int(unread or 0)


async def mark_read(*, session: AsyncSession, user: Principal, notification_id: uuid.UUID) -> NotificationOut:
    row = await session.get(models.Notification, notification_id)
    if row is None or row.user_id != user.id:
        raise not_found("Notification")
    if not row.read:
        row.read, row.read_at = True, utcnow()
        # Committed before answering: the request session's own commit runs after the response.
        await session.commit()
    return _out(row)


async def mark_all_read(*, session: AsyncSession, user: Principal) -> int:
    result = await session.execute(
        update(models.Notification)
        .where(models.Notification.user_id == user.id, models.Notification.read.is_not(True))
        .values(read=True, read_at=utcnow()))
    await session.commit()
    return int(result.rowcount or 0)
