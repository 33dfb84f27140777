"""Agent routes. Execution routes (test, train) belong to the runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from troupe.platform.agents import service
from troupe.platform.agents.schemas import (
    AgentCreate,
    AgentListParams,
    AgentPerformanceReport,
    AgentRead,
    AgentUpdate,
    CloneRequest,
    PerformanceParams,
    PublishRequest,
    ReviewCreate,
    ReviewListParams,
    ReviewRead,
    ReviewResult,
)
from troupe.platform.deps import Authorized, DbSession
from troupe.platform.schemas import Envelope, Message, ok

router = APIRouter(prefix="/api/agents", tags=["agents"])


@router.get("", response_model=Envelope[list[AgentRead]])
async def list_agents(session: DbSession, user: Authorized("agents:read"),
                      params: Annotated[AgentListParams, Query()]):
    items, pagination = await service.list_agents(session=session, user=user, params=params)
    return ok(items, pagination=pagination)


@router.post("", response_model=Envelope[AgentRead], status_code=201)
async def create_agent(body: AgentCreate, session: DbSession, user: Authorized("agents:create")):
    result = await service.create_agent(session=session, user=user, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.get("/{agent_id}", response_model=Envelope[AgentRead])
async def get_agent(agent_id: str, session: DbSession, user: Authorized("agents:read")):
    return ok(await service.get_agent(session=session, user=user, agent_id=agent_id))


@router.put("/{agent_id}", response_model=Envelope[AgentRead])
async def update_agent(agent_id: str, body: AgentUpdate, session: DbSession, user: Authorized("agents:update")):
    result = await service.update_agent(session=session, user=user, agent_id=agent_id, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.delete("/{agent_id}", response_model=Envelope[Message])
async def delete_agent(agent_id: str, session: DbSession, user: Authorized("agents:delete")):
    await service.delete_agent(session=session, user=user, agent_id=agent_id)
    await session.commit()
    return ok(Message(message="Agent deleted"))


@router.get("/{agent_id}/performance", response_model=Envelope[AgentPerformanceReport])
async def agent_performance(agent_id: str, session: DbSession, user: Authorized("agents:read"),
                            params: Annotated[PerformanceParams, Query()]):
    return ok(await service.performance(session=session, user=user, agent_id=agent_id, params=params))


@router.post("/{agent_id}/clone", response_model=Envelope[AgentRead], status_code=201)
async def clone_agent(agent_id: str, body: CloneRequest, session: DbSession, user: Authorized("agents:create")):
    result = await service.clone_agent(session=session, user=user, agent_id=agent_id, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.post("/{agent_id}/publish", response_model=Envelope[AgentRead])
async def publish_agent(agent_id: str, body: PublishRequest, session: DbSession,
                        user: Authorized("agents:publish")):
    result = await service.publish_agent(session=session, user=user, agent_id=agent_id, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.post("/{agent_id}/unpublish", response_model=Envelope[AgentRead])
async def unpublish_agent(agent_id: str, session: DbSession, user: Authorized("agents:publish")):
    result = await service.unpublish_agent(session=session, user=user, agent_id=agent_id)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.post("/{agent_id}/review", response_model=Envelope[ReviewResult], status_code=201)
async def review_agent(agent_id: str, body: ReviewCreate, session: DbSession, user: Authorized("agents:read")):
    result = await service.review_agent(session=session, user=user, agent_id=agent_id, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.get("/{agent_id}/reviews", response_model=Envelope[list[ReviewRead]])
async def list_reviews(agent_id: str, session: DbSession, user: Authorized("agents:read"),
                       params: Annotated[ReviewListParams, Query()]):
    items, pagination = await service.list_reviews(session=session, user=user, agent_id=agent_id, params=params)
    return ok(items, pagination=pagination)
