"""Helpers shared by the company and agent tests: API shortcuts and direct DB inserts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from tests.utils.fixtures import assert_ok


async def make_company(client, who, **overrides: Any) -> dict:
    body = {"name": f"Acme {uuid.uuid4().hex[:6]}", "type": "software", "industry": "technology"}
    body.update(overrides)
    return assert_ok(await client.post("/api/companies", json=body, headers=who.headers), 201)


async def make_agent(client, who, **overrides: Any) -> dict:
    body = {"name": f"Agent {uuid.uuid4().hex[:6]}", "description": "Summarises research papers",
            "type": "analytical", "model": "simulated", "provider": "simulated", "capabilities": ["summarise"]}
    body.update(overrides)
    return assert_ok(await client.post("/api/agents", json=body, headers=who.headers), 201)


async def insert_tool(owner_id: str, *, public: bool = False, name: str | None = None) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        tool = models.Tool(name=name or f"tool-{uuid.uuid4().hex[:6]}", description="t", type="api",
                           category="utility", created_by=uuid.UUID(owner_id), is_public=public,
                           configuration={}, schema={}, usage={}, documentation={}, pricing={}, tags=[])
        session.add(tool)
        await session.flush()
        return str(tool.id)


async def insert_task(company_id: str, user_id: str, *, status: str = "completed", created_at: datetime | None = None,
                      execution_time: int | None = None, meta: dict | None = None, agent_id: str | None = None,
                      started_at: datetime | None = None, completed_at: datetime | None = None) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        task = models.Task(name="t", type="single_agent", status=status, company_id=uuid.UUID(company_id),
                           created_by=uuid.UUID(user_id), input={}, meta=meta or {}, execution_time=execution_time,
                           agent_id=uuid.UUID(agent_id) if agent_id else None, started_at=started_at,
                           completed_at=completed_at, tags=[])
        if created_at is not None:
            task.created_at = created_at
        session.add(task)
        await session.flush()
        return str(task.id)


async def insert_execution(task_id: str, *, agent_id: str | None = None, status: str = "completed",
                           started_at: datetime | None = None, execution_time: int | None = None,
                           meta: dict | None = None, node_id: str | None = None) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        row = models.TaskExecution(task_id=uuid.UUID(task_id), node_id=node_id or uuid.uuid4().hex[:8],
                                   agent_id=uuid.UUID(agent_id) if agent_id else None, status=status,
                                   execution_time=execution_time, meta=meta or {}, input={})
        if started_at is not None:
            row.started_at = started_at
        session.add(row)
        await session.flush()
        return str(row.id)


async def insert_log(company_id: str, *, level: str, message: str, created_at: datetime | None = None) -> None:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        log = models.Log(level=level, source="test", message=message, company_id=uuid.UUID(company_id))
        if created_at is not None:
            log.created_at = created_at
        session.add(log)


async def count(model_name: str, **where: Any) -> int:
    from sqlalchemy import func, select

    from troupe.db import models
    from troupe.db.session import session_scope

    model = getattr(models, model_name)
    async with session_scope() as session:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return await session.scalar(stmt)
