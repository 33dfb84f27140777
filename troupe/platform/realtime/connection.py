"""One WebSocket connection: handshake, the client messages, delivery with a
bounded send queue, heartbeat, token expiry and limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from troupe import runtime_settings
from troupe.config import get_settings
from troupe.db import models
from troupe.db.session import sessionmaker
from troupe.errors import AppError, ErrorCode
from troupe.events.bus import read_since, stream_id_key
from troupe.infra.redis import get_redis
from troupe.platform.deps import Principal, authenticate_token, revoked_jti_key
from troupe.platform.realtime import service
from troupe.platform.realtime.hub import Hub, get_hub
from troupe.platform.realtime.protocol import CloseCode, ProtocolError, WsError, error_frame, frame, now_iso
from troupe.platform.realtime.schemas import (
    CLIENT_MESSAGES,
    ClientEnvelope,
    Filters,
    JoinRoom,
    LeaveRoom,
    Ping,
    Resume,
    SendMessage,
    Subscribe,
    Unsubscribe,
)
from troupe.security import decode_access_token

log = logging.getLogger("troupe.realtime")

_FILTER_FIELDS = (("task_id", "taskId"), ("agent_id", "agentId"), ("company_id", "companyId"),
                  ("user_id", "userId"))
# Ids of recently delivered events kept per socket, so an event that reaches it
# twice (live and replayed, or through two rooms) is sent once.
_RECENT_IDS = 4096
_MAX_ROOMS = 500
_MAX_SUBSCRIPTIONS = 50


@dataclass
class Subscription:
    events: set[str]
    rooms: list[str]
    filters: Filters | None

    def matches(self, event: dict[str, Any], rooms: list[str]) -> bool:
        if event.get("type") not in self.events or not any(r in self.rooms for r in rooms):
            return False
        if self.filters is None:
            return True
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        for attr, key in _FILTER_FIELDS:
            wanted = getattr(self.filters, attr)
            if wanted is None:
                continue
            carried = payload.get(key) or event.get(key)
            if carried is not None and str(carried).lower() != wanted.lower():
                return False
        return True


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Connection:
    def __init__(self, ws: WebSocket, user: Principal, hub: Hub, *, avatar: str | None) -> None:
        settings = get_settings()
        self.ws = ws
        self.user = user
        self.hub = hub
        self.avatar = avatar
        self.id = str(uuid.uuid4())
        self.base: list[str] = service.base_rooms(user)
        self.joined: set[str] = set(self.base)      # rooms whose every event is delivered
        self.presence: set[str] = set()              # explicitly joined: counted and announced
        self.subscriptions: list[Subscription] = []
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=settings.ws_send_queue_size)
        self.replaying = False
        self._replay_buffer: list[tuple[str, str]] = []
        self._recent: deque[str] = deque(maxlen=_RECENT_IDS)
        self._recent_set: set[str] = set()
        self._stamps: deque[float] = deque()
        self._flood = 0
        self.last_activity = time.monotonic()
        self.heartbeat = settings.ws_heartbeat_interval.total_seconds()
        self.idle_timeout = settings.ws_connection_timeout.total_seconds()
        self.max_bytes = settings.ws_max_message_bytes
        self.rate = settings.ws_messages_per_second
        self.stale_after = max(self.heartbeat * 3, 5.0)
        self.closed = False
        self._done = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # --- rooms

    def all_rooms(self) -> set[str]:
        rooms = set(self.joined)
        for sub in self.subscriptions:
            rooms.update(sub.rooms)
        return rooms

    def _reindex(self, before: set[str]) -> None:
        after = self.all_rooms()
        for room in after - before:
            self.hub.index(self, room)
        for room in before - after:
            self.hub.unindex(self, room)

    # --- delivery

    def accepts(self, event: dict[str, Any], rooms: list[str]) -> bool:
        if any(r in self.joined for r in rooms):
            return True
        return any(sub.matches(event, rooms) for sub in self.subscriptions)

    def offer(self, event: dict[str, Any], rooms: list[str], stream_id: str, text: str) -> None:
        """Called by the hub for every event in one of this socket's rooms."""
        if self.closed or not self.accepts(event, rooms):
            return
        if self.replaying:
            self._replay_buffer.append((stream_id, text))
            return
        self._deliver(stream_id, text)

    def _deliver(self, stream_id: str, text: str) -> bool:
        if stream_id in self._recent_set:
            return False
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(stream_id)
        self._recent_set.add(stream_id)
        self.send(text)
        return True

    def send(self, text: str) -> None:
        """Queue a frame; a socket whose queue is full is a slow consumer and is dropped
        rather than letting memory grow."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("closing slow consumer %s (user %s)", self.id, self.user.id)
            self._spawn(self.close(CloseCode.SLOW_CONSUMER, "send queue overflow: slow consumer"))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.append(task)

    async def _writer(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None:
                return
            try:
                await self.ws.send_text(text)
            except Exception:  # the client is gone; the reader sees the disconnect
                return

    async def replay(self, rooms: list[str], after: str) -> dict[str, Any]:
        """Send what ``rooms`` received after ``after``, then resume live delivery
        (live events that arrive meanwhile are buffered and de-duplicated)."""
        settings = get_settings()
        self.replaying = True
        try:
            entries = await read_since(rooms, after, limit=max(1, settings.ws_send_queue_size - 10))
        except Exception:
            self.replaying = False
            self._flush_buffer()
            raise
        count = 0
        last = after
        for stream_id, data, found in entries:
            event = json.loads(data)
            if self.accepts(event, found) and self._deliver(stream_id, data):
                count += 1
            last = stream_id
        self.replaying = False
        self._flush_buffer()
        retention_ms = settings.ws_replay_retention.total_seconds() * 1000
        truncated = stream_id_key(after)[0] < time.time() * 1000 - retention_ms
        return {"replayed": count, "fromEventId": after, "toEventId": last, "truncated": truncated,
                "retentionSeconds": int(settings.ws_replay_retention.total_seconds())}

    def _flush_buffer(self) -> None:
        buffered, self._replay_buffer = self._replay_buffer, []
        for stream_id, text in buffered:
            self._deliver(stream_id, text)

    # --- lifecycle

    async def close(self, code: int, reason: str, *, error: tuple[WsError, str] | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._done.set()
        with contextlib.suppress(Exception):
            if error is not None:
                await self.ws.send_text(error_frame(error[0], error[1], recoverable=False))
            await self.ws.close(code=code, reason=reason[:120])

    async def server_shutdown(self) -> None:
        await goodbye(self.ws)
        await self.close(CloseCode.SHUTDOWN, "server shutting down")

    async def _watchdog(self) -> None:
        """Heartbeat, idle timeout, token expiry and revocation, presence refresh."""
        next_beat = time.monotonic() + self.heartbeat
        while not self.closed:
            now = time.monotonic()
            until_exp = self.user.exp - time.time()
            until_idle = self.last_activity + self.idle_timeout - now
            await asyncio.sleep(max(0.05, min(next_beat - now, until_exp, until_idle)))
            if self.closed:
                return
            if time.time() >= self.user.exp:
                raise _Close(CloseCode.TOKEN_INVALID, "token expired")
            if time.monotonic() - self.last_activity >= self.idle_timeout:
                raise _Close(CloseCode.IDLE_TIMEOUT, "idle timeout")
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.heartbeat
                await self._recheck_token()
                await service.refresh_presence(user_id=self.user.id, conn_id=self.id, rooms=list(self.presence),
                                               username=self.user.username, stale_after=self.stale_after)
                self.send(frame("connection:status", {"status": "connected", "reason": "heartbeat",
                                                      "serverTime": now_iso()}))

    async def _recheck_token(self) -> None:
        """Full check (revoked jti, token version, account state) as at the handshake."""
        try:
            async with sessionmaker()() as session:
                await authenticate_token(self.ws.query_params.get("token", ""), session)
        except AppError as exc:
            raise _Close(*_close_for(exc)) from exc

    async def _quick_token_check(self) -> None:
        if time.time() >= self.user.exp:
            raise _Close(CloseCode.TOKEN_INVALID, "token expired")
        if await get_redis().exists(revoked_jti_key(self.user.jti)):
            raise _Close(CloseCode.TOKEN_INVALID, "token revoked")

    def _rate_ok(self) -> bool:
        now = time.monotonic()
        while self._stamps and self._stamps[0] <= now - 1.0:
            self._stamps.popleft()
        if len(self._stamps) >= self.rate:
            self._flood += 1
            return False
        self._flood = 0
        self._stamps.append(now)
        return True

    async def _reader(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            raw = text.encode() if text is not None else (message.get("bytes") or b"")
            self.last_activity = time.monotonic()
            if len(raw) > self.max_bytes:
                raise _Close(CloseCode.MESSAGE_TOO_BIG, f"message exceeds {self.max_bytes} bytes")
            await self._quick_token_check()
            if not self._rate_ok():
                if self._flood > self.rate * 3:
                    raise _Close(CloseCode.RATE_LIMITED, "message rate limit exceeded")
                self.send(error_frame(WsError.RATE_LIMIT_EXCEEDED,
                                      f"More than {self.rate} messages per second; message dropped",
                                      request_id=_peek_id(raw), details={"limitPerSecond": self.rate}))
                continue
            await self._handle(raw)

    async def _handle(self, raw: bytes) -> None:
        request_id = None
        try:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise ProtocolError(WsError.INVALID_MESSAGE_FORMAT, "Message is not valid JSON") from exc
            if not isinstance(body, dict):
                raise ProtocolError(WsError.INVALID_MESSAGE_FORMAT, "Message must be a JSON object")
            request_id = body.get("id") if isinstance(body.get("id"), str) else None
            try:
                envelope = ClientEnvelope.model_validate(body)
            except ValidationError as exc:
                raise ProtocolError(WsError.INVALID_MESSAGE_FORMAT, "Invalid message envelope",
                                    details=_errors(exc)) from exc
            model = CLIENT_MESSAGES.get(envelope.type)
            if model is None:
                raise ProtocolError(WsError.INVALID_MESSAGE_FORMAT, f"Unknown message type: {envelope.type}",
                                    details={"allowed": sorted(CLIENT_MESSAGES)})
            try:
                payload = model.model_validate(envelope.payload)
            except ValidationError as exc:
                code = WsError.SUBSCRIPTION_FAILED if envelope.type == "subscribe" else WsError.INVALID_MESSAGE_FORMAT
                raise ProtocolError(code, f"Invalid {envelope.type} payload", details=_errors(exc)) from exc
            handler = getattr(self, f"_on_{envelope.type}")
            result = await handler(payload)
            if result is not None:
                type_, data = result
                self.send(frame(type_, data, request_id=request_id))
        except ProtocolError as exc:
            self.send(error_frame(exc.code, exc.message, request_id=request_id, details=exc.details,
                                  recoverable=exc.recoverable))
        except _Close:
            raise
        except Exception:
            # One failed request (e.g. the database briefly down) must not drop the socket.
            log.exception("websocket %s: request failed", self.id)
            self.send(error_frame(WsError.SERVER_ERROR, "Server error; try again", request_id=request_id))

    # --- client messages

    async def _on_ping(self, payload: Ping) -> tuple[str, dict]:
        return "pong", {"timestamp": payload.timestamp, "serverTime": now_iso()}

    async def _on_subscribe(self, payload: Subscribe) -> tuple[str, dict]:
        if len(self.subscriptions) >= _MAX_SUBSCRIPTIONS:
            raise ProtocolError(WsError.SUBSCRIPTION_FAILED, f"At most {_MAX_SUBSCRIPTIONS} subscriptions")
        async with sessionmaker()() as session:
            rooms = await service.subscription_rooms(session=session, user=self.user, filters=payload.filters)
        before = self.all_rooms()
        sub = Subscription(events=set(payload.events), rooms=rooms, filters=payload.filters)
        self.subscriptions.append(sub)
        self._reindex(before)
        data: dict[str, Any] = {"events": sorted(sub.events), "rooms": rooms,
                                "filters": payload.filters.model_dump(by_alias=True, exclude_none=True)
                                if payload.filters else None}
        if payload.last_event_id:
            data["replay"] = await self.replay(rooms, payload.last_event_id)
        return "subscribe", data

    async def _on_unsubscribe(self, payload: Unsubscribe) -> tuple[str, dict]:
        before = self.all_rooms()
        removed = set(payload.events)
        for sub in self.subscriptions:
            sub.events -= removed
        self.subscriptions = [s for s in self.subscriptions if s.events]
        self._reindex(before)
        remaining = sorted({e for s in self.subscriptions for e in s.events})
        return "unsubscribe", {"events": sorted(removed), "remaining": remaining}

    async def _on_join_room(self, payload: JoinRoom) -> tuple[str, dict]:
        room = payload.room.lower() if ":" in payload.room else payload.room
        if room not in self.joined:
            if len(self.joined) >= _MAX_ROOMS:
                raise ProtocolError(WsError.ROOM_ACCESS_DENIED, f"At most {_MAX_ROOMS} rooms per connection")
            async with sessionmaker()() as session:
                allowed = await service.may_join(session=session, user=self.user, room=room)
            if not allowed:
                raise ProtocolError(WsError.ROOM_ACCESS_DENIED, "You may not join this room",
                                    details={"room": room})
            before = self.all_rooms()
            self.joined.add(room)
            self._reindex(before)
        update = None
        if room not in self.base and room not in self.presence:
            self.presence.add(room)
            update = await service.enter_room(user=self.user, conn_id=self.id, room=room,
                                              stale_after=self.stale_after)
        data: dict[str, Any] = {"room": room, "joined": True,
                                "memberCount": update.member_count if update else None}
        if payload.last_event_id:
            data["replay"] = await self.replay([room], payload.last_event_id)
        return "join_room", data

    async def _on_leave_room(self, payload: LeaveRoom) -> tuple[str, dict]:
        room = payload.room.lower() if ":" in payload.room else payload.room
        if room not in self.joined or room in self.base:
            raise ProtocolError(WsError.ROOM_ACCESS_DENIED, "Not in this room (or it cannot be left)",
                                details={"room": room})
        before = self.all_rooms()
        self.joined.discard(room)
        self._reindex(before)
        if room in self.presence:
            self.presence.discard(room)
            await service.exit_room(user=self.user, conn_id=self.id, room=room, stale_after=self.stale_after)
        return "leave_room", {"room": room, "joined": False}

    async def _on_send_message(self, payload: SendMessage) -> tuple[str, dict]:
        room = payload.room.lower() if ":" in payload.room else payload.room
        if room not in self.joined:
            raise ProtocolError(WsError.ROOM_ACCESS_DENIED, "Join the room before sending to it",
                                details={"room": room})
        if room == "global" and not self.user.is_global:
            raise ProtocolError(WsError.PERMISSION_DENIED, "Only administrators may post to the global room")
        if not (await runtime_settings.current()).features.collaboration_enabled:
            raise ProtocolError(ErrorCode.FEATURE_DISABLED, "Collaboration (chat) is disabled on this server",  # type: ignore[arg-type]
                                details={"feature": "collaboration"})
        async with sessionmaker()() as session:
            out = await service.post_chat(session=session, user=self.user, avatar=self.avatar, room=room,
                                          message=payload.message, metadata=payload.metadata,
                                          reply_to=payload.reply_to)
        return "send_message", {"id": out.id, "room": room, "timestamp": out.timestamp}

    async def _on_resume(self, payload: Resume) -> tuple[str, dict]:
        return "resume", await self.replay(sorted(self.all_rooms()), payload.last_event_id)

    # --- main loop

    async def run(self, last_event_id: str | None) -> None:
        settings = get_settings()
        self.hub.add(self)
        self._reindex(set())
        self.send(frame("connection:status", {
            "status": "connected", "connectionId": self.id, "userId": str(self.user.id), "rooms": self.base,
            "heartbeatInterval": int(self.heartbeat * 1000), "connectionTimeout": int(self.idle_timeout * 1000),
            "maxMessageBytes": self.max_bytes, "messagesPerSecond": settings.ws_messages_per_second}))
        writer = asyncio.create_task(self._writer())
        try:
            if last_event_id:
                replay = await self.replay(list(self.base), last_event_id)
                self.send(frame("resume", replay))
            watchdog = asyncio.create_task(self._watchdog())
            reader = asyncio.create_task(self._reader())
            closed = asyncio.create_task(self._done.wait())
            self._tasks += [watchdog, reader, closed]
            done, _ = await asyncio.wait([watchdog, reader, writer, closed], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if isinstance(exc, _Close):
                    await self.close(exc.code, exc.reason, error=(_error_for(exc.code), exc.reason))
                elif isinstance(exc, WebSocketDisconnect | None):
                    pass
                elif exc is not None and not self.closed:
                    log.error("websocket %s failed", self.id, exc_info=exc)
                    await self.close(CloseCode.SERVER_ERROR, "server error",
                                     error=(WsError.SERVER_ERROR, "Server error"))
            if not self.closed and reader in done:
                self.closed = True  # the client left
        finally:
            self.closed = True
            for task in [*self._tasks, writer]:
                task.cancel()
            await asyncio.gather(*self._tasks, writer, return_exceptions=True)
            self.hub.remove(self)
            await self._cleanup()

    async def _cleanup(self) -> None:
        with contextlib.suppress(Exception):
            await service.release_connection(user_id=self.user.id, conn_id=self.id)
            for room in list(self.presence):
                await service.exit_room(user=self.user, conn_id=self.id, room=room, stale_after=self.stale_after)


def _peek_id(raw: bytes) -> str | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body.get("id") if isinstance(body, dict) and isinstance(body.get("id"), str) else None


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()]


def _close_for(exc: AppError) -> tuple[int, str]:
    if exc.code in (ErrorCode.TOKEN_EXPIRED, ErrorCode.INVALID_TOKEN):
        return CloseCode.TOKEN_INVALID, exc.message
    return CloseCode.AUTHENTICATION_FAILED, exc.message


def _error_for(code: int) -> WsError:
    return {
        CloseCode.IDLE_TIMEOUT: WsError.CONNECTION_LOST,
        CloseCode.AUTHENTICATION_FAILED: WsError.AUTHENTICATION_FAILED,
        CloseCode.MESSAGE_TOO_BIG: WsError.INVALID_MESSAGE_FORMAT,
        CloseCode.RATE_LIMITED: WsError.RATE_LIMIT_EXCEEDED,
        CloseCode.TOKEN_INVALID: WsError.INVALID_TOKEN,
        CloseCode.TOO_MANY_CONNECTIONS: WsError.RATE_LIMIT_EXCEEDED,
    }.get(code, WsError.SERVER_ERROR)


async def serve(ws: WebSocket, *, token: str | None, last_event_id: str | None) -> None:
    """Handshake: accept, authenticate (an error frame then a close code on failure),
    enforce the per-user connection limit, then run the connection."""
    await ws.accept()
    settings = get_settings()
    if last_event_id is not None:
        try:
            stream_id_key(last_event_id)
        except ValueError:
            await _refuse(ws, CloseCode.BAD_REQUEST, WsError.INVALID_MESSAGE_FORMAT,
                          "lastEventId must look like <ms>-<seq>")
            return
    if not token:
        await _refuse(ws, CloseCode.AUTHENTICATION_FAILED, WsError.AUTHENTICATION_FAILED,
                      "A token query parameter is required")
        return
    try:
        decode_access_token(token)
    except AppError as exc:
        if exc.code == ErrorCode.TOKEN_EXPIRED:
            await _refuse(ws, CloseCode.TOKEN_INVALID, WsError.INVALID_TOKEN, "Token has expired")
        else:
            await _refuse(ws, CloseCode.AUTHENTICATION_FAILED, WsError.AUTHENTICATION_FAILED, "Invalid token")
        return
    try:
        async with sessionmaker()() as session:
            user = await authenticate_token(token, session)
            avatar = await session.scalar(select(models.User.avatar).where(models.User.id == user.id))
    except AppError as exc:
        code, reason = _close_for(exc)
        await _refuse(ws, code, _error_for(code), reason)
        return
    hub = get_hub()
    if hub.closing:  # this replica is draining: send the client to another one
        await goodbye(ws)
        with contextlib.suppress(Exception):
            await ws.close(code=CloseCode.SHUTDOWN, reason="server shutting down")
        return
    await hub.ensure_started()
    conn = Connection(ws, user, hub, avatar=avatar)
    if not await service.admit_connection(user_id=user.id, conn_id=conn.id,
                                          limit=settings.ws_max_connections_per_user,
                                          stale_after=conn.stale_after):
        await _refuse(ws, CloseCode.TOO_MANY_CONNECTIONS, WsError.RATE_LIMIT_EXCEEDED,
                      f"At most {settings.ws_max_connections_per_user} connections per user")
        return
    try:
        await conn.run(last_event_id)
    finally:
        if ws.application_state != WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                await ws.close(code=1000)


async def goodbye(ws: WebSocket) -> None:
    """The frame that tells a client the server is going away and when to reconnect."""
    with contextlib.suppress(Exception):
        await ws.send_text(frame("connection:status", {
            "status": "disconnected", "reason": "server shutting down", "retryIn": 1000}))


async def _refuse(ws: WebSocket, code: int, error: WsError, message: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_text(error_frame(error, message, recoverable=False))
        await ws.close(code=code, reason=message[:120])
