"""Runs in flight across a real Postgres outage, in its own process (the last phase of
tests/outage_scenario.py, asserted by tests/test_engine_durability.py; alone with
``python -m tests.engine_outage_scenario``): a Troupe stack on a private Postgres and Redis
(tests/utils/private_backends.py), several workflow runs started through the
API, the Postgres server stopped (``pg_ctl stop -m fast``) for STOP_SECONDS while
their nodes run, then started again on the same port.

Prints one JSON line: each run's final status and, per run, how many completed
execution rows each node has (the test asserts every run completed and every
node completed exactly once). Asserts nothing itself.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import httpx

from tests.utils.private_backends import ScenarioStack, print_report, scenario_stack

STOP_SECONDS = 10.0
NODE_SECONDS = 1.5  # each delay node is a node task of this length (below the parking threshold)
SETTLE_LIMIT_SECONDS = 120.0


def _graphs() -> list[tuple[list[dict], list[dict], str]]:
    from tests.utils.engine import chain, edge, node

    steps = [f"s{i}" for i in range(4)]
    sequential = ([node("in", "input"), *(node(s, "delay", seconds=NODE_SECONDS) for s in steps),
                   node("out", "output", value="done")], chain("in", *steps, "out"), "sequential")
    wide = [f"p{i}" for i in range(3)]
    parallel = ([node("in", "input"), *(node(p, "delay", seconds=NODE_SECONDS) for p in wide),
                 node("out", "output", value="done")],
                [*(edge("in", p) for p in wide), *(edge(p, "out") for p in wide)], "parallel")
    return [sequential, parallel]


async def _rows(task_id: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        found = await session.execute(select(models.TaskExecution.node_id, func.count()).where(
            models.TaskExecution.task_id == task_id, models.TaskExecution.status == "completed")
            .group_by(models.TaskExecution.node_id))
        return {node_id: int(count) for node_id, count in found}


async def _scenario(stack: ScenarioStack) -> dict[str, Any]:
    from tests.utils.engine import make_company, make_workflow
    from tests.utils.fixtures import create_user
    from troupe.db.session import dispose_engine

    user = await create_user("user")
    company = await make_company(str(user.id), maxConcurrency=10)
    runs: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {user.token}"}
        for nodes, edges, strategy in _graphs():
            workflow = await make_workflow(company, str(user.id), nodes, edges, strategy=strategy)
            for _ in range(2):
                response = await http.post(f"/api/workflows/{workflow}/execute", headers=headers,
                                           json={"input": {"x": 1}})
                response.raise_for_status()
                runs.append({"id": response.json()["data"]["id"], "nodes": sorted(n["id"] for n in nodes)})
        await asyncio.sleep(NODE_SECONDS + 0.5)  # every run is past its first node, with nodes in flight
        await dispose_engine()  # this process's pooled connections die with the server
        stack.postgres.stop()
        stopped_at = time.monotonic()
        await asyncio.sleep(STOP_SECONDS)
        stack.postgres.start()
        outage = round(time.monotonic() - stopped_at, 3)
        deadline = time.monotonic() + SETTLE_LIMIT_SECONDS
        while True:
            states = []
            for run in runs:
                response = await http.get(f"/api/tasks/{run['id']}", headers=headers)
                states.append(response.json()["data"]["status"] if response.status_code == 200 else None)
            if all(s in ("completed", "failed", "cancelled") for s in states) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        settled = round(time.monotonic() - stopped_at, 3)
    for run, state in zip(runs, states, strict=True):
        run["status"] = state
        run["completedRows"] = await _rows(run["id"])
    return {"outageSeconds": outage, "settledAfterSeconds": settled, "runs": runs}


def main() -> int:
    with scenario_stack("engine-outage") as stack:
        report = asyncio.run(_scenario(stack))
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
