"""Publishing events for the WebSocket rooms.

Each event is appended to a Redis Stream per room (so a reconnecting client can
replay what it missed) and announced on one pub/sub channel that every ingress
replica listens to. Callable from the API, actors and Ray tasks.

Every event gets one position (``streamId``) from a single Redis-wide sequence,
and is stored under that same id in each of its rooms' streams. A client can
therefore resume all its rooms from the one id of the last event it saw, and an
event that sits in two of its rooms is recognised as the same event.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from troupe.config import get_settings
from troupe.infra.redis import get_redis, rkey

# Streams keep at most this many events per room (approximate trim), on top of
# the time-based retention (settings.ws_replay_retention).
STREAM_MAXLEN = 10_000

# KEYS: sequence key, fan-out channel, stream keys... ; ARGV: retention ms, maxlen, event json
# (without streamId), room names as a JSON array. The id is max(now, last) so it never goes
# backwards, even within one millisecond; announcing inside the script makes the
# live order the same as the id order.
_PUBLISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('GET', KEYS[1])
local ms, seq = now, 0
if last then
  local lms, lseq = string.match(last, '(%d+)-(%d+)')
  lms, lseq = tonumber(lms), tonumber(lseq)
  if lms >= now then ms, seq = lms, lseq + 1 end
end
local id = string.format('%d-%d', ms, seq)
redis.call('SET', KEYS[1], id)
local retention = tonumber(ARGV[1])
local minid = string.format('%d-0', math.max(0, now - retention))
local data = string.sub(ARGV[3], 1, -2) .. ',"streamId":"' .. id .. '"}'
for i = 3, #KEYS do
  redis.call('XADD', KEYS[i], 'MINID', '~', minid, id, 'event', data)
  redis.call('XTRIM', KEYS[i], 'MAXLEN', '~', tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[i], retention)
end
redis.call('PUBLISH', KEYS[2], '{"rooms":' .. ARGV[4] .. ',"streamId":"' .. id .. '","data":' .. data .. '}')
return id
"""


def stream_key(room: str) -> str:
    return rkey("events", "room", room)


def sequence_key() -> str:
    return rkey("events", "seq")


def fanout_channel() -> str:
    return rkey("events", "fanout")


def make_event(type_: str, payload: dict[str, Any], *, user_id: str | None = None,
               company_id: str | None = None) -> dict[str, Any]:
    """The spec's WebSocket message envelope."""
    return {"id": str(uuid.uuid4()), "type": type_, "payload": payload,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "userId": user_id, "companyId": company_id}


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Sortable form of ``<ms>-<seq>``; ValueError if malformed."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


async def publish(rooms: list[str], type_: str, payload: dict[str, Any], *, user_id: str | None = None,
                  company_id: str | None = None) -> dict[str, Any]:
    """Record the event in each room's stream and announce it to every replica.

    Returns the event envelope including its ``streamId`` (its replay position)."""
    rooms = list(dict.fromkeys(rooms))
    if not rooms:
        raise ValueError("an event needs at least one room")
    event = make_event(type_, payload, user_id=user_id, company_id=company_id)
    redis = get_redis()
    retention_ms = max(1000, int(get_settings().ws_replay_retention.total_seconds() * 1000))
    # The announcement carries the stored event itself, so replicas forward it verbatim.
    stream_id = await redis.eval(
        _PUBLISH, 2 + len(rooms), sequence_key(), fanout_channel(), *(stream_key(r) for r in rooms),
        retention_ms, STREAM_MAXLEN, json.dumps(event, default=str, separators=(",", ":")), json.dumps(rooms))
    event["streamId"] = stream_id
    return event


async def read_since(rooms: list[str], after: str, *, limit: int = 1000) -> list[tuple[str, str, list[str]]]:
    """Events of ``rooms`` stored after position ``after`` (exclusive), oldest first,
    each once: ``[(streamId, event_json, rooms_it_was_found_in), ...]``, at most ``limit``."""
    redis = get_redis()
    async with redis.pipeline(transaction=False) as pipe:
        for room in rooms:
            pipe.xrange(stream_key(room), min=f"({after}", max="+", count=limit)
        results = await pipe.execute()
    merged: dict[str, tuple[str, list[str]]] = {}
    for room, entries in zip(rooms, results, strict=True):
        for sid, fields in entries:
            merged.setdefault(sid, (fields["event"], []))[1].append(room)
    ordered = sorted(merged.items(), key=lambda item: stream_id_key(item[0]))
    return [(sid, data, found) for sid, (data, found) in ordered[:limit]]


async def oldest_retained(rooms: list[str]) -> str | None:
    """The oldest position still stored in any of ``rooms`` (to tell a client
    that its resume point fell out of the retention window)."""
    redis = get_redis()
    async with redis.pipeline(transaction=False) as pipe:
        for room in rooms:
            pipe.xrange(stream_key(room), min="-", max="+", count=1)
        results = await pipe.execute()
    firsts = [entries[0][0] for entries in results if entries]
    return min(firsts, key=stream_id_key) if firsts else None


async def publish_many(events: list[tuple[list[str], str, dict[str, Any], str | None, str | None]]) -> None:
    """Publish ``(rooms, type, payload, company_id, user_id)`` events in one pipeline
    (one round trip), each exactly as ``publish`` would."""
    if not events:
        return
    retention_ms = max(1000, int(get_settings().ws_replay_retention.total_seconds() * 1000))
    redis = get_redis()
    async with redis.pipeline(transaction=False) as pipe:
        for rooms, type_, payload, company_id, user_id in events:
            event = make_event(type_, payload, user_id=user_id, company_id=company_id)
            pipe.eval(_PUBLISH, 2 + len(rooms), sequence_key(), fanout_channel(), *(stream_key(r) for r in rooms),
                      retention_ms, STREAM_MAXLEN, json.dumps(event, default=str, separators=(",", ":")),
                      json.dumps(rooms))
        await pipe.execute()
