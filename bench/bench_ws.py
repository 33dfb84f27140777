"""WebSocket delivery: many clients subscribed to task rooms while task:progress
events are published; prints delivery latency p50/p99 and memory per connection.

``run(stack)`` / ``report(results)`` for ``python -m bench``; ``main()`` starts its
own stack and returns the results. Traffic stays on 127.0.0.1; bounded in count and time.
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

CLIENTS = int(os.environ.get("BENCH_WS_CLIENTS", "1000"))
CLIENTS_PER_TASK = 10
ROUNDS = int(os.environ.get("BENCH_WS_ROUNDS", "20"))
EVENTS_PER_SECOND = 200
TARGET_P99_MS = 50.0
DEADLINE_S = 300


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


def _ingress_pids() -> dict[str, int]:
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


def _rss(pids: dict[str, int]) -> dict[str, int]:
    import psutil

    return {k: psutil.Process(p).memory_info().rss for k, p in pids.items()}


async def _run(base_url: str) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from troupe.events.bus import publish
    from troupe.infra.redis import close_redis

    n_tasks = max(1, CLIENTS // CLIENTS_PER_TASK)
    n_users = max(1, math.ceil(CLIENTS / 10))
    tokens, tasks = await _seed(n_users, max(n_tasks, n_users))
    tasks = tasks[:n_tasks]
    ws_base = base_url.replace("http://", "ws://") + "/api/ws?token="
    pids = _ingress_pids()
    before = _rss(pids)
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []
    received = 0
    target: list[int] = []  # set once every event is published
    all_in = asyncio.Event()
    sockets = []

    async def reader(ws) -> None:
        nonlocal received
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if msg["type"] == "task:progress":
                    latencies.append((time.time() - msg["payload"]["metadata"]["sentAt"]) * 1000)
                    timeline.append((time.time(), latencies[-1]))
                    received += 1
                    if target and received >= target[0]:
                        all_in.set()
        except Exception:  # noqa: S110 - closed at the end of the run
            pass

    async def keepalive() -> None:
        # Clients must ping within WS_CONNECTION_TIMEOUT or the server closes them as idle.
        # Like real clients, each pings on its own clock: spread over the interval.
        interval = 15.0
        while True:
            await asyncio.sleep(interval / max(1, CLIENTS))
            for ws in list(sockets):
                with contextlib.suppress(Exception):
                    await ws.send('{"type":"ping","payload":{}}')
                await asyncio.sleep(interval / max(1, CLIENTS))

    pinger = asyncio.create_task(keepalive())
    started = time.monotonic()
    readers = []
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

    expected = 0
    interval = 1.0 / EVENTS_PER_SECOND
    publish_started = time.monotonic()
    for r in range(ROUNDS):
        for task_id in tasks:
            if time.monotonic() - started > DEADLINE_S:
                break
            await publish([f"task:{task_id}"], "task:progress", {
                "taskId": task_id, "progress": min(100, (r + 1) * 100 // ROUNDS), "status": "running",
                "metadata": {"sentAt": time.time()}})
            expected += sum(1 for i in range(CLIENTS) if tasks[i % len(tasks)] == task_id)
            await asyncio.sleep(interval)
    target.append(expected)
    if received >= expected:
        all_in.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), 15)
    publish_s = time.monotonic() - publish_started
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    pinger.cancel()
    for task in readers:
        task.cancel()
    await close_redis()
    if os.environ.get("BENCH_WS_TIMELINE"):
        t0 = timeline[0][0] if timeline else 0
        buckets: dict[int, list[float]] = {}
        for t, lat in timeline:
            buckets.setdefault(int((t - t0) * 4), []).append(lat)
        for b, lats in sorted(buckets.items()):
            print(f"t={b / 4:6.2f}s n={len(lats):5d} p50={_pct(lats, .5):8.1f} max={max(lats):8.1f}")
    per_conn = {k: (after[k] - before[k]) / CLIENTS for k in after}
    return {
        "clients": CLIENTS, "tasks": len(tasks), "events_published": ROUNDS * len(tasks),
        "deliveries_expected": expected, "deliveries_received": received,
        "p50_ms": round(_pct(latencies, 0.50), 2), "p99_ms": round(_pct(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "connect_seconds": round(connect_s, 2), "publish_seconds": round(publish_s, 2),
        "replica_bytes_per_connection": int(per_conn.get("replica", 0)),
        "proxy_bytes_per_connection": int(per_conn.get("proxy", 0)),
        "target_p99_ms": TARGET_P99_MS,
    }


def run(stack: dict[str, str]) -> dict[str, Any]:
    return asyncio.run(_run(stack["base_url"]))


def report(results: dict[str, Any]) -> list[str]:
    verdict = "meets" if results["p99_ms"] <= TARGET_P99_MS else "MISSES"
    return [
        f"WebSocket delivery: {results['clients']} clients on {results['tasks']} task rooms, "
        f"{results['events_published']} events, {results['deliveries_received']}/"
        f"{results['deliveries_expected']} deliveries",
        f"  latency p50 {results['p50_ms']} ms, p99 {results['p99_ms']} ms (max {results['max_ms']} ms); "
        f"{verdict} the p99 <= {TARGET_P99_MS:.0f} ms target",
        f"  memory per connection: replica {results['replica_bytes_per_connection'] / 1024:.1f} KiB, "
        f"Serve proxy {results['proxy_bytes_per_connection'] / 1024:.1f} KiB",
        f"  connecting took {results['connect_seconds']} s",
    ]


def main() -> dict[str, Any]:
    from bench.stack import troupe_stack

    with troupe_stack() as stack:
        results = run(stack)
    print("\n".join(report(results)), flush=True)
    return results


if __name__ == "__main__":
    main()
