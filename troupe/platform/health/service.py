"""Real checks of every dependency, each with its latency.

The probes run concurrently, each bounded by ``health_probe_timeout``, so the
report arrives within that bound whatever is down or hung."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from troupe.config import get_settings
from troupe.db.session import sessionmaker
from troupe.events.alerts import raise_alert
from troupe.infra.redis import get_redis
from troupe.platform.health.schemas import DependencyHealth

# Alerts in flight: referenced so they are not garbage-collected before they finish.
_alerts: set[asyncio.Task] = set()


async def _timed(check: Callable[[], Awaitable[dict | None]]) -> DependencyHealth:
    started = time.perf_counter()
    try:
        details = await asyncio.wait_for(check(), get_settings().health_probe_timeout.total_seconds())
        return DependencyHealth(status="up", latency_ms=round((time.perf_counter() - started) * 1000, 3),
                                details=details)
    except Exception as exc:  # a failed check is a result, not an error
        return DependencyHealth(status="down", latency_ms=round((time.perf_counter() - started) * 1000, 3),
                                error=type(exc).__name__)


async def _postgres() -> dict:
    async with sessionmaker()() as session:
        version = (await session.execute(text("SHOW server_version"))).scalar_one()
    return {"serverVersion": version}


async def _redis() -> dict:
    redis = get_redis()
    if not await redis.ping():
        raise ConnectionError("no PONG")
    return {}


async def _ray() -> dict:
    import ray

    if not ray.is_initialized():
        raise ConnectionError("not connected to a Ray cluster")
    # Reading the GCS is a blocking call; keep it off the event loop.
    nodes = await asyncio.to_thread(ray.nodes)
    alive = [n for n in nodes if n.get("Alive")]
    if not alive:
        raise ConnectionError("no live Ray nodes")
    return {"nodes": len(alive)}


async def warm_up() -> None:
    """Pay the one-time costs (the pool's first Postgres connection with SQLAlchemy's dialect
    set-up, the first Redis connection, Ray's GCS client) when the replica starts, not in the
    first probe, whose short timeout would report a healthy but cold dependency down."""
    with contextlib.suppress(Exception):  # a dependency down at start is health's to report later
        async with asyncio.timeout(10):
            await asyncio.gather(_postgres(), _redis(), _ray(), return_exceptions=True)


async def check_all() -> dict[str, DependencyHealth]:
    names = ("postgres", "redis", "ray")
    results = await asyncio.gather(_timed(_postgres), _timed(_redis), _timed(_ray))
    checks = dict(zip(names, results, strict=True))
    for name, check in checks.items():
        if check.status == "down":
            # In the background: alerts travel through Redis, which may be what is down,
            # and the report must not wait on telling anyone.
            task = asyncio.create_task(_alert_down(name, check.error))
            _alerts.add(task)
            task.add_done_callback(_alerts.discard)
    return checks


async def _alert_down(name: str, error: str | None) -> None:
    # Once per dependency per 5 minutes, however often health is polled.
    await raise_alert(severity="critical", title=f"{name} is down",
                      description=f"The health check of {name} failed ({error}).",
                      source="health", affected=[name],
                      actions=[f"Check the {name} server and the network to it"],
                      once_per=(f"down:{name}", 300))
