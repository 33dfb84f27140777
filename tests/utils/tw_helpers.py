"""Helpers for the tool and workflow tests: companies and agents written straight
to the database, so these tests don't depend on the companies/agents routes."""

from __future__ import annotations

import uuid
from typing import Any


async def make_company(owner_id: str, *, members: dict[str, str] | None = None,
                       settings: dict[str, Any] | None = None) -> str:
    """``members`` maps user id -> 'member' | 'viewer'."""
    from troupe.db import models
    from troupe.db.session import session_scope

    members = members or {}
    async with session_scope() as session:
        company = models.Company(name=f"Co {uuid.uuid4().hex[:6]}", type="software", owner_id=uuid.UUID(owner_id),
                                 team_members=[uuid.UUID(m) for m in members], member_roles=dict(members),
                                 settings=settings or {}, metrics={}, tags=[])
        session.add(company)
        await session.flush()
        return str(company.id)


async def make_agent(owner_id: str, company_id: str | None = None, *, public: bool = False) -> str:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        agent = models.Agent(name="Helper", type="custom", model="simulated-1", provider="simulated",
                             company_id=uuid.UUID(company_id) if company_id else None,
                             created_by=uuid.UUID(owner_id), is_public=public, configuration={})
        session.add(agent)
        await session.flush()
        return str(agent.id)


async def fetch(model_name: str, object_id: str):
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        return await session.get(getattr(models, model_name), uuid.UUID(object_id))
