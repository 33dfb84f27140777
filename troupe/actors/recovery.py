"""The cluster-wide recovery sweep: ONE named detached actor (``recovery``).

Every ``SWEEP_SECONDS`` it activates the CompanyActor of every company that
has running, queued or parked tasks. Activation is recovery: a new
CompanyActor resumes the running runs that lost their driver, and its pump
admits queued and due parked runs. A company with a run whose lease expired is
asked to adopt it even when its actor is alive; an actor that does not answer
then is replaced. Started (idempotently, by name) from each ingress replica's
start-up and from the test harness.

The same actor runs the cron scheduler (``troupe.engine.triggers``) every
``SCHEDULE_TICK_SECONDS`` on a loop of its own, so a slow sweep never delays a slot.
Slots are claimed in Postgres, so a second scheduler (another incarnation of this
actor after a restart, or a test) can never fire one twice.
"""

from __future__ import annotations

import asyncio
import logging

import ray

from troupe.actors import handles
from troupe.actors.company import companies_with_expired_leases, companies_with_work
from troupe.db.session import set_pool
from troupe.engine import triggers

log = logging.getLogger("troupe.engine")
SWEEP_SECONDS = 2.0
SCHEDULE_TICK_SECONDS = 1.0
ANSWER_SECONDS = 15.0


def _kill(name: str) -> None:
    handles.forget(name)
    try:
        ray.kill(ray.get_actor(name, namespace=handles.NAMESPACE), no_restart=True)
    except ValueError:  # already gone
        pass


@ray.remote
class RecoveryActor:
    def __init__(self) -> None:
        set_pool("none")
        self.loop: asyncio.Task[None] | None = None
        self.scheduler: asyncio.Task[None] | None = None
        self.sweeps = 0

    async def start(self) -> int:
        if self.loop is None:
            self.loop = asyncio.get_running_loop().create_task(self._run())
        if self.scheduler is None:
            self.scheduler = asyncio.get_running_loop().create_task(self._schedule())
        return self.sweeps

    async def fire_schedules(self) -> int:
        """One scheduler pass: fire due cron slots and hand their runs to the companies."""
        fired = await triggers.fire_due_schedules()
        by_company: dict[str, list[dict[str, object]]] = {}
        for task in fired:
            by_company.setdefault(str(task.company_id), []).append(triggers.queue_entry(task))
        for company_id, entries in by_company.items():
            handles.tell(handles.company_name(company_id), "submit", entries)
        return len(fired)

    async def _schedule(self) -> None:
        while True:
            try:
                await self.fire_schedules()
            except Exception:
                log.exception("scheduler pass failed")
            await asyncio.sleep(SCHEDULE_TICK_SECONDS)

    async def sweep(self) -> int:
        companies = await companies_with_work()
        stale = await companies_with_expired_leases()
        for company_id in companies:
            name = handles.company_name(str(company_id))
            try:
                # Activation takes over runs that lost their actor; a resident actor adopts expired leases.
                method = "adopt_expired" if company_id in stale else "ping"
                await asyncio.wait_for(handles.call(name, method), timeout=ANSWER_SECONDS)
            except TimeoutError:
                if company_id in stale:
                    # Resident but not answering while its runs' leases lapse: replace it (the new one takes over).
                    log.error("company actor %s is unresponsive with expired leases; replacing it", company_id)
                    _kill(name)
            except Exception:
                log.exception("recovery could not activate company %s", company_id)
        self.sweeps += 1
        return len(companies)

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("recovery sweep failed")
            await asyncio.sleep(SWEEP_SECONDS)


async def ensure_recovery() -> None:
    await handles.call("recovery", "start")


# The recovery actor can itself be lost with its node. Every replica keeps
# re-ensuring it (by name, idempotent), so a lost one is re-created elsewhere.
WATCH_SECONDS = 5.0
_watchers: set[asyncio.Task[None]] = set()


async def _watch() -> None:
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        try:
            await ensure_recovery()
        except Exception:
            log.exception("could not re-ensure the recovery actor")


def watch_recovery() -> None:
    """Start this process's watchdog (once)."""
    if not _watchers:
        task = asyncio.get_running_loop().create_task(_watch())
        _watchers.add(task)
