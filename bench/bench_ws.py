"""WebSocket delivery: many clients subscribed to task rooms while task:progress
events are published; prints delivery latency p50/p99 and memory per connection.

The same load runs three times in one run: through Serve's proxy (proxy ->
replica over Ray), straight to the ingress replica's own listener (Serve's
direct ingress, what a load balancer in front of the replicas uses), and
against the same FastAPI app under plain uvicorn (the baseline), so the ratios
isolate Serve's hops. Events go through ``troupe.events.bus.publish``, the call
the engine makes for every state change (stream append + announcement).

The load is a ladder of publish rates, each held for a few seconds: latency is
reported per rate, so a number measured at saturation is never mistaken for one
measured under a sustainable load. Clients ping on their own clocks, as real ones do.

``run(stack)`` / ``report(results)`` for ``python -m bench``; ``main()`` starts its
own stack. Traffic stays on 127.0.0.1; bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
import uuid
from typing import Any

from bench.stack import plain_uvicorn

CLIENTS = int(os.environ.get("BENCH_WS_CLIENTS", "1000"))
CLIENTS_PER_TASK = 10
# Events per second across all task rooms; each event reaches CLIENTS_PER_TASK sockets.
RATES = [int(r) for r in os.environ.get("BENCH_WS_RATES", "50,100,200").split(",")]
STEP_SECONDS = float(os.environ.get("BENCH_WS_STEP_SECONDS", "8"))
PING_INTERVAL_S = 25.0
TARGET_P99_MS = 50.0
TARGET_RATE = 100  # the rate the target is judged at: 100 tasks each reporting once a second


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def _seed(n_users: int, n_tasks: int) -> tuple[list[str], list[str]]:
    """Users (tokens) and one company per user holding its tasks, straight in the database."""
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import access_claims, create_access_token, hash_password

    password_hash = await hash_password(uuid.uuid4().hex)  # one bcrypt, shared: these users never log in
    tokens: list[str] = []
    tasks: list[str] = []
    async with session_scope() as session:
        for u in range(n_users):
            tag = uuid.uuid4().hex[:8]
            user = models.User(email=f"bench{u}-{tag}@example.com", username=f"bench{u}_{tag}",
                               password_hash=password_hash, first_name="Bench", last_name=str(u), role="user",
                               status="active", email_verified=True, profile={}, preferences={})
            session.add(user)
            await session.flush()
            company = models.Company(name=f"Bench {tag}", type="software", owner_id=user.id, team_members=[],
                                     member_roles={}, settings={}, metrics={})
            session.add(company)
            await session.flush()
            for _ in range(n_tasks // n_users):
                task = models.Task(name="bench", type="bench", company_id=company.id, created_by=user.id,
                                   run_state={})
                session.add(task)
                await session.flush()
                tasks.append(str(task.id))
            token, _ = create_access_token(access_claims(user_id=str(user.id), email=user.email,
                                                         username=user.username, role="user", companies=[],
                                                         token_version=0))
            tokens.append(token)
    return tokens, tasks


def _serve_pids() -> dict[str, int]:
    """Pids of this stack's ingress replica and Serve proxy (asked of the actors
    themselves: several Ray instances may share the machine)."""
    import ray

    pids: dict[str, int] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        kind = "replica" if "SERVE_REPLICA::troupe#ApiIngress" in name else (
            "proxy" if name.startswith("SERVE_PROXY_ACTOR") else None)
        if kind is None or kind in pids:
            continue
        handle = ray.get_actor(name, namespace=entry["namespace"])
        pids[kind] = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()), timeout=30)
    return pids


def _haproxy_pid() -> int | None:
    """This cluster's HAProxy (Serve keeps its files under a directory named after the node)."""
    import psutil
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "haproxy" and any(node_id in part for part in proc.info["cmdline"] or ()):
            return proc.pid
    return None


def _rss(pids: dict[str, int]) -> dict[str, int]:
    import psutil

    return {k: psutil.Process(p).memory_info().rss for k, p in pids.items()}


