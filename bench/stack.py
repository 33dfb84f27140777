"""The throwaway stack a benchmark run uses (see troupe.infra.devstack)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from troupe.infra import devstack
from troupe.infra.devstack import free_port

__all__ = ["free_port", "plain_uvicorn", "seed_company", "seed_user", "seed_workflow",
           "serve_replica_niceness", "troupe_stack"]

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def troupe_stack(*, replicas: int = 1, num_cpus: int | None = None) -> Iterator[dict[str, str]]:
    """Yields ``{"base_url": ..., **env}``; drops the database and stops Ray afterwards."""
    data = ROOT / ".troupe" / "bench"
    run_id = devstack.configure(kind="bench", data_root=data)
    # Benchmarks drive one IP hard: the API and auth rate limits must not be what is measured.
    os.environ.setdefault("RATE_LIMIT_MAX_REQUESTS", "1000000")
    os.environ.setdefault("TROUPE_AUTH_RATE_PER_IP", "100000")
    with devstack.stack(kind="bench", run_id=run_id, data_root=data, replicas=replicas,
                        num_cpus=num_cpus) as running:
        yield running


def serve_replica_niceness() -> int:
    """The scheduling niceness of this cluster's Serve ingress replica (Ray's raylet starts every worker,
    the replica included, at ``RAY_worker_niceness``: 15 by default)."""
    import psutil
    from ray._private import state

    for actor in state.actors(actor_state_name="ALIVE").values():
        if "ServeReplica" in str(actor.get("ActorClassName", "")) and actor.get("Pid"):
            return psutil.Process(actor["Pid"]).nice()
    return int(os.environ.get("RAY_worker_niceness", "15"))


@contextmanager
def plain_uvicorn(stack: dict[str, str], *, nice: int = 0) -> Iterator[tuple[str, int]]:
    """The same FastAPI app under plain uvicorn (the baselines' front door), on the
    stack's database and Redis and joined to its Ray cluster (so it does not start
    a Ray instance of its own). ``nice``: its scheduling niceness (pass
    ``serve_replica_niceness()`` to give it the Serve replica's CPU priority).
    Yields ``(base_url, pid)``."""
    import httpx
    import ray

    port = free_port()
    env = {**os.environ, **{k: v for k, v in stack.items() if k != "base_url"},
           "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "troupe.platform.app:create_app", "--port", str(port),
         "--log-level", "warning"], env=env, preexec_fn=(lambda: os.nice(nice)) if nice else None)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/bench-missing", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        # SIGINT: uvicorn's own graceful shutdown (Ray's SIGTERM handler in a connected process would cut it short).
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------- seeding (straight into Postgres)
async def seed_user(label: str = "bench") -> tuple[uuid.UUID, dict[str, str]]:
    """An active user with role ``user`` and a Bearer header for it (the token the login route would sign)."""
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import access_claims, create_access_token, hash_password

    tag = uuid.uuid4().hex[:8]
    async with session_scope() as session:
        user = models.User(email=f"{label}-{tag}@example.com", username=f"{label.replace('-', '_')}_{tag}",
                           password_hash=await hash_password(uuid.uuid4().hex), first_name="Bench",
                           last_name=label, role="user", status="active", email_verified=True, profile={},
                           preferences={})
        session.add(user)
        await session.flush()
        token, _ = create_access_token(access_claims(user_id=str(user.id), email=user.email, username=user.username,
                                                     role="user", companies=[], token_version=0))
        return user.id, {"Authorization": f"Bearer {token}"}


async def seed_company(owner: uuid.UUID, label: str, max_concurrency: int) -> uuid.UUID:
    """A company owned by ``owner`` (``settings.maxConcurrency`` = runs it may drive at once)."""
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        company = models.Company(name=f"bench {label} {uuid.uuid4().hex[:6]}", type="software", owner_id=owner,
                                 status="active", team_members=[], member_roles={}, metrics={},
                                 settings={"maxConcurrency": max_concurrency})
        session.add(company)
        await session.flush()
        return company.id


async def seed_workflow(owner: uuid.UUID, company: uuid.UUID, name: str, nodes: list[dict], edges: list[dict],
                        strategy: str) -> uuid.UUID:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        workflow = models.Workflow(name=name, company_id=company, nodes=nodes, edges=edges, status="active",
                                   configuration={"strategy": strategy, "errorHandling": "stop"}, created_by=owner)
        session.add(workflow)
        await session.flush()
        return workflow.id
