"""Faults on real Ray: a node's worker process killed, an AgentActor killed mid-call,
the run's driver (its CompanyActor) killed. Each run completes with exactly one
completed execution row per executed node."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import ray

from tests.utils.engine import (
    chain,
    completed_once,
    executions,
    make_agent,
    make_company,
    make_workflow,
    node,
    run_workflow,
    wait_status,
)
from troupe.events.bus import read_since


async def _running_node_pid(name_prefix: str, wait_s: float = 15) -> int:
    """A worker executing a task titles its process ``ray::<task name>``."""
    import psutil

    def scan() -> int | None:
        for proc in psutil.process_iter(["cmdline"]):
            if any(f"ray::{name_prefix}" in part for part in proc.info["cmdline"] or []):
                return proc.pid
        return None

    deadline = asyncio.get_running_loop().time() + wait_s
    while asyncio.get_running_loop().time() < deadline:
        pid = await asyncio.to_thread(scan)
        if pid:
            return pid
        await asyncio.sleep(0.1)
    raise AssertionError("node task never seen running")


async def test_killed_worker_is_retried_by_ray(client, user):
    company = await make_company(user.id)
    wf = await make_workflow(company, user.id, [node("in", "input"), node("slow", "delay", seconds=1.5),
                                                node("out", "output", value="survived")], chain("in", "slow", "out"))
    task_id = await run_workflow(client, user, company, wf, {})
    pid = await _running_node_pid(f"node:{task_id}:slow")
    os.kill(pid, signal.SIGKILL)
    task = await wait_status(client, user, task_id, timeout=60)
    assert task["status"] == "completed" and task["output"] == "survived"
    rows = await executions(client, user, task_id)
    assert set(completed_once(rows)) == {("in", 0), ("slow", 0), ("out", 0)}
    slow = [r for r in rows if r["nodeId"] == "slow" and r["status"] == "completed"][0]
    assert slow["metadata"]["pid"] != pid  # finished on another worker


async def test_killed_agent_actor_mid_call_is_reactivated(client, user):
    company = await make_company(user.id)
    agent = await make_agent(company, user.id)
    wf = await make_workflow(company, user.id, [node("in", "input"),
                                                node("ask", "agent", agentId=agent, simulatedLatencyMs=1500),
                                                node("out", "output")], chain("in", "ask", "out"))
    task_id = await run_workflow(client, user, company, wf, {"q": 1})
    await _running_node_pid(f"node:{task_id}:ask")
    from troupe.actors.pool import bound_actor

    bound = None
    for _ in range(100):  # the node task's first call binds a pooled actor to the agent
        bound = await bound_actor(agent)
        if bound is not None:
            break
        await asyncio.sleep(0.1)
    assert bound is not None
    slot, actor = bound
    await asyncio.sleep(0.3)  # inside the 1.5 s simulated call
    ray.kill(actor, no_restart=True)
    task = await wait_status(client, user, task_id, timeout=60)
    assert task["status"] == "completed", task
    assert task["output"]["text"].startswith("[simulated]")
    completed_once(await executions(client, user, task_id))
    rebound = await bound_actor(agent)
    assert rebound is not None and rebound[0] != slot  # served again by a fresh actor


async def test_killed_driver_is_recovered_without_rerunning_completed_nodes(client, user):
    company = await make_company(user.id)
    nodes = [node("in", "input")] + [node(f"s{i}", "delay", seconds=0.6) for i in range(4)] + [
        node("out", "output", value="recovered")]
    wf = await make_workflow(company, user.id, nodes, chain("in", "s0", "s1", "s2", "s3", "out"),
                             strategy="sequential")
    task_id = await run_workflow(client, user, company, wf, {})
    for _ in range(200):  # poll until s1 has completed
        if any(r["nodeId"] == "s1" and r["status"] == "completed" for r in await executions(client, user, task_id)):
            break
        await asyncio.sleep(0.1)
    before = {r["nodeId"]: r["id"] for r in await executions(client, user, task_id) if r["status"] == "completed"}
    ray.kill(ray.get_actor(f"company:{company}", namespace="troupe"), no_restart=True)
    task = await wait_status(client, user, task_id, timeout=60)
    assert task["status"] == "completed" and task["output"] == "recovered"
    rows = await executions(client, user, task_id)
    after = {r["nodeId"]: r["id"] for r in rows if r["status"] == "completed"}
    assert set(completed_once(rows)) == {(n, 0) for n in ("in", "s0", "s1", "s2", "s3", "out")}
    for nid, row_id in before.items():
        assert after[nid] == row_id  # completed before the kill: reused, never executed again
    logs = [entry["message"] for entry in (await client.get(f"/api/tasks/{task_id}/logs?limit=100",
                                                            headers=user.headers)).json()["data"]]
    assert any("previous driver lost" in m for m in logs)
    # Administrators are told, on the admin room's stream (what an admin socket receives).
    alerts = [json.loads(data) for _, data, _ in await read_since(["admin"], "0-0")]
    assert any(a["type"] == "system:alert" and f"company:{company}" in a["payload"]["affectedServices"]
               and a["payload"]["source"] == "engine" for a in alerts)
