"""Telling when this Serve replica starts to drain.

Serve drains a replica (redeploy, scale-down, shutdown) by waiting for its
ongoing requests to finish before it runs the app's shutdown hooks. Open
WebSockets are ongoing requests, so without this they would be cut when the
grace period ends instead of being told to reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("troupe.realtime")

_watchers: set[asyncio.Task] = set()


def replica_draining() -> bool | None:
    """True once Serve has begun this replica's graceful shutdown; None outside a
    Serve replica, or if this Ray version no longer exposes the flag (Serve keeps
    it on the replica to fail its own health check while draining)."""
    try:
        import ray

        worker = ray._private.worker.global_worker
        actor = worker.actors.get(worker.actor_id) if worker.connected else None
    except Exception:  # noqa: BLE001 - not inside Ray at all
        return None
    flag = getattr(getattr(actor, "_replica_impl", None), "_shutting_down", None)
    return flag if isinstance(flag, bool) else None


async def _watch(on_drain: Callable[[], Awaitable[None]], interval: float) -> None:
    while not replica_draining():  # noqa: ASYNC110 - a flag Serve sets; there is no event to await
        await asyncio.sleep(interval)
    log.info("replica draining: closing WebSockets with a reconnect hint")
    await on_drain()


def watch_drain(on_drain: Callable[[], Awaitable[None]], *, interval: float = 0.5) -> bool:
    """Run ``on_drain`` once when this replica starts draining. False outside Serve
    (the app's shutdown hooks cover that case)."""
    if replica_draining() is None:
        return False
    task = asyncio.create_task(_watch(on_drain, interval), name="troupe-ws-drain")
    _watchers.add(task)
    task.add_done_callback(_watchers.discard)
    return True
