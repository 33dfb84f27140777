"""Create, list and mark notifications; deliver them live and by email/webhook."""

from __future__ import annotations

import importlib
import logging
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe import runtime_settings
from troupe.db import models
from troupe.errors import invalid, not_found
from troupe.events.bus import publish
from troupe.platform.deps import Principal
from troupe.platform.notifications.schemas import NotificationOut, NotifyResult
from troupe.platform.schemas import PageParams
from troupe.timeutil import iso, utcnow

log = logging.getLogger("troupe.notifications")

TYPES = frozenset({"mention", "assignment", "completion", "error", "invitation"})
PRIORITIES = frozenset({"low", "medium", "high", "urgent"})


def _out(row: models.Notification) -> NotificationOut:
    return NotificationOut(id=str(row.id), type=row.type, title=row.title, message=row.message, data=row.data,
                           read=bool(row.read), read_at=row.read_at, category=row.category,
                           priority=row.priority, created_at=row.created_at)


def channel_preferences(user: models.User) -> dict[str, Any]:
    """The spec's NotificationSettings, stored in ``users.preferences.notifications``
    (or, following the spec's UserProfile shape, ``profile.preferences.notifications``)."""
    prefs = (user.preferences or {}).get("notifications")
    if not isinstance(prefs, dict):
        prefs = ((user.profile or {}).get("preferences") or {}).get("notifications")
    return prefs if isinstance(prefs, dict) else {}


def _wanted(prefs: dict[str, Any], type_: str, category: str) -> bool:
    """Per-kind switches of NotificationSettings that gate the external channels."""
    if type_ == "completion" and prefs.get("taskCompletion") is False:
        return False
    return not (category in ("system", "security") and prefs.get("systemAlerts") is False)


async def notify(*, session: AsyncSession, user_id: uuid.UUID | str, type: str, title: str,  # noqa: A002
                 message: str, data: dict[str, Any] | None = None, category: str = "general",
                 priority: str = "medium") -> NotifyResult:
    """Store a notification (committing ``session``: it must be durable before it is
    announced), publish ``user:notification`` to ``user:<id>``, then send it through
    the channels the user enabled. A failing channel is logged and reported, never raised."""
    if type not in TYPES:
        raise invalid(f"type must be one of {sorted(TYPES)}", field="type")
    if priority not in PRIORITIES:
        raise invalid(f"priority must be one of {sorted(PRIORITIES)}", field="priority")
    uid = user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id))
    user = await session.get(models.User, uid)
    if user is None or user.deleted_at is not None:
        raise not_found("User")
    row = models.Notification(user_id=uid, type=type, title=title[:255], message=message, data=data or {},
                              category=(category or "general")[:50], priority=priority)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    out = _out(row)
    prefs = channel_preferences(user)
    email, username = user.email, user.username
    await session.commit()

    await publish([f"user:{uid}"], "user:notification", {
        "id": out.id, "type": out.type, "title": out.title, "message": out.message, "data": out.data,
        "read": False, "createdAt": iso(row.created_at), "category": out.category, "priority": out.priority,
    }, user_id=str(uid))

    channels: dict[str, str] = {"websocket": "sent"}
    wanted = _wanted(prefs, type, category)
    # The system settings switch a channel off for everyone, whatever the user chose.
    system = (await runtime_settings.current()).notifications
    channels["email"] = (await _send_email(email, username, out)
                         if system.email_enabled and prefs.get("email") and wanted else "skipped")
    webhook = prefs.get("webhook")
    channels["webhook"] = (await _send_webhook(webhook, out)
                           if system.webhook_enabled and isinstance(webhook, str) and webhook and wanted
                           else "skipped")
    return NotifyResult(notification=out, channels=channels)


def _optional(module: str):
    """Channels built by other parts of Troupe; absent modules are reported, not fatal."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


async def _send_email(to: str, username: str, note: NotificationOut) -> str:
    mail = _optional("troupe.infra.mail")
    if mail is None or not hasattr(mail, "send_mail"):
        return "unavailable"
    try:
        await mail.send_mail(to=to, subject=f"[Troupe] {note.title}",
                             body=f"Hello {username},\n\n{note.message}\n\n(notification {note.id})\n")
        return "sent"
    except Exception:
        log.exception("email notification %s failed", note.id)
        return "failed"


async def _send_webhook(url: str, note: NotificationOut) -> str:
    outbound = _optional("troupe.infra.outbound")
    if outbound is None or not hasattr(outbound, "request"):
        return "unavailable"
    try:
        response = await outbound.request("POST", url, json={
            "event": "user:notification", "notification": note.model_dump(mode="json", by_alias=True)},
            idempotency_key=f"notification-{note.id}")
        return "sent" if 200 <= response.status_code < 300 else "failed"
    except Exception:
        log.exception("webhook notification %s failed", note.id)
        return "failed"


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
