"""Who may be in which room, chat persistence, presence and connection counts."""

from __future__ import annotations

import json
import time
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.events.bus import publish
from troupe.infra.redis import get_redis, rkey
from troupe.platform.access import may, visible_companies
from troupe.platform.deps import Principal
from troupe.platform.realtime.protocol import ProtocolError, WsError
from troupe.platform.realtime.schemas import ChatMessageOut, Filters, RoomMember, RoomUpdate
from troupe.timeutil import iso

# Subscribing without filters follows at most this many of the caller's companies.
MAX_IMPLICIT_COMPANY_ROOMS = 200
MAX_MEMBERS_LISTED = 50


def base_rooms(user: Principal) -> list[str]:
    """Rooms every socket is in from the start: the user's own and the broadcast room."""
    return [f"user:{user.id}", "global"]


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        return None


async def _company_readable(session: AsyncSession, user: Principal, company_id: uuid.UUID | None) -> bool:
    if company_id is None:
        return user.is_global
    company = await session.get(models.Company, company_id)
    return company is not None and may(company, user, "read")


async def _task_readable(session: AsyncSession, user: Principal, task_id: uuid.UUID) -> bool:
    task = await session.get(models.Task, task_id)
    if task is None:
        return False
    if task.created_by == user.id and task.company_id is None:
        return True
    return await _company_readable(session, user, task.company_id)


async def _agent_readable(session: AsyncSession, user: Principal, agent_id: uuid.UUID) -> bool:
    agent = await session.get(models.Agent, agent_id)
    if agent is None:
        return False
    if agent.created_by == user.id or user.is_global:
        return True
    return await _company_readable(session, user, agent.company_id)


async def may_join(*, session: AsyncSession, user: Principal, room: str) -> bool:
    """The room access policy: company rooms for members, task/agent rooms if
    readable, a user room for oneself, ``admin`` for administrators, ``global`` for all."""
    if room == "global":
        return True
    if room == "admin":
        return user.is_global
    kind, _, raw = room.partition(":")
    ident = _uuid(raw)
    if ident is None:
        return False
    if kind == "user":
        return ident == user.id
    if kind == "company":
        return await _company_readable(session, user, ident)
    if kind == "task":
        return await _task_readable(session, user, ident)
    if kind == "agent":
        return await _agent_readable(session, user, ident)
    return False


async def subscription_rooms(*, session: AsyncSession, user: Principal, filters: Filters | None) -> list[str]:
    """The rooms a subscription listens in, each filter checked against what the
    caller may read (WS_009 otherwise, without telling whether the object exists)."""
    checks: list[tuple[str, str, str]] = []  # (filter name, room, value)
    if filters is not None:
        for name, kind in (("task_id", "task"), ("agent_id", "agent"), ("company_id", "company"),
                           ("user_id", "user")):
            value = getattr(filters, name)
            if value is not None:
                if _uuid(value) is None:
                    raise ProtocolError(WsError.SUBSCRIPTION_FAILED, f"filters.{name} is not a valid id",
                                        details={"field": name})
                checks.append((name, f"{kind}:{value.lower()}", value))
    for name, room, _ in checks:
        if not await may_join(session=session, user=user, room=room):
            raise ProtocolError(WsError.PERMISSION_DENIED, f"You may not subscribe to this {name[:-3]}",
                                details={"field": name})
    if checks:
        # The most specific filter names the room; the others narrow what is delivered from it.
        return [checks[0][1]]
    rooms = base_rooms(user) + (["admin"] if user.is_global else [])
    if user.is_global:
        # Administrators see every tenant: their implicit scope is the admin room,
        # not a room per company of the platform.
        own = (models.Company.owner_id == user.id) | models.Company.team_members.any(user.id)
        query = select(models.Company.id).where(own)
    else:
        query = select(models.Company.id).where(visible_companies(user))
    ids = (await session.scalars(query.order_by(models.Company.id).limit(MAX_IMPLICIT_COMPANY_ROOMS))).all()
    return rooms + [f"company:{cid}" for cid in ids]