async def _load(base_url: str, tokens: list[str], tasks: list[str], pids: dict[str, int]) -> dict[str, Any]:
    """Connect every client, then publish at each rate of the ladder."""
    from websockets.asyncio.client import connect

    from troupe.events.bus import publish

    ws_base = base_url.replace("http://", "ws://") + "/api/ws?token="
    before = _rss(pids)
    sockets: list[Any] = []
    # Per step: latencies (ms) of the deliveries of events published in that step.
    latencies: dict[int, list[float]] = {}
    expected_by_step: dict[int, int] = {}
    step_done: dict[int, asyncio.Event] = {}
    closed_codes: dict[int | None, int] = {}

    async def reader(ws) -> None:
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "task:progress":
                    meta = msg["payload"]["metadata"]
                    got = latencies.setdefault(meta["step"], [])
                    got.append((time.time() - meta["sentAt"]) * 1000)
                    if len(got) >= expected_by_step.get(meta["step"], math.inf):
                        step_done[meta["step"]].set()
        except Exception as exc:  # noqa: BLE001 - record how the socket ended
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            closed_codes[code] = closed_codes.get(code, 0) + 1

    async def keepalive() -> None:
        # Clients must ping within WS_CONNECTION_TIMEOUT or the server closes them as idle.
        while True:
            await asyncio.sleep(PING_INTERVAL_S / max(1, CLIENTS))
            for ws in list(sockets):
                with contextlib.suppress(Exception):
                    await ws.send('{"type":"ping","payload":{}}')
                await asyncio.sleep(PING_INTERVAL_S / max(1, CLIENTS))

    pinger = asyncio.create_task(keepalive())
    readers = []
    started = time.monotonic()
    for i in range(CLIENTS):
        ws = await connect(ws_base + tokens[i % len(tokens)], open_timeout=60, ping_interval=None)
        await ws.recv()  # connection:status
        await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {
            "events": ["task:progress"], "filters": {"taskId": tasks[i % len(tasks)]}}}))
        await ws.recv()  # the subscribe ack
        sockets.append(ws)
        readers.append(asyncio.create_task(reader(ws)))
    connect_s = time.monotonic() - started
    await asyncio.sleep(2)
    after = _rss(pids)

    steps = []
    for step, rate in enumerate(RATES):
        # Paced by the clock, not by sleeping after each publish, so a slow publish
        # does not quietly lower the rate; the achieved rate is reported.
        interval = 1.0 / rate
        n_events = int(rate * STEP_SECONDS)
        expected = n_events * CLIENTS_PER_TASK
        expected_by_step[step], step_done[step] = expected, asyncio.Event()
        t0 = time.monotonic()
        for n in range(n_events):
            task_id = tasks[n % len(tasks)]
            await publish([f"task:{task_id}"], "task:progress", {
                "taskId": task_id, "progress": n * 100 // n_events, "status": "running",
                "metadata": {"sentAt": time.time(), "step": step}})
            delay = t0 + (n + 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elapsed = time.monotonic() - t0
        if len(latencies.get(step, ())) < expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(step_done[step].wait(), 15)
        got = latencies.get(step, [])
        steps.append({"rate": rate, "achieved_rate": round(n_events / elapsed, 1),
                      "deliveries_per_second": round(expected / elapsed), "expected": expected,
                      "received": len(got), "p50_ms": round(_pct(got, 0.50), 2),
                      "p99_ms": round(_pct(got, 0.99), 2), "max_ms": round(max(got), 2) if got else None})
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    pinger.cancel()
    for task in readers:
        task.cancel()
    return {"steps": steps, "connect_seconds": round(connect_s, 2), "abnormal_closes": {
                str(k): v for k, v in closed_codes.items() if k not in (1000, 1001)},
            "bytes_per_connection": {k: int((after[k] - before[k]) / CLIENTS) for k in after}}


def _direct_ingress_url() -> str | None:
    """The ingress replica's own HTTP listener (Serve direct ingress, on in Serve's
    throughput mode): where Serve's HAProxy front door, or any load balancer fed
    from Serve's target groups, sends traffic."""
    import ray
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    # As the proxy manager sees them: the replicas, even when HAProxy fronts them.
    groups = ray.get(controller.get_target_groups.remote("troupe", True), timeout=30)
    for group in groups:
        if str(group.protocol).endswith("HTTP"):
            for target in group.targets:
                if "SERVE_REPLICA" in target.name:
                    return f"http://127.0.0.1:{target.port}"
    return None


async def _run(stack: dict[str, str]) -> dict[str, Any]:
    from troupe.infra.redis import close_redis

    n_tasks = max(1, CLIENTS // CLIENTS_PER_TASK)
    n_users = max(1, math.ceil(CLIENTS / 10))
    tokens, tasks = await _seed(n_users, max(n_tasks, n_users))
    tasks = tasks[:n_tasks]
    results: dict[str, Any] = {"clients": CLIENTS, "tasks": len(tasks), "front_door": (
        "Serve HAProxy" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "Serve proxy actor")}
    try:
        pids = _serve_pids()
        haproxy = _haproxy_pid()
        if haproxy is not None:
            pids["haproxy"] = haproxy
        results["serve"] = await _load(stack["base_url"], tokens, tasks, pids)
        direct = _direct_ingress_url()
        if direct is not None:
            results["direct"] = await _load(direct, tokens, tasks, {"replica": pids["replica"]})
        with plain_uvicorn(stack) as (url, pid):
            results["uvicorn"] = await _load(url, tokens, tasks, {"uvicorn": pid})
    finally:
        await close_redis()
    return results


def run(stack: dict[str, str]) -> dict[str, Any]:
    return asyncio.run(_run(stack))


def report(results: dict[str, Any]) -> list[str]:
    plain = results["uvicorn"]
    paths = [(results["front_door"], "serve"), ("Serve direct ingress", "direct")]
    lines = [f"WebSocket delivery: {results['clients']} clients on {results['tasks']} task rooms "
             f"({CLIENTS_PER_TASK} per room), {STEP_SECONDS:.0f} s per rate; latency in ms, "
             "ratio = p99 / plain uvicorn's p99",
             "  path                  events/s  deliveries/s     p50      p99   received      ratio"]
    for label, key in [*paths, ("plain uvicorn", "uvicorn")]:
        if key not in results:
            lines.append(f"  {label}: not measured (no direct-ingress target published)")
            continue
        for s, p in zip(results[key]["steps"], plain["steps"], strict=True):
            lines.append(f"  {label:20s}  {s['achieved_rate']:8.0f}  {s['deliveries_per_second']:12d}  "
                         f"{s['p50_ms']:6.1f}  {s['p99_ms']:7.1f}  {s['received']:5d}/{s['expected']:<5d}  "
                         f"{s['p99_ms'] / p['p99_ms']:8.2f}x")
    for label, key in paths:
        judged = next((s for s in results.get(key, {}).get("steps", []) if s["rate"] == TARGET_RATE), None)
        if judged is not None:
            verdict = "meets" if judged["p99_ms"] <= TARGET_P99_MS else "MISSES"
            lines.append(f"  {label} at {TARGET_RATE} events/s: p99 {judged['p99_ms']} ms, {verdict} the "
                         f"p99 <= {TARGET_P99_MS:.0f} ms target")
    per = results["serve"]["bytes_per_connection"]
    front = "".join(f" + {name} {per[key] / 1024:.1f} KiB" for key, name in (
        ("haproxy", "HAProxy"), ("proxy", "proxy actor")) if key in per)
    lines.append(f"  memory per connection: Serve replica {per.get('replica', 0) / 1024:.1f} KiB{front}; plain uvicorn "
                 f"{plain['bytes_per_connection'].get('uvicorn', 0) / 1024:.1f} KiB")
    lines.append("  connecting all clients took " + ", ".join(
        f"{results[k]['connect_seconds']} s ({label})" for label, k in [*paths, ("plain uvicorn", "uvicorn")]
        if k in results))
    for label, key in [*paths, ("plain uvicorn", "uvicorn")]:
        if key in results and results[key]["abnormal_closes"]:
            lines.append(f"  {label}: sockets closed abnormally (code: count) {results[key]['abnormal_closes']}")
    return lines


def main() -> dict[str, Any]:
    from bench.stack import troupe_stack

    with troupe_stack() as stack:
        results = run(stack)
    print("\n".join(report(results)), flush=True)
    return results


if __name__ == "__main__":
    main()
