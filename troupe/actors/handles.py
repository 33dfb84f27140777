"""Per-process cache of actor handles, with "actor died -> re-activate and retry once".

Actors are virtual: addressing one by name activates it if it is not resident
(``get_if_exists=True``). A cached handle may point at an actor that exited
itself when idle or was killed; the first call then fails with an actor error,
and we activate a fresh one and retry once.

Agents are the exception: ``agent:<id>`` is not an actor's name but an address
that ``troupe.actors.pool`` resolves to the warm pooled actor bound to that
agent (activating one if none is); ``call``/``call_sync`` route it there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

NAMESPACE = "troupe"
AGENT_POOL = "agent-pool"
_handles: dict[str, Any] = {}
_DEAD = (ActorDiedError, ActorUnavailableError, RayActorError)


def company_name(company_id: str) -> str:
    return f"company:{company_id}"


def agent_name(agent_id: str) -> str:
    return f"agent:{agent_id}"


def _activate(name: str) -> Any:
    if name.startswith("company:"):
        from troupe.actors.company import CompanyActor

        return CompanyActor.options(name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                                    num_cpus=0, max_concurrency=1000, max_restarts=0).remote(name[8:])
    if name == AGENT_POOL:
        from troupe.actors.pool import AgentPool

        # Restarted by Ray if it dies: bound agent actors outlive it, blank ones leave unkept.
        return AgentPool.options(name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                                 num_cpus=0, max_concurrency=1000, max_restarts=-1).remote()
    if name == "recovery":
        from troupe.actors.recovery import RecoveryActor

        return RecoveryActor.options(name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                                     num_cpus=0, max_concurrency=10, max_restarts=-1).remote()
    raise ValueError(f"unknown actor {name}")


def handle(name: str) -> Any:
    cached = _handles.get(name)
    if cached is None:
        cached = _handles[name] = _activate(name)
    return cached


def forget(name: str) -> None:
    _handles.pop(name, None)


async def call(name: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``method`` on the actor ``name`` from async code."""
    if name.startswith("agent:"):
        from troupe.actors import pool

        return await pool.call(name[6:], method, *args, **kwargs)
    try:
        return await getattr(handle(name), method).remote(*args, **kwargs)
    except _DEAD:
        forget(name)
        return await getattr(handle(name), method).remote(*args, **kwargs)


def tell(name: str, method: str, *args: Any, **kwargs: Any) -> None:
    """Fire and forget: submit the call and return without waiting for the actor (a hot
    path's hand-over whose loss is repaired elsewhere). A handle found dead is dropped."""
    try:
        ref = getattr(handle(name), method).remote(*args, **kwargs)
    except _DEAD:
        forget(name)
        ref = getattr(handle(name), method).remote(*args, **kwargs)
    cached = _handles.get(name)

    def check(done: Any) -> None:  # a dead actor shows on the result: the next call re-activates it
        if done.exception() is not None and _handles.get(name) is cached:
            forget(name)

    ref.future().add_done_callback(check)


def call_sync(name: str, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """Call ``method`` on the actor ``name`` from a (synchronous) Ray task."""
    if name.startswith("agent:"):
        from troupe.actors import pool

        return pool.call_sync(name[6:], method, *args, timeout=timeout, **kwargs)

    def once() -> Any:
        return ray.get(getattr(handle(name), method).remote(*args, **kwargs), timeout=timeout)

    try:
        return once()
    except _DEAD:
        forget(name)
        return once()


def company(company_id: str) -> Callable[..., Any]:
    return lambda method, *a, **k: call(company_name(company_id), method, *a, **k)
