from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_serializer

from troupe.platform.schemas import CamelModel
from troupe.timeutil import iso

NotificationType = Literal["mention", "assignment", "completion", "error", "invitation"]
Priority = Literal["low", "medium", "high", "urgent"]


class NotificationOut(CamelModel):
    id: str
    type: str
    title: str
    message: str
    data: Any = None
    read: bool
    read_at: datetime | None = None
    category: str | None = None
    priority: str | None = None
    created_at: datetime | None = None

    @field_serializer("read_at", "created_at")
    def _iso(self, value: datetime | None) -> str | None:
        return iso(value)


class NotificationList(CamelModel):
    items: list[NotificationOut]
    unread: int = Field(description="Unread notifications of the caller in total")


class ReadAllResult(CamelModel):
    updated: int


class NotifyResult(CamelModel):
    """What ``notify`` did on each channel: sent, skipped (disabled), unavailable or failed."""

    notification: NotificationOut
    channels: dict[str, str]
