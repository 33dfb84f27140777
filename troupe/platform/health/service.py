"""Real checks of every dependency, each with its latency.

``database``, ``redis`` and ``queue`` (the Ray cluster) are critical: without one of
them the API cannot serve, so the report is ``unhealthy`` (HTTP 503). ``storage``
and ``email`` are probed too, but only their features stop working without them:
``degraded``. ``ai`` is what the deployment has configured; it is not called (a
health probe must not spend on paid APIs).

The probes run concurrently, each bounded by ``health_probe_timeout``, so the
report arrives within that bound whatever is down or hung. The SMTP server is
probed at most once a minute (a load balancer polls health far more often)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text

from troupe import runtime_settings
from troupe.config import get_settings
from troupe.db.session import sessionmaker
from troupe.events.alerts import raise_alert
from troupe.infra.mail import send_mail
from troupe.infra.redis import get_redis
from troupe.infra.storage import get_storage
from troupe.platform.health.schemas import HealthCheck, HealthServices, ServiceName, ServiceStatus
from troupe.timeutil import utcnow

CRITICAL: frozenset[ServiceName] = frozenset({"database", "redis", "queue"})
SMTP_PROBE_EVERY = 60.0  # seconds

# Alerts in flight: referenced so they are not garbage-collected before they finish.
_alerts: set[asyncio.Task] = set()


@dataclass(frozen=True)
class Finding:
    """What a successful probe found. ``warn``: it works, with a caveat an operator should read."""

    message: str
    details: dict = field(default_factory=dict)
    warn: bool = False


@dataclass(frozen=True)
class Probe:
    name: ServiceName
    status: str  # up | down | degraded
    latency_ms: float
    checked_at: datetime
    message: str
    error: str | None = None
    details: dict | None = None
    warn: bool = False

    def service(self, *, full: bool) -> ServiceStatus:
        if not full:  # latency, errors and findings only for system:read
            return ServiceStatus(status=self.status, last_check=self.checked_at)  # type: ignore[arg-type]
        return ServiceStatus(status=self.status, response_time=self.latency_ms,  # type: ignore[arg-type]
                             last_check=self.checked_at, error=self.error, details=self.details)

    def check(self) -> HealthCheck:
        outcome = "fail" if self.status == "down" else "warn" if self.warn or self.status == "degraded" else "pass"
        return HealthCheck(name=self.name, status=outcome, message=self.message,  # type: ignore[arg-type]
                           duration=self.latency_ms, timestamp=self.checked_at)


async def _timed(name: ServiceName, check: Callable[[], Awaitable[Finding]]) -> Probe:
    checked_at = utcnow()
    started = time.perf_counter()
    try:
        found = await asyncio.wait_for(check(), get_settings().health_probe_timeout.total_seconds())
    except Exception as exc:  # a failed check is a result, not an error
        error = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
        return Probe(name=name, status="down", latency_ms=round((time.perf_counter() - started) * 1000, 3),
                     checked_at=checked_at, message=f"{name} is down ({error})", error=error)
    return Probe(name=name, status="up", latency_ms=round((time.perf_counter() - started) * 1000, 3),
                 checked_at=checked_at, message=found.message, details=found.details or None, warn=found.warn)


async def _database() -> Finding:
    async with sessionmaker()() as session:
        version = (await session.execute(text("SHOW server_version"))).scalar_one()
    return Finding(f"PostgreSQL {version} answered", {"serverVersion": version})


async def _redis() -> Finding:
    if not await get_redis().ping():
        raise ConnectionError("no PONG")
    return Finding("Redis answered PING")


async def _queue() -> Finding:
    import ray

    if not ray.is_initialized():
        raise ConnectionError("not connected to a Ray cluster")
    # Reading the GCS is a blocking call; keep it off the event loop.
    nodes = await asyncio.to_thread(ray.nodes)
    alive = [n for n in nodes if n.get("Alive")]
    if not alive:
        raise ConnectionError("no live Ray nodes")
    return Finding(f"{len(alive)} Ray node(s) alive", {"nodes": len(alive)})


async def _storage() -> Finding:
    details = await get_storage().probe()
    return Finding(f"{details['backend']} storage reachable", details)


async def _ai() -> Finding:
    """What can be said without calling a provider: which ones the deployment configured."""
    settings = get_settings()
    configured = {"openai": bool(settings.openai_api_key), "anthropic": bool(settings.anthropic_api_key),
                  "google": bool(settings.google_ai_api_key), "local": bool(settings.local_llm_base_url)}
    names = [name for name, on in configured.items() if on]
    details = {"providers": {**configured, "simulated": True}, "probed": False}
    if not names:
        return Finding("No model provider configured for the deployment: only the simulated provider and agents "
                       "with their own apiKey can answer (providers are not called by health)", details, warn=True)
    return Finding(f"Configured: {', '.join(names)}, simulated (providers are not called by health)", details)


_smtp_cache: tuple[float, Probe] | None = None


async def _smtp_greeting(host: str, port: int, implicit_tls: bool) -> str:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl.create_default_context() if implicit_tls else None)
    try:
        greeting = (await reader.readline()).decode("latin-1").strip()
        if not greeting.startswith("220"):
            raise ConnectionError(f"unexpected greeting {greeting[:100]!r}")
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(Exception):
            await writer.drain()
        return greeting
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _email() -> Finding:
    settings = get_settings()
    if settings.smtp_host:
        await _smtp_greeting(settings.smtp_host, settings.smtp_port,
                             settings.smtp_secure and settings.smtp_port == 465)
        return Finding(f"SMTP server {settings.smtp_host}:{settings.smtp_port} greeted",
                       {"transport": "smtp", "host": settings.smtp_host, "port": settings.smtp_port})
    directory = settings.outbox_dir

    def writable() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError("the outbox directory is not writable")

    await asyncio.to_thread(writable)
    return Finding("SMTP_HOST is not set: mail is written to the development outbox, not delivered",
                   {"transport": "outbox", "directory": str(directory)}, warn=True)


async def _email_cached() -> Probe:
    global _smtp_cache
    if not get_settings().smtp_host:
        return await _timed("email", _email)
    now = time.monotonic()
    if _smtp_cache is not None and now - _smtp_cache[0] < SMTP_PROBE_EVERY:
        return _smtp_cache[1]
    probe = await _timed("email", _email)
    _smtp_cache = (now, probe)
    return probe


async def warm_up() -> None:
    """Pay the one-time costs (the pool's first Postgres connection with SQLAlchemy's dialect
    set-up, the first Redis connection, Ray's GCS client) when the replica starts, not in the
    first probe, whose short timeout would report a healthy but cold dependency down."""
    with contextlib.suppress(Exception):  # a dependency down at start is health's to report later
        async with asyncio.timeout(10):
            await asyncio.gather(_database(), _redis(), _queue(), _storage(), return_exceptions=True)


async def check_all() -> list[Probe]:
    probes = list(await asyncio.gather(
        _timed("database", _database), _timed("redis", _redis), _timed("queue", _queue),
        _timed("storage", _storage), _timed("ai", _ai), _email_cached()))
    for probe in probes:
        if probe.status == "down":
            # In the background: alerts travel through Redis, which may be what is down,
            # and the report must not wait on telling anyone.
            task = asyncio.create_task(_alert_down(probe.name, probe.error))
            _alerts.add(task)
            task.add_done_callback(_alerts.discard)
    return probes


def overall(probes: list[Probe]) -> str:
    if any(p.status == "down" and p.name in CRITICAL for p in probes):
        return "unhealthy"
    if any(p.status != "up" for p in probes):
        return "degraded"
    return "healthy"


def services(probes: list[Probe], *, full: bool) -> HealthServices:
    return HealthServices(**{p.name: p.service(full=full) for p in probes})


async def _alert_down(name: ServiceName, error: str | None) -> None:
    # Once per dependency per 5 minutes, however often health is polled.
    description = f"The health check of {name} failed ({error})."
    event = await raise_alert(severity="critical" if name in CRITICAL else "high", title=f"{name} is down",
                              description=description, source="health", affected=[name],
                              actions=[f"Check the {name} server and the network to it"],
                              once_per=(f"down:{name}", 300))
    if event is None:  # told already within 5 minutes, or Redis (which keeps that guard) is down
        return
    # The settings' adminEmail hears of it too, when mail is on (and the mail server is what still works).
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            settings = await runtime_settings.current()
            if settings.general.admin_email and settings.notifications.email_enabled:
                await send_mail(to=str(settings.general.admin_email), subject=f"{name} is down",
                                body=f"{description}\n\nCheck the {name} server and the network to it.")
