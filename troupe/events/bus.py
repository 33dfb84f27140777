"""Publishing events for the WebSocket rooms.

Each event is appended to a capped Redis Stream per room (so a reconnecting
client can replay what it missed) and announced on one pub/sub channel that
every ingress replica listens to. Callable from the API, actors and Ray tasks.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from troupe.infra.redis import get_redis, rkey

# Streams keep at most this many events per room (approximate trim).
STREAM_MAXLEN = 10_000


def stream_key(room: str) -> str:
    return rkey("events", "room", room)


def fanout_channel() -> str:
    return rkey("events", "fanout")


def make_event(type_: str, payload: dict[str, Any], *, user_id: str | None = None,
               company_id: str | None = None) -> dict[str, Any]:
    """The spec's WebSocket message envelope."""
    return {"id": str(uuid.uuid4()), "type": type_, "payload": payload,
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "userId": user_id, "companyId": company_id}


async def publish(rooms: list[str], type_: str, payload: dict[str, Any], *, user_id: str | None = None,
                  company_id: str | None = None) -> dict[str, Any]:
    """Record the event in each room's stream and announce it to every replica.

    The stream entry id (per room) is the event's position for replay."""
    event = make_event(type_, payload, user_id=user_id, company_id=company_id)
    redis = get_redis()
    data = json.dumps(event, default=str)
    async with redis.pipeline(transaction=False) as pipe:
        for room in rooms:
            pipe.xadd(stream_key(room), {"event": data}, maxlen=STREAM_MAXLEN, approximate=True)
        stream_ids = await pipe.execute()
    positions = {room: sid for room, sid in zip(rooms, stream_ids, strict=True)}
    await redis.publish(fanout_channel(), json.dumps({"rooms": positions, "event": event}, default=str))
    return event
