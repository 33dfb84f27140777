"""User notifications: stored in ``notifications``, announced live as
``user:notification`` on ``user:<id>``, then sent by the channels the user
enabled (email through the mail sender, webhook through the outbound guard).

The one delivery path for the API (``troupe.platform.notifications``) and the
engine (a finished run notifies its creator)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from troupe import runtime_settings
from troupe.db import models
from troupe.errors import invalid, not_found
from troupe.events.bus import publish
from troupe.infra import mail, outbound
from troupe.timeutil import iso

log = logging.getLogger("troupe.notifications")

TYPES = frozenset({"mention", "assignment", "completion", "error", "invitation"})
PRIORITIES = frozenset({"low", "medium", "high", "urgent"})


@dataclass
class Delivered:
    row: models.Notification
    channels: dict[str, str]  # websocket / email / webhook -> sent | skipped | failed


def channel_preferences(user: models.User) -> dict[str, Any]:
    """The spec's NotificationSettings, stored in ``users.preferences.notifications``
    (or, following the spec's UserProfile shape, ``profile.preferences.notifications``)."""
    prefs = (user.preferences or {}).get("notifications")
    if not isinstance(prefs, dict):
        prefs = ((user.profile or {}).get("preferences") or {}).get("notifications")
    return prefs if isinstance(prefs, dict) else {}


def _wanted(prefs: dict[str, Any], type_: str, category: str) -> bool:
    """Per-kind switches of NotificationSettings that gate the external channels."""
    if type_ in ("completion", "error") and category == "task" and prefs.get("taskCompletion") is False:
        return False
    return not (category in ("system", "security") and prefs.get("systemAlerts") is False)


def payload(row: models.Notification) -> dict[str, Any]:
    """The spec's ``user:notification`` payload (also what a webhook receives)."""
    return {"id": str(row.id), "type": row.type, "title": row.title, "message": row.message, "data": row.data,
            "read": bool(row.read), "createdAt": iso(row.created_at), "category": row.category,
            "priority": row.priority}


async def deliver(session: AsyncSession, *, user_id: uuid.UUID | str, type_: str, title: str, message: str,
                  data: dict[str, Any] | None = None, category: str = "general",
                  priority: str = "medium") -> Delivered:
    """Store (committing ``session``: the row must be durable before it is announced),
    announce, then send by the enabled channels. A failing channel is logged and
    reported in ``channels``, never raised."""
    if type_ not in TYPES:
        raise invalid(f"type must be one of {sorted(TYPES)}", field="type")
    if priority not in PRIORITIES:
        raise invalid(f"priority must be one of {sorted(PRIORITIES)}", field="priority")
    uid = user_id if isinstance(user_id, uuid.UUID) else uuid.UUID(str(user_id))
    user = await session.get(models.User, uid)
    if user is None or user.deleted_at is not None:
        raise not_found("User")
    row = models.Notification(user_id=uid, type=type_, title=title[:255], message=message, data=data or {},
                              category=(category or "general")[:50], priority=priority, read=False)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    prefs = channel_preferences(user)
    email, username = user.email, user.username
    await session.commit()

    body = payload(row)
    await publish([f"user:{uid}"], "user:notification", body, user_id=str(uid))
    channels = {"websocket": "sent", "email": "skipped", "webhook": "skipped"}
    if not _wanted(prefs, type_, row.category):
        return Delivered(row, channels)
    # The system settings switch a channel off for everyone, whatever the user chose.
    system = (await runtime_settings.current()).notifications
    if system.email_enabled and prefs.get("email"):
        channels["email"] = await _send_email(email, username, body)
    webhook = prefs.get("webhook")
    if system.webhook_enabled and isinstance(webhook, str) and webhook:
        channels["webhook"] = await _send_webhook(webhook, body)
    return Delivered(row, channels)


async def _send_email(to: str, username: str, body: dict[str, Any]) -> str:
    try:
        await mail.send_mail(to=to, subject=f"[Troupe] {body['title']}",
                             body=f"Hello {username},\n\n{body['message']}\n\n(notification {body['id']})\n")
        return "sent"
    except Exception:
        log.exception("email notification %s failed", body["id"])
        return "failed"


async def _send_webhook(url: str, body: dict[str, Any]) -> str:
    try:
        response = await outbound.request("POST", url, json={"event": "user:notification", "notification": body},
                                          idempotency_key=f"notification-{body['id']}")
        return "sent" if 200 <= response.status < 300 else "failed"
    except Exception:  # refused by the outbound guard, unreachable, timed out
        log.exception("webhook notification %s failed", body["id"])
        return "failed"