async def post_chat(*, session: AsyncSession, user: Principal, avatar: str | None, room: str, message: str,
                    metadata: dict | None, reply_to: str | None) -> ChatMessageOut:
    """Persist a chat message and deliver it to the room on every replica."""
    row = models.ChatMessage(room=room, user_id=user.id, content=message,
                             data={"metadata": metadata or {}, "replyTo": reply_to})
    session.add(row)
    await session.flush()
    await session.refresh(row)
    await session.commit()
    out = ChatMessageOut(id=str(row.id), room=room, user_id=str(user.id), username=user.username,
                         avatar=avatar, message=message, timestamp=iso(row.created_at), reply_to=reply_to)
    company_id = room.partition(":")[2] if room.startswith("company:") else None
    await publish([room], "chat:message", out.model_dump(mode="json", by_alias=True),
                  user_id=str(user.id), company_id=company_id)
    return out


# --- Presence and connection counts live in Redis so they hold across replicas.
# Entries are scored by last-seen time and refreshed by each socket's heartbeat,
# so a replica that dies without cleaning up stops counting after `stale_after`.

_ADMIT = """
local key, now, stale, limit, member, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', key, 0, now - stale)
if redis.call('ZCARD', key) >= limit then return 0 end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, ttl)
return 1
"""


def connections_key(user_id: uuid.UUID | str) -> str:
    return rkey("ws", "conns", user_id)


def presence_key(room: str) -> str:
    return rkey("ws", "presence", room)


async def admit_connection(*, user_id: uuid.UUID, conn_id: str, limit: int, stale_after: float) -> bool:
    now = int(time.time() * 1000)
    stale_ms = int(stale_after * 1000)
    return bool(await get_redis().eval(_ADMIT, 1, connections_key(user_id), now, stale_ms, limit, conn_id,
                                       stale_ms * 2))


async def refresh_presence(*, user_id: uuid.UUID, conn_id: str, rooms: list[str], username: str,
                           stale_after: float) -> None:
    now = int(time.time() * 1000)
    ttl = int(stale_after * 2000)
    member = json.dumps([conn_id, str(user_id), username])
    async with get_redis().pipeline(transaction=False) as pipe:
        pipe.zadd(connections_key(user_id), {conn_id: now})
        pipe.pexpire(connections_key(user_id), ttl)
        for room in rooms:
            pipe.zadd(presence_key(room), {member: now})
            pipe.pexpire(presence_key(room), ttl)
        await pipe.execute()


async def release_connection(*, user_id: uuid.UUID, conn_id: str) -> None:
    await get_redis().zrem(connections_key(user_id), conn_id)


async def room_members(room: str, *, stale_after: float) -> tuple[int, list[RoomMember]]:
    redis = get_redis()
    now = int(time.time() * 1000)
    await redis.zremrangebyscore(presence_key(room), 0, now - int(stale_after * 1000))
    seen: dict[str, str] = {}
    for member in await redis.zrange(presence_key(room), 0, -1):
        _, user_id, username = json.loads(member)
        seen[user_id] = username
    members = [RoomMember(user_id=uid, username=name) for uid, name in list(seen.items())[:MAX_MEMBERS_LISTED]]
    return len(seen), members


async def enter_room(*, user: Principal, conn_id: str, room: str, stale_after: float) -> RoomUpdate:
    """Record presence and tell the room (on every replica) who joined."""
    await refresh_presence(user_id=user.id, conn_id=conn_id, rooms=[room], username=user.username,
                           stale_after=stale_after)
    return await _announce(room, "joined", user, stale_after)


async def exit_room(*, user: Principal, conn_id: str, room: str, stale_after: float) -> RoomUpdate:
    await get_redis().zrem(presence_key(room), json.dumps([conn_id, str(user.id), user.username]))
    return await _announce(room, "left", user, stale_after)


async def _announce(room: str, action: str, user: Principal, stale_after: float) -> RoomUpdate:
    count, members = await room_members(room, stale_after=stale_after)
    update = RoomUpdate(room=room, action=action, user_id=str(user.id), member_count=count, members=members)
    await publish([room], "room:update", update.model_dump(mode="json", by_alias=True), user_id=str(user.id))
    return update
