"""One hub per ingress replica: its sockets, the room index, and the single
Redis subscriber that delivers events published anywhere in the cluster."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from troupe.events.bus import fanout_channel
from troupe.infra.redis import get_redis

if TYPE_CHECKING:
    from troupe.platform.realtime.connection import Connection

log = logging.getLogger("troupe.realtime")


class Hub:
    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self.rooms: dict[str, set[Connection]] = {}
        self._subscriber: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._closing = False

    async def ensure_started(self) -> None:
        """Start the subscriber on first use, in the replica's own event loop."""
        if self._subscriber is None or self._subscriber.done():
            self._ready = asyncio.Event()
            self._subscriber = asyncio.create_task(self._listen(), name="troupe-ws-fanout")
        # Wait until subscribed, so an event published right after a socket
        # connects is not missed.
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def _listen(self) -> None:
        backoff = 0.1
        while not self._closing:
            pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(fanout_channel())
                self._ready.set()
                backoff = 0.1
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self.dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarted or the connection dropped: resubscribe.
                log.exception("event subscriber failed; resubscribing in %.1fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:  # noqa: S110 - already broken; nothing to release
                    pass

    def dispatch(self, raw: str) -> None:
        """Deliver one announced event to every local socket that should see it."""
        try:
            announcement = json.loads(raw)
            rooms: list[str] = announcement["rooms"]
            stream_id: str = announcement["streamId"]
            event = announcement["data"]
        except (ValueError, KeyError, TypeError):
            log.warning("dropping malformed event announcement")
            return
        targets: set[Connection] = set()
        for room in rooms:
            targets.update(self.rooms.get(room, ()))
        if not targets:
            return
        # Serialised once for every recipient.
        text = json.dumps(event, separators=(",", ":"))
        for conn in targets:
            conn.offer(event, rooms, stream_id, text)

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for room in list(conn.all_rooms()):
            self.unindex(conn, room)

    def index(self, conn: Connection, room: str) -> None:
        self.rooms.setdefault(room, set()).add(conn)

    def unindex(self, conn: Connection, room: str) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.rooms[room]

    @property
    def closing(self) -> bool:
        return self._closing

    async def shutdown(self) -> None:
        """Close every socket with "going away" and a reconnect hint, then stop listening.
        Idempotent: the drain watcher and the app's shutdown hook may both call it."""
        self._closing = True
        await asyncio.gather(*(conn.server_shutdown() for conn in list(self.connections)),
                             return_exceptions=True)
        if self._subscriber is not None:
            self._subscriber.cancel()
            await asyncio.gather(self._subscriber, return_exceptions=True)


_hubs: dict[int, Hub] = {}


def get_hub() -> Hub:
    loop_id = id(asyncio.get_running_loop())
    hub = _hubs.get(loop_id)
    if hub is None:
        hub = _hubs[loop_id] = Hub()
    return hub
