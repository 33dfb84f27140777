"""Engine benchmarks: overhead of a workflow run, task throughput, agent actor scale.

1. Engine overhead: an N-node workflow of no-op nodes (``input`` nodes pass the
   run's input through; every node is one ``execute_node`` Ray task, recorded in
   ``task_executions``) as a chain and as a wide fan-out, run end to end through
   the API, vs the same graph as plain Ray tasks in the same cluster, vs Prefect
   (``.venv-prefect``, skipped with a note when missing).
2. Throughput: BENCH_TASKS minimal tasks created through ``POST /api/tasks/batch``
   and executed through ``POST /api/tasks/:id/execute``, to completion, vs the same
   graphs as plain Ray tasks.
3. Actor scale: BENCH_AGENTS agents inserted in bulk straight into Postgres, a
   random BENCH_AGENT_CALLS of them called through ``POST /api/agents/:id/test``
   (the AgentActor path); resident agent actors, their memory, activation and
   warm latency, and the ``max_resident_agents`` bound.

``run(stack)`` / ``report(results)`` for ``python -m bench``. Traffic stays on
127.0.0.1; every wait is bounded by BENCH_DEADLINE seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
NODES = int(os.environ.get("BENCH_NODES", "100"))
TASKS = int(os.environ.get("BENCH_TASKS", "1000"))
AGENTS = int(os.environ.get("BENCH_AGENTS", "10000"))
AGENT_CALLS = int(os.environ.get("BENCH_AGENT_CALLS", "1000"))
HTTP_CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
AGENT_CONCURRENCY = int(os.environ.get("BENCH_AGENT_CONCURRENCY", "8"))
# Runs the company may drive at once during the throughput benchmark (settings.maxConcurrency).
COMPANY_CONCURRENCY = int(os.environ.get("BENCH_COMPANY_CONCURRENCY", "50"))
DEADLINE_S = float(os.environ.get("BENCH_DEADLINE", "300"))
# Cold agent calls start only within this many seconds (each is a new Ray worker process: slow on 2 cores).
AGENT_BUDGET_S = float(os.environ.get("BENCH_AGENT_BUDGET", "180"))
BATCH_LIMIT = 1000  # TaskBatch.tasks max_length
NODE_CPUS = 0.05  # what execute_node asks for: plain Ray gets the same resources
TERMINAL = ("completed", "failed", "cancelled")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# ---------------------------------------------------------------- graphs
def _node(nid: str, type_: str) -> dict[str, Any]:
    return {"id": nid, "type": type_, "position": {"x": 0, "y": 0}, "data": {"label": nid, "configuration": {}}}


def _edge(source: str, target: str) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target, "type": "default"}


def chain_graph(n: int) -> tuple[list[dict], list[dict]]:
    """n nodes in a line: n-1 ``input`` pass-through nodes, then the ``output``."""
    ids = [f"n{i:04d}" for i in range(n)]
    nodes = [_node(nid, "output" if i == n - 1 else "input") for i, nid in enumerate(ids)]
    return nodes, [_edge(a, b) for a, b in zip(ids, ids[1:], strict=False)]


def fanout_graph(n: int) -> tuple[list[dict], list[dict]]:
    """input -> n-2 parallel pass-through nodes -> output (n nodes in all)."""
    mids = [f"p{i:04d}" for i in range(n - 2)]
    nodes = [_node("in", "input"), *(_node(m, "input") for m in mids), _node("out", "output")]
    return nodes, [*(_edge("in", m) for m in mids), *(_edge(m, "out") for m in mids)]


# ---------------------------------------------------------------- plain Ray baseline
def _ray_tasks(cpus: float) -> tuple[Any, Any]:
    """Defined in a function so cloudpickle ships them by value (workers need not import ``bench``)."""
    import ray

    @ray.remote(num_cpus=cpus)
    def noop(value: Any) -> Any:
        return value

    @ray.remote(num_cpus=cpus)
    def gather(*values: Any) -> int:
        return len(values)

    return noop, gather


def ray_chain(n: int, cpus: float) -> float:
    import ray

    noop, _ = _ray_tasks(cpus)
    started = time.perf_counter()
    ref = noop.remote({"x": 1})
    for _ in range(n - 1):
        ref = noop.remote(ref)
    ray.get(ref)
    return time.perf_counter() - started


def ray_fanout(n: int, cpus: float) -> float:
    import ray

    noop, gather = _ray_tasks(cpus)
    started = time.perf_counter()
    source = noop.remote({"x": 1})
    assert ray.get(gather.remote(*[noop.remote(source) for _ in range(n - 2)])) == n - 2
    return time.perf_counter() - started


def ray_many(tasks: int, per_task: int, cpus: float) -> tuple[int, float]:
    """``tasks`` independent chains of ``per_task`` no-op tasks, all submitted at once;
    returns (chains finished within BENCH_DEADLINE, seconds)."""
    import ray

    noop, _ = _ray_tasks(cpus)
    started = time.perf_counter()
    refs = []
    for i in range(tasks):
        ref = noop.remote({"i": i})
        for _ in range(per_task - 1):
            ref = noop.remote(ref)
        refs.append(ref)
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=DEADLINE_S)
    return len(ready), time.perf_counter() - started


def prefect_baseline() -> dict[str, Any]:
    python = ROOT / ".venv-prefect" / "bin" / "python"
    if not python.exists():
        return {"skipped": f"{python.relative_to(ROOT)} is missing (make bench creates it)"}
    try:
        proc = subprocess.run([str(python), str(ROOT / "bench" / "baseline_prefect.py")], capture_output=True,
                              text=True, timeout=DEADLINE_S, env={**os.environ, "BENCH_NODES": str(NODES)})
    except subprocess.TimeoutExpired:
        return {"skipped": f"Prefect baseline did not finish in {DEADLINE_S:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"skipped": f"Prefect baseline failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------- seeding (straight into Postgres)
async def _seed_owner() -> tuple[uuid.UUID, dict[str, str]]:
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import access_claims, create_access_token, hash_password

    tag = uuid.uuid4().hex[:8]
    async with session_scope() as session:
        user = models.User(email=f"bench-engine-{tag}@example.com", username=f"bench_engine_{tag}",
                           password_hash=await hash_password(uuid.uuid4().hex), first_name="Bench",
                           last_name="Engine", role="user", status="active", email_verified=True, profile={},
                           preferences={})
        session.add(user)
        await session.flush()
        token, _ = create_access_token(access_claims(user_id=str(user.id), email=user.email, username=user.username,
                                                     role="user", companies=[], token_version=0))
        return user.id, {"Authorization": f"Bearer {token}"}


async def _seed_company(owner: uuid.UUID, label: str, max_concurrency: int) -> uuid.UUID:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        company = models.Company(name=f"bench {label} {uuid.uuid4().hex[:6]}", type="startup", owner_id=owner,
                                 status="active", team_members=[], member_roles={}, metrics={},
                                 settings={"maxConcurrency": max_concurrency})
        session.add(company)
        await session.flush()
        return company.id


async def _seed_workflow(owner: uuid.UUID, company: uuid.UUID, name: str, nodes: list[dict], edges: list[dict],
                         strategy: str) -> uuid.UUID:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        workflow = models.Workflow(name=name, company_id=company, nodes=nodes, edges=edges, status="active",
                                   configuration={"strategy": strategy, "errorHandling": "stop"}, created_by=owner)
        session.add(workflow)
        await session.flush()
        return workflow.id


# ---------------------------------------------------------------- 1. engine overhead
async def _wait_task(client: httpx.AsyncClient, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        response = await client.get(f"/api/tasks/{task_id}", headers=headers)
        response.raise_for_status()
        task = response.json()["data"]
        if task["status"] in TERMINAL:
            return task
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} still {task['status']} after {DEADLINE_S:.0f} s (progress "
                               f"{task.get('progress')}, step {task.get('currentStep')})")
        await asyncio.sleep(0.05)


async def _completed_rows(task_id: str) -> int:
    from sqlalchemy import func, select

    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        return int(await session.scalar(select(func.count()).select_from(models.TaskExecution).where(
            models.TaskExecution.task_id == uuid.UUID(task_id), models.TaskExecution.status == "completed")) or 0)


async def _troupe_run(client: httpx.AsyncClient, headers: dict[str, str], workflow: uuid.UUID) -> dict[str, Any]:
    started = time.perf_counter()
    response = await client.post(f"/api/workflows/{workflow}/execute", headers=headers, json={"input": {"x": 1}})
    if response.status_code != 202:
        raise RuntimeError(f"execute refused: {response.status_code} {response.text}")
    task = await _wait_task(client, headers, response.json()["data"]["id"])
    wall = time.perf_counter() - started
    if task["status"] != "completed":
        raise RuntimeError(f"run {task['id']} ended {task['status']}: {task.get('error')}")
    return {"wall_s": wall, "server_ms": (task.get("metadata") or {}).get("performance", {}).get("totalTime"),
            "rows": await _completed_rows(task["id"])}


async def overhead(client: httpx.AsyncClient, headers: dict[str, str], owner: uuid.UUID) -> dict[str, Any]:
    company = await _seed_company(owner, "overhead", 5)
    chain_wf = await _seed_workflow(owner, company, "bench chain", *chain_graph(NODES), "sequential")
    fan_wf = await _seed_workflow(owner, company, "bench fan-out", *fanout_graph(NODES), "parallel")
    warm_wf = await _seed_workflow(owner, company, "bench warm-up", *fanout_graph(min(NODES, 20)), "parallel")
    # Warm-up: actor activation and worker processes for both sides, not timed.
    await _troupe_run(client, headers, warm_wf)
    for cpus in (NODE_CPUS, 1):
        await asyncio.to_thread(ray_fanout, NODES, cpus)
        await asyncio.to_thread(ray_chain, NODES, cpus)
    results: dict[str, Any] = {"troupe": {}, "ray": {}, "ray_default": {}}
    for shape, workflow, baseline in (("chain", chain_wf, ray_chain), ("fanout", fan_wf, ray_fanout)):
        results["troupe"][shape] = await _troupe_run(client, headers, workflow)
        results["ray"][shape] = await asyncio.to_thread(baseline, NODES, NODE_CPUS)
        results["ray_default"][shape] = await asyncio.to_thread(baseline, NODES, 1)
    results["prefect"] = await asyncio.to_thread(prefect_baseline)
    return results


# ---------------------------------------------------------------- 2. throughput
async def _count(client: httpx.AsyncClient, headers: dict[str, str], company: uuid.UUID, status: str) -> int:
    response = await client.get("/api/tasks", headers=headers,
                                params={"companyId": str(company), "status": status, "limit": 1})
    response.raise_for_status()
    return int(response.json()["pagination"]["total"])


async def throughput(client: httpx.AsyncClient, headers: dict[str, str], owner: uuid.UUID) -> dict[str, Any]:
    company = await _seed_company(owner, "throughput", COMPANY_CONCURRENCY)
    nodes, edges = chain_graph(2)  # the smallest runnable workflow: input -> output
    workflow = await _seed_workflow(owner, company, "bench minimal", nodes, edges, "sequential")
    started = time.perf_counter()
    ids: list[str] = []
    for offset in range(0, TASKS, BATCH_LIMIT):
        items = [{"name": f"bench {i}", "type": "workflow", "companyId": str(company), "workflowId": str(workflow),
                  "input": {"i": i}} for i in range(offset, min(TASKS, offset + BATCH_LIMIT))]
        response = await client.post("/api/tasks/batch", headers=headers, json={"tasks": items})
        if response.status_code != 201:
            raise RuntimeError(f"batch refused: {response.status_code} {response.text[:500]}")
        data = response.json()["data"]
        ids += [t["id"] for t in (data["tasks"] if isinstance(data, dict) else data)]
    created = time.perf_counter() - started
    pending = list(ids)
    deadline = time.monotonic() + DEADLINE_S
    executed: list[str] = []

    async def executor() -> None:
        while pending and time.monotonic() < deadline:
            task_id = pending.pop()
            executed.append(task_id)
            response = await client.post(f"/api/tasks/{task_id}/execute", headers=headers, json={})
            if response.status_code != 202:
                raise RuntimeError(f"execute refused: {response.status_code} {response.text[:300]}")

    await asyncio.gather(*(executor() for _ in range(HTTP_CONCURRENCY)))
    submitted = time.perf_counter() - started
    done = failed = 0
    while True:
        done = await _count(client, headers, company, "completed")
        failed = await _count(client, headers, company, "failed")
        if done + failed >= len(executed) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    elapsed = time.perf_counter() - started
    ray_a = await asyncio.to_thread(ray_many, len(ids), len(nodes), NODE_CPUS)
    ray_b = await asyncio.to_thread(ray_many, len(ids), len(nodes), 1)
    ray_single = await asyncio.to_thread(ray_many, len(ids), 1, 1)
    return {"tasks": len(ids), "completed": done, "failed": failed, "create_s": created, "submit_s": submitted,
            "troupe_s": elapsed, "executed": len(executed), "finished": done + failed >= len(ids), "ray_a": ray_a, "ray_b": ray_b,
            "ray_single": ray_single, "nodes_per_task": len(nodes)}


# ---------------------------------------------------------------- 3. actor scale
def _agent_actors() -> list[dict[str, Any]]:
    """Alive ``agent:`` actors of this cluster, with their pids (GCS actor table; no dashboard needed)."""
    from ray._private import state

    table = state.actors(actor_state_name="ALIVE")
    return [{"name": a["Name"], "pid": a["Pid"]} for a in table.values() if str(a.get("Name", "")).startswith("agent:")]


def _memory(pids: list[int]) -> dict[str, int]:
    import psutil

    rss = uss = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        uss += info.uss
    return {"rss": rss, "uss": uss, "processes": len(pids)}


async def _seed_agents(owner: uuid.UUID, company: uuid.UUID, count: int) -> list[uuid.UUID]:
    from sqlalchemy import insert

    from troupe.db import models
    from troupe.db.session import session_scope

    ids = [uuid.uuid4() for _ in range(count)]
    for offset in range(0, count, 2000):
        rows = [{"id": aid, "name": f"bench agent {offset + i}", "type": "assistant", "model": "sim-1",
                 "provider": "simulated", "configuration": {}, "performance": {}, "company_id": company,
                 "created_by": owner} for i, aid in enumerate(ids[offset:offset + 2000])]
        async with session_scope() as session:
            await session.execute(insert(models.Agent), rows)
    return ids


async def actor_scale(client: httpx.AsyncClient, headers: dict[str, str], owner: uuid.UUID) -> dict[str, Any]:
    from troupe.config import get_settings

    bound = get_settings().max_resident_agents
    company = await _seed_company(owner, "agents", 5)
    started = time.perf_counter()
    agents = await _seed_agents(owner, company, AGENTS)
    seeded_s = time.perf_counter() - started
    chosen = random.Random(42).sample(agents, min(AGENT_CALLS, len(agents)))
    peak = {"actors": 0}
    stop = threading.Event()

    def sampler() -> None:  # the bound must hold throughout, not only at the end
        while not stop.wait(1.0):
            peak["actors"] = max(peak["actors"], len(_agent_actors()))

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()

    async def call(agent_id: uuid.UUID) -> float:
        t0 = time.perf_counter()
        response = await client.post(f"/api/agents/{agent_id}/test", headers=headers, json={"input": "ping"})
        if response.status_code != 200:
            raise RuntimeError(f"agent test failed: {response.status_code} {response.text[:300]}")
        return (time.perf_counter() - t0) * 1000

    async def calls(ids: list[uuid.UUID], budget_s: float) -> list[tuple[uuid.UUID, float]]:
        """Calls each id once with bounded concurrency; no new call starts after ``budget_s``."""
        queue = list(reversed(ids))
        out: list[tuple[uuid.UUID, float]] = []
        stop_at = time.monotonic() + budget_s

        async def worker() -> None:
            while queue and time.monotonic() < stop_at:
                agent_id = queue.pop()
                out.append((agent_id, await call(agent_id)))

        await asyncio.gather(*(worker() for _ in range(AGENT_CONCURRENCY)))
        return out

    try:
        t0 = time.perf_counter()
        cold = await calls(chosen, AGENT_BUDGET_S)
        cold_s = time.perf_counter() - t0
        # The most recently activated agents are still resident: a second call to them is warm.
        recent = [agent_id for agent_id, _ in cold[-min(len(cold), max(1, bound // 2), 100):]]
        warm = await calls(recent, DEADLINE_S)
    finally:
        stop.set()
        await asyncio.to_thread(watcher.join)
    await asyncio.sleep(2)  # evictions are asked asynchronously; let them settle before counting
    actors = _agent_actors()
    peak["actors"] = max(peak["actors"], len(actors))
    from troupe.actors.residency import resident_count

    return {"agents": len(agents), "seeded_s": seeded_s, "planned": len(chosen), "calls": len(cold),
            "cold_s": cold_s, "cold_ms": [ms for _, ms in cold], "warm_ms": [ms for _, ms in warm], "resident": len(actors), "peak": peak["actors"], "registry": await resident_count(),
            "bound": bound, "memory": _memory([a["pid"] for a in actors])}


# ---------------------------------------------------------------- entry points
async def _run(base_url: str, selected: list[str]) -> dict[str, Any]:
    from troupe.db.session import get_engine
    from troupe.infra.redis import close_redis

    owner, headers = await _seed_owner()
    results: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
            for name, bench in (("overhead", overhead), ("throughput", throughput), ("agents", actor_scale)):
                if selected and name not in selected:
                    continue
                print(f"  engine: {name} ...", flush=True)
                try:
                    results[name] = await bench(client, headers, owner)
                except Exception as exc:  # one failing benchmark still lets the others report
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await close_redis()
        await get_engine().dispose()
    return results


def run(stack: dict[str, str]) -> dict[str, Any]:
    # BENCH_ENGINE_ONLY=overhead,throughput,agents runs a subset (empty: all three).
    selected = [s for s in os.environ.get("BENCH_ENGINE_ONLY", "").split(",") if s]
    return asyncio.run(_run(stack["base_url"], selected))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def _report_overhead(r: dict[str, Any]) -> list[str]:
    lines = [f"Engine overhead ({NODES}-node workflow of no-op nodes; chain: sequential, fan-out: input -> "
             f"{NODES - 2} parallel -> output; one warm-up run each side first)",
             f"  plain Ray A: the same graph as Ray tasks asking num_cpus={NODE_CPUS} like execute_node does; "
             "plain Ray B: default num_cpus=1"]
    if "error" in r:
        return lines + [f"  FAILED: {r['error']}"]
    prefect = r["prefect"]
    for shape, label in (("chain", "chain  "), ("fanout", "fan-out")):
        troupe, ray_a, ray_b = r["troupe"][shape]["wall_s"], r["ray"][shape], r["ray_default"][shape]
        lines.append(f"  {label}: Troupe {troupe:7.2f} s (API call to completed, {r['troupe'][shape]['rows']} "
                     f"completed task_executions rows, server totalTime {r['troupe'][shape]['server_ms']} ms)")
        line = (f"           plain Ray A {ray_a:6.3f} s (Troupe/Ray {_ratio(troupe, ray_a)}) | plain Ray B {ray_b:6.3f} s "
                f"(Troupe/Ray {_ratio(troupe, ray_b)})")
        if "skipped" not in prefect:
            line += f" | Prefect {prefect[f'{shape}_s']:6.2f} s (Troupe/Prefect {_ratio(troupe, prefect[f'{shape}_s'])})"
        lines.append(line)
    if "skipped" in prefect:
        lines.append(f"  Prefect baseline skipped: {prefect['skipped']}")
    troupe_fan = r["troupe"]["fanout"]["wall_s"]
    for label, ray_s in (("A", r["ray"]["fanout"]), ("B", r["ray_default"]["fanout"])):
        ratio = troupe_fan / ray_s if ray_s else float("inf")
        lines.append(f"  target fan-out <= 1.5x plain Ray {label}: {'MET' if ratio <= 1.5 else 'NOT MET'} "
                     f"({ratio:.1f}x)")
    return lines


def _report_throughput(r: dict[str, Any]) -> list[str]:
    lines = [f"Throughput ({TASKS} tasks through POST /api/tasks/batch + POST /api/tasks/:id/execute, each the "
             f"smallest runnable workflow input -> output; company maxConcurrency {COMPANY_CONCURRENCY}, "
             f"{HTTP_CONCURRENCY} concurrent clients)"]
    if "error" in r:
        return lines + [f"  FAILED: {r['error']}"]
    troupe_rate = r["completed"] / r["troupe_s"] if r["troupe_s"] else 0.0
    rate_a, rate_b, rate_single = (done / seconds for done, seconds in (r["ray_a"], r["ray_b"], r["ray_single"]))
    lines += [
        f"  Troupe : {r['completed']}/{r['tasks']} completed ({r['failed']} failed) in {r['troupe_s']:.1f} s = "
        f"{troupe_rate:.1f} tasks/s (batch create {r['create_s']:.2f} s, all executes accepted at "
        f"{r['submit_s']:.1f} s)" + ("" if r["finished"] else f"; BENCH_DEADLINE {DEADLINE_S:.0f} s reached with "
                                   f"{r['executed']} executed"),
        f"  plain Ray, same graphs ({r['nodes_per_task']} chained no-op tasks each): A (num_cpus={NODE_CPUS}) "
        f"{rate_a:.1f} tasks/s, B (num_cpus=1) {rate_b:.1f} tasks/s; {r['tasks']} single no-op tasks "
        f"{rate_single:.1f} tasks/s",
    ]
    for label, rate in (("A", rate_a), ("B", rate_b)):
        lines.append(f"  Troupe/plain Ray {label}: {troupe_rate / rate * 100:.1f} % "
                     f"(target >= 50 %: {'MET' if troupe_rate >= 0.5 * rate else 'NOT MET'})")
    return lines


def _report_agents(r: dict[str, Any]) -> list[str]:
    lines = [f"Actor scale ({AGENTS} agents inserted in bulk straight into Postgres, not through the HTTP API; "
             f"{AGENT_CALLS} random ones called through POST /api/agents/:id/test -> AgentActor, "
             f"{AGENT_CONCURRENCY} concurrent, new calls only within {AGENT_BUDGET_S:.0f} s)"]
    if "error" in r:
        return lines + [f"  FAILED: {r['error']}"]
    mem = r["memory"]
    held = r["peak"] <= r["bound"]
    lines += [
        f"  seeded {r['agents']} agents in {r['seeded_s']:.2f} s; {r['calls']} of {r['planned']} cold calls done in "
        f"{r['cold_s']:.1f} s ({r['calls'] / r['cold_s']:.2f} activations/s)"
        + ("" if r["calls"] == r["planned"] else " (time budget reached: BENCH_AGENT_BUDGET)"),
        f"  activation latency (first call to a cold agent, HTTP round trip): p50 {_pct(r['cold_ms'], 0.5):.0f} ms, "
        f"p99 {_pct(r['cold_ms'], 0.99):.0f} ms",
        f"  warm call latency ({len(r['warm_ms'])} calls to resident agents): p50 "
        f"{_pct(r['warm_ms'], 0.5):.1f} ms, p99 {_pct(r['warm_ms'], 0.99):.1f} ms",
        f"  resident agent actors at the end: {r['resident']} (Redis residency registry {r['registry']}), bound "
        f"max_resident_agents={r['bound']}: {'held' if r['resident'] <= r['bound'] else 'EXCEEDED'} at the end; "
        f"peak sampled each second {r['peak']}: " + ("held throughout" if held else
                                                     "transient overshoot (evictions are asked asynchronously "
                                                     "and only idle agents leave)"),
        f"  memory of the resident agent actor processes: RSS {mem['rss'] / 2**20:.0f} MiB, USS "
        f"{mem['uss'] / 2**20:.0f} MiB over {mem['processes']} processes "
        f"({mem['uss'] / max(1, mem['processes']) / 2**20:.1f} MiB USS each; at the bound of {r['bound']} that is "
        f"~{mem['uss'] / max(1, mem['processes']) * r['bound'] / 2**30:.1f} GiB)",
    ]
    if r["calls"] <= r["bound"]:
        lines.append(f"  note: only {r['calls']} activations, not more than the bound, so eviction was not exercised "
                     "(raise BENCH_AGENT_BUDGET or lower TROUPE_MAX_RESIDENT_AGENTS)")
    return lines


def report(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, fn in (("overhead", _report_overhead), ("throughput", _report_throughput),
                     ("agents", _report_agents)):
        if name in results:
            lines += fn(results[name]) + [""]
    return lines[:-1]
