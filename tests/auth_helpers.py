"""Helpers shared by tests/test_auth.py and tests/test_users.py."""

from __future__ import annotations

import itertools
import re
import time
import uuid

from tests.utils.fixtures import PASSWORD, assert_ok

_ips = itertools.count(1)


def fresh_ip() -> dict[str, str]:
    """A fake client IP per flow, so per-IP auth limits of one test never touch another."""
    n = next(_ips)
    return {"X-Forwarded-For": f"10.{uuid.uuid4().int % 250}.{n // 250 % 250}.{n % 250 + 1}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_account(**overrides) -> dict:
    tag = uuid.uuid4().hex[:10]
    return {"email": f"ada.{tag}@example.com", "username": f"ada_{tag}", "password": PASSWORD,
            "firstName": "Ada", "lastName": "Lovelace", **overrides}


async def register(client, **overrides) -> tuple[dict, dict]:
    body = new_account(**overrides)
    data = assert_ok(await client.post("/api/auth/register", json=body, headers=fresh_ip()), 201)
    return body, data


async def login(client, email: str, password: str = PASSWORD, **extra) -> dict:
    return assert_ok(await client.post("/api/auth/login", json={"email": email, "password": password, **extra},
                                       headers=fresh_ip()))


def mail_token(to: str, label: str) -> str:
    """The newest token called ``label`` mailed to ``to`` (development outbox)."""
    from troupe.infra.mail import read_outbox

    # The server writes the message before it answers, so it is there already.
    for message in reversed(read_outbox(to)):
        match = re.search(rf"{label}: (\S+)", message["body"])
        if match:
            return match.group(1)
    raise AssertionError(f"no {label!r} mail for {to}")


async def fill_window(key: str, count: int) -> None:
    """Pre-fill a sliding window in Redis (the test process shares the server's Redis and prefix)."""
    from troupe.infra.redis import get_redis, rkey

    now_ms = int(time.time() * 1000)
    redis = get_redis()
    await redis.zadd(rkey("rl", key), {f"pre-{i}-{uuid.uuid4().hex[:6]}": now_ms for i in range(count)})
    await redis.pexpire(rkey("rl", key), 120_000)


async def audit_actions(user_id: str) -> list[str]:
    from sqlalchemy import select

    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        rows = await session.scalars(select(models.Log.details).where(models.Log.user_id == uuid.UUID(user_id),
                                                                     models.Log.source == "audit")
                                     .order_by(models.Log.created_at))
        return [row.get("action") for row in rows]
