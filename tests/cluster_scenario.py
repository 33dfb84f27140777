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
import socket
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = uuid.uuid4().hex[:10]
RUNS = 4
FAN_OUT = 4
NODE_SECONDS = 1.0

os.environ["TROUPE_ENV"] = "test"
os.environ["TROUPE_DATA_DIR"] = str(ROOT / ".troupe" / "test" / f"cluster-{RUN_ID}")
os.environ["TROUPE_REDIS_PREFIX"] = f"troupe-cluster-{RUN_ID}"
os.environ["TROUPE_NODE_TASK_RESOURCES"] = json.dumps({"worker": 0.01})
os.environ.setdefault("TROUPE_ACTOR_IDLE_TIMEOUT", "30s")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin_exec(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


async def _scenario(base_url: str, cluster, victim) -> dict:
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
    await asyncio.sleep(0.3)
    removed_at = time.monotonic()
    cluster.remove_node(victim)

    deadline = time.monotonic() + 60
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
            "outputs": {str(k): v for k, v in outputs.items()},
            "secondsAfterRemoval": round(time.monotonic() - removed_at, 2)}


def main() -> int:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from troupe.infra import embedded

    data = ROOT / ".troupe" / "test"
    data.mkdir(parents=True, exist_ok=True)
    server = os.environ.get("DATABASE_URL") or embedded.start_postgres(data)
    db_name = f"troupe_cluster_{RUN_ID}"
    _admin_exec(server, f'CREATE DATABASE "{db_name}"')
    os.environ["DATABASE_URL"] = _with_database(server, db_name)
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = embedded.start_redis(data)
    cluster = None
    try:
        from troupe.config import get_settings
        from troupe.infra.bootstrap import prepare
        from troupe.platform.ingress import build

        get_settings.cache_clear()
        env = prepare()
        # The head runs the API, the actors and the drivers; node tasks need "worker", found only on the workers.
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        workers = [cluster.add_node(num_cpus=1, resources={"worker": 1}) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="troupe", runtime_env={"env_vars": env}, log_to_driver=False)
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
        serve.run(build(env), name="troupe", route_prefix="/")
        report = asyncio.run(_scenario(f"http://127.0.0.1:{port}", cluster, workers[0]))
        report["nodes"] = len([n for n in ray.nodes() if n.get("Alive")])
        print(json.dumps(report, default=str))
        sys.stdout.flush()
        ok = all(s == "completed" for s in report["statuses"].values()) and len(report["statuses"]) == RUNS and all(
            sorted(counts) == report["expectedNodes"] and set(counts.values()) == {1}
            for counts in report["completed"].values()) and len(report["completed"]) == RUNS
        return 0 if ok else 1
    finally:
        try:
            serve.shutdown()
        except Exception:  # Serve may not have started
            pass
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        _admin_exec(server, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


if __name__ == "__main__":
    sys.exit(main())
