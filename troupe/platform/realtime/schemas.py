"""Client messages of ``/api/ws`` (validated) and the server message payloads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

# Event types a client may subscribe to (the spec's server messages published to rooms).
SUBSCRIBABLE = frozenset({
    "task:progress", "company:status", "agent:activity", "notification", "system:alert",
    "user:notification", "chat:message", "room:update",
})
ROOM_PATTERN = r"^(company|task|agent|user):[0-9a-fA-F-]{36}$|^(global|admin)$"
_STREAM_ID = r"^\d{1,20}-\d{1,20}$"


class _In(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)


class ClientEnvelope(BaseModel):
    """Every client frame; ``payload`` is validated per ``type``."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(None, max_length=128)
    type: str = Field(..., min_length=1, max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)
    timestamp: str | None = None
    userId: str | None = None  # noqa: N815 - the spec's field name
    companyId: str | None = None  # noqa: N815


class Filters(_In):
    company_id: str | None = None
    agent_id: str | None = None
    task_id: str | None = None
    user_id: str | None = None


class Subscribe(_In):
    events: list[str] = Field(..., min_length=1, max_length=len(SUBSCRIBABLE))
    filters: Filters | None = None
    last_event_id: str | None = Field(None, pattern=_STREAM_ID)

    @field_validator("events")
    @classmethod
    def known_events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - SUBSCRIBABLE)
        if unknown:
            raise ValueError(f"unknown event types: {', '.join(unknown)}")
        return list(dict.fromkeys(value))


class Unsubscribe(_In):
    events: list[str] = Field(..., min_length=1, max_length=len(SUBSCRIBABLE))


class Ping(_In):
    timestamp: str | int | float | None = None


class JoinRoom(_In):
    room: str = Field(..., pattern=ROOM_PATTERN)
    last_event_id: str | None = Field(None, pattern=_STREAM_ID)


class LeaveRoom(_In):
    room: str = Field(..., pattern=ROOM_PATTERN)


class SendMessage(_In):
    room: str = Field(..., pattern=ROOM_PATTERN)
    message: str = Field(..., min_length=1, max_length=4000)
    metadata: dict[str, Any] | None = None
    reply_to: str | None = Field(None, max_length=64)


class Resume(_In):
    """Replay what this socket's rooms received after ``lastEventId``."""

    last_event_id: str = Field(..., pattern=_STREAM_ID)


CLIENT_MESSAGES: dict[str, type[_In]] = {
    "subscribe": Subscribe, "unsubscribe": Unsubscribe, "ping": Ping, "join_room": JoinRoom,
    "leave_room": LeaveRoom, "send_message": SendMessage, "resume": Resume,
}


# --- Server payloads (the spec's shapes; the engine may build its events with these).

class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class ChatMessageOut(_Out):
    id: str
    room: str
    user_id: str
    username: str
    avatar: str | None = None
    message: str
    timestamp: str
    edited: bool = False
    reply_to: str | None = None


class RoomMember(_Out):
    user_id: str
    username: str
    status: Literal["online", "away", "busy"] = "online"


class RoomUpdate(_Out):
    room: str
    action: Literal["joined", "left", "updated"]
    user_id: str | None = None
    member_count: int
    members: list[RoomMember] | None = None
