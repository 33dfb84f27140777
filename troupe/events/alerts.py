"""``system:alert`` events: raised by real state changes of the system (a
dependency found down, maintenance switched, runs recovered after a lost
driver) and delivered to the ``admin`` room (and ``global`` when every user
should know). Callable from the API, actors and Ray tasks, like ``publish``."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from troupe.events.bus import publish
from troupe.infra.redis import get_redis, rkey

log = logging.getLogger("troupe.events")

Severity = Literal["low", "medium", "high", "critical"]


async def raise_alert(*, severity: Severity, title: str, description: str, source: str,
                      affected: list[str], actions: list[str], rooms: tuple[str, ...] = ("admin",),
                      once_per: tuple[str, int] | None = None) -> dict[str, Any] | None:
    """Publish one alert (the spec's SystemAlert payload). ``once_per=(key, seconds)``
    suppresses repeats of the same condition, cluster-wide, for that long.
    Returns the event, or None if suppressed or undeliverable: an alert must never
    fail the operation that noticed the problem."""
    payload = {"id": str(uuid.uuid4()), "severity": severity, "title": title, "description": description,
               "source": source, "affectedServices": affected, "recommendedActions": actions,
               "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    try:
        async with asyncio.timeout(3):  # whoever noticed the problem must not hang on telling
            if once_per is not None:
                key, seconds = once_per
                if not await get_redis().set(rkey("alerts", "once", key), "1", nx=True, ex=seconds):
                    return None
            return await publish(list(rooms), "system:alert", payload)
    except Exception:  # Redis itself may be what is down
        log.exception("could not raise system alert %r", title)
        return None
