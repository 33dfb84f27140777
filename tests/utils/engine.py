"""Helpers for engine tests: companies, agents, tools and workflows straight in
the database, and polling a task until it settles."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.utils.fixtures import assert_ok


async def make_company(owner_id: str, **settings: Any) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        company = models.Company(name=f"co-{uuid.uuid4().hex[:6]}", type="software", owner_id=uuid.UUID(owner_id),
                                 status="active", settings={"maxConcurrency": 5, **settings}, member_roles={})
        session.add(company)
        await session.flush()
        return str(company.id)


async def make_agent(company_id: str, owner_id: str, **config: Any) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        agent = models.Agent(name=f"ag-{uuid.uuid4().hex[:6]}", type="custom", model="sim-1", provider="simulated",
                             configuration=config, company_id=uuid.UUID(company_id), created_by=uuid.UUID(owner_id),
                             performance={})
        session.add(agent)
        await session.flush()
        return str(agent.id)


async def make_tool(owner_id: str, type_: str = "calculator", **configuration: Any) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        tool = models.Tool(name=f"tool-{uuid.uuid4().hex[:6]}", type=type_, category="utility",
                           configuration=configuration, schema={"input": {"type": "object", "required": ["expression"],
                                                                          "properties": {"expression": {"type": "string"}}}},
                           created_by=uuid.UUID(owner_id))
        session.add(tool)
        await session.flush()
        return str(tool.id)


async def make_workflow(company_id: str, owner_id: str, nodes: list[dict], edges: list[dict],
                        status: str = "active", **configuration: Any) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        workflow = models.Workflow(name=f"wf-{uuid.uuid4().hex[:6]}", company_id=uuid.UUID(company_id), nodes=nodes,
                                   edges=edges, configuration={"strategy": "hybrid", "errorHandling": "stop",
                                                               **configuration},
                                   status=status, created_by=uuid.UUID(owner_id))
        session.add(workflow)
        await session.flush()
        return str(workflow.id)


def node(nid: str, type_: str, **config: Any) -> dict:
    data: dict[str, Any] = {"label": nid}
    for key in ("agentId", "toolId", "conditions"):
        if key in config:
            data[key] = config.pop(key)
    data["configuration"] = config
    return {"id": nid, "type": type_, "position": {"x": 0, "y": 0}, "data": data}


def edge(source: str, target: str, type_: str = "default", condition: str | None = None) -> dict:
    e = {"id": f"{source}-{target}", "source": source, "target": target, "type": type_}
    if condition is not None:
        e["condition"] = condition
    return e


def chain(*ids: str) -> list[dict]:
    return [edge(a, b) for a, b in zip(ids, ids[1:], strict=False)]


async def run_workflow(client, user, company_id: str, workflow_id: str, input_: Any = None,
                       priority: str = "medium", variables: dict | None = None) -> str:
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "t", "type": "workflow", "priority": priority, "companyId": company_id, "workflowId": workflow_id,
        "input": input_}), 201)
    body: dict[str, Any] = {}
    if variables:
        body["variables"] = variables
    assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json=body), 202)
    return task["id"]


async def wait_status(client, user, task_id: str, statuses: tuple[str, ...] = ("completed", "failed", "cancelled"),
                      timeout: float = 60) -> dict:  # noqa: ASYNC109 (a polling bound)
    deadline = time.monotonic() + timeout
    while True:
        task = assert_ok(await client.get(f"/api/tasks/{task_id}", headers=user.headers))
        if task["status"] in statuses:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task stuck in {task['status']}: {task}")
        await asyncio.sleep(0.2)


async def executions(client, user, task_id: str) -> list[dict]:
    return assert_ok(await client.get(f"/api/tasks/{task_id}/executions?limit=100", headers=user.headers))


def completed_once(rows: list[dict]) -> dict[tuple[str, int], int]:
    counts: dict[tuple[str, int], int] = {}
    for row in rows:
        if row["status"] == "completed":
            key = (row["nodeId"], row["iteration"])
            counts[key] = counts.get(key, 0) + 1
    assert all(v == 1 for v in counts.values()), counts
    return counts
