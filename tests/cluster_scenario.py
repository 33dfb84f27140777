"""Multi-node scenario, run in its own process by tests/test_engine_cluster.py
(``python -m tests.cluster_scenario``): it cannot share the pytest session's Ray.

A ``ray.cluster_utils.Cluster`` on this machine (head + 2 worker nodes offering
the custom resource ``worker``), the Troupe stack on it (own database, own Redis
prefix), node tasks pinned to the worker nodes (TROUPE_NODE_TASK_RESOURCES),
several workflow runs started through the API, one worker node removed while
they run. Prints one JSON line: what the test asserts on. Exit status 0 only if
every run completed with exactly one completed execution row per executed node.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

from troupe.infra import devstack

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".troupe" / "test"
RUNS = 4
FAN_OUT = 4
NODE_SECONDS = 2.0  # the longest delay run as a node task (PARK_AFTER_SECONDS): still running when the state API, ~1 s behind, reports it

RUN_ID = devstack.configure(kind="cluster", data_root=DATA)
os.environ["TROUPE_NODE_TASK_RESOURCES"] = json.dumps({"worker": 0.01})
os.environ.setdefault("TROUPE_ACTOR_IDLE_TIMEOUT", "30s")


def _workflow() -> tuple[list[dict], list[dict]]:
    """input -> FAN_OUT parallel delay nodes (each a node task of NODE_SECONDS) -> output."""
    def node(nid: str, type_: str, **config: object) -> dict:
        return {"id": nid, "type": type_, "position": {"x": 0, "y": 0},
                "data": {"label": nid, "configuration": config}}

    work = [f"w{i}" for i in range(FAN_OUT)]
    nodes = [node("input", "input")] + [node(w, "delay", seconds=NODE_SECONDS) for w in work] + \
        [node("output", "output", value={w: f"{{{{nodes.{w}.output.delayedSeconds}}}}" for w in work})]
    edges = [{"id": f"input-{w}", "source": "input", "target": w} for w in work] + \
        [{"id": f"{w}-output", "source": w, "target": "output"} for w in work]
    return nodes, edges


def _running_node_tasks() -> dict[str, int]:
    """Ray node id -> node-task attempts running there now (Ray's state API).
    Node tasks are named node:<task>:<node>:<iteration>:<attempt> (troupe/engine/driver.py)."""
    from ray.util.state import list_tasks

    counts: dict[str, int] = {}
    for t in list_tasks(filters=[("state", "=", "RUNNING")], detail=True, limit=10_000,
                        raise_on_missing_output=False):
        if t.name.startswith("node:") and t.node_id:
            counts[t.node_id] = counts.get(t.node_id, 0) + 1
    return counts


async def _scenario(base_url: str, cluster, workers) -> dict:
    import httpx
    from sqlalchemy import func, select

    from tests.utils.engine import make_company
    from tests.utils.fixtures import create_user
    from troupe.db import models
    from troupe.db.session import session_scope

    user = await create_user("user")
    company_id = await make_company(user.id, maxConcurrency=RUNS)
    nodes, edges = _workflow()
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=user.headers) as http:
        workflow = (await http.post("/api/workflows", json={
            "companyId": company_id, "name": "cluster", "status": "active", "nodes": nodes, "edges": edges,
            "configuration": {"strategy": "parallel", "timeout": 120}})).json()["data"]
        task_ids = []
        for i in range(RUNS):
            task = (await http.post("/api/tasks", json={"name": f"run-{i}", "type": "workflow",
                                                        "companyId": company_id, "workflowId": workflow["id"],
                                                        "input": {"i": i}})).json()["data"]
            response = await http.post(f"/api/tasks/{task['id']}/execute", json={})
            assert response.status_code == 202, response.text
            task_ids.append(uuid.UUID(task["id"]))

    ids = models.TaskExecution.task_id.in_(task_ids)
    # Remove a worker node while node tasks are running on it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with session_scope() as session:
            running = (await session.execute(select(func.count()).where(
                ids, models.TaskExecution.status == "running",
                models.TaskExecution.node_id.like("w%")))).scalar_one()
        if running >= 2:
            break
        await asyncio.sleep(0.1)
    # The victim is the worker node that Ray's own records show running node tasks
    # (the scheduler may have packed them all on one worker).
    victim = None
    for _ in range(100):
        running_on = await asyncio.to_thread(_running_node_tasks)
        victim = next((w for w in workers if running_on.get(w.node_id)), None)
        if victim is not None:
            break
        await asyncio.sleep(0.2)
    assert victim is not None, "no node task seen running on a worker node"
    removed_at = time.monotonic()
    cluster.remove_node(victim)

    # Ray needs a while to declare the node dead before it retries its tasks (and the
    # control actors that lived there are re-created): allow for that on a busy machine.
    deadline = time.monotonic() + 150
    while True:
        async with session_scope() as session:
            statuses = dict((await session.execute(select(models.Task.id, models.Task.status).where(
                models.Task.id.in_(task_ids)))).all())
        if all(s in ("completed", "failed", "cancelled") for s in statuses.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    async with session_scope() as session:
        rows = (await session.execute(select(models.TaskExecution.task_id, models.TaskExecution.node_id,
                                             models.TaskExecution.iteration, func.count()).where(
            ids, models.TaskExecution.status == "completed").group_by(
            models.TaskExecution.task_id, models.TaskExecution.node_id, models.TaskExecution.iteration))).all()
        attempts = (await session.execute(select(func.count()).where(ids))).scalar_one()
        pids = (await session.execute(select(func.count(func.distinct(
            models.TaskExecution.meta["pid"].as_string()))).where(ids))).scalar_one()
        outputs = dict((await session.execute(select(models.Task.id, models.Task.output).where(
            models.Task.id.in_(task_ids)))).all())
    completed_counts: dict[str, dict[str, int]] = {}
    for task_id, node_id, _iteration, count in rows:
        completed_counts.setdefault(str(task_id), {})[node_id] = count
    return {"statuses": {str(k): v for k, v in statuses.items()}, "completed": completed_counts,
            "expectedNodes": sorted(n["id"] for n in nodes), "attempts": attempts, "distinctPids": pids,
            "outputs": {str(k): v for k, v in outputs.items()}, "victim": victim.node_id,
            "secondsAfterRemoval": round(time.monotonic() - removed_at, 2)}


def _attempts(victim_node_id: str) -> dict:
    """From Ray's own task records: node-task attempts on the removed node that never
    finished there."""
    from ray.util.state import list_tasks

    died = {t.name for t in list_tasks(detail=True, limit=10_000, raise_on_missing_output=False)
            if t.name.startswith("node:") and t.node_id == victim_node_id and t.state != "FINISHED"}
    return {"attemptsDiedWithNode": len(died)}


def main() -> int:
    import ray
    from ray.cluster_utils import Cluster

    from troupe.platform.ingress import apply_serve_env

    # Three nodes share this machine: one HAProxy per node would fight over its ports,
    # so this scenario (about losing a node, not about the front door) uses the proxy actor.
    # Set before the nodes start: they pass their environment to every worker.
    os.environ["TROUPE_SERVE_HAPROXY"] = "0"
    apply_serve_env()
    cluster = None
    with devstack.scratch_backends(kind="cluster", run_id=RUN_ID, data_root=DATA) as env:
        try:
            # The head runs the API, the actors and the drivers; node tasks need "worker", found only on workers.
            # The dashboard serves Ray's state API: it shows which task attempts died with the node.
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": True})
            workers = [cluster.add_node(num_cpus=1, resources={"worker": 1}) for _ in range(2)]
            cluster.wait_for_nodes()
            address = cluster.address
            with devstack.serve_stack(env, ray_init=lambda: ray.init(
                    address=address, namespace="troupe", runtime_env={"env_vars": env},
                    log_to_driver=False)) as base_url:
                report = asyncio.run(_scenario(base_url, cluster, workers))
                report["nodes"] = len([n for n in ray.nodes() if n.get("Alive")])
                report.update(_attempts(report["victim"]))
        finally:
            if cluster is not None:
                cluster.shutdown()
    print(json.dumps(report, default=str))
    sys.stdout.flush()
    ok = all(s == "completed" for s in report["statuses"].values()) and len(report["statuses"]) == RUNS and all(
        sorted(counts) == report["expectedNodes"] and set(counts.values()) == {1}
        for counts in report["completed"].values()) and len(report["completed"]) == RUNS
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
