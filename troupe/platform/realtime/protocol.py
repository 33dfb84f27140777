"""Wire protocol of ``/api/ws``: error codes, close codes and frame builders."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any


class WsError(StrEnum):
    AUTHENTICATION_FAILED = "WS_001"
    INVALID_MESSAGE_FORMAT = "WS_002"
    SUBSCRIPTION_FAILED = "WS_003"
    ROOM_ACCESS_DENIED = "WS_004"
    RATE_LIMIT_EXCEEDED = "WS_005"
    SERVER_ERROR = "WS_006"
    CONNECTION_LOST = "WS_007"
    INVALID_TOKEN = "WS_008"
    PERMISSION_DENIED = "WS_009"
    RESOURCE_NOT_FOUND = "WS_010"


class CloseCode(IntEnum):
    """Close codes of the application range (4000-4999), documented in the README."""

    IDLE_TIMEOUT = 4000            # no client message within WS_CONNECTION_TIMEOUT
    AUTHENTICATION_FAILED = 4001   # missing/malformed/tampered token, inactive account (WS_001)
    MESSAGE_TOO_BIG = 4002         # frame over WS max message size (WS_002)
    BAD_REQUEST = 4003             # malformed handshake parameter, e.g. lastEventId (WS_002)
    RATE_LIMITED = 4005            # kept flooding after WS_005 errors
    SERVER_ERROR = 4006            # unexpected server failure (WS_006)
    SLOW_CONSUMER = 4007           # send queue overflowed: client does not read fast enough (WS_007)
    TOKEN_INVALID = 4008           # token expired or revoked, at handshake or later (WS_008)
    TOO_MANY_CONNECTIONS = 4029    # per-user connection limit reached (WS_005)
    SHUTDOWN = 1001                # server going away (standard "going away")


class ProtocolError(Exception):
    """A client request that gets an error frame (the connection stays open when recoverable)."""

    def __init__(self, code: WsError, message: str, *, details: Any = None, recoverable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.recoverable = recoverable


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def frame(type_: str, payload: Any, *, request_id: str | None = None, user_id: str | None = None,
          company_id: str | None = None) -> str:
    """A server message in the spec's envelope; ``id`` is the request's id for responses."""
    body: dict[str, Any] = {"id": request_id, "type": type_, "payload": payload, "timestamp": now_iso()}
    if user_id is not None:
        body["userId"] = user_id
    if company_id is not None:
        body["companyId"] = company_id
    return json.dumps(body, default=str, separators=(",", ":"))


def error_frame(code: WsError, message: str, *, request_id: str | None = None, details: Any = None,
                recoverable: bool = True) -> str:
    return json.dumps({"id": request_id, "type": "error", "payload": None, "timestamp": now_iso(),
                       "error": {"code": code.value, "message": message, "details": details,
                                 "recoverable": recoverable}}, default=str, separators=(",", ":"))
