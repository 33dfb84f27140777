"""Tool routes: thin wrappers over ``service``. ``/marketplace`` is declared
before ``/{tool_id}`` so it is not read as an id."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from troupe.platform.deps import Authorized, DbSession
from troupe.platform.schemas import Envelope, Message, Pagination, ok
from troupe.platform.system.gates import requires_feature
from troupe.platform.tools import schemas as s
from troupe.platform.tools import service

router = APIRouter(prefix="/api/tools", tags=["tools"])

TagsQuery = Annotated[list[Annotated[str, Query(max_length=200)]] | None, Query(max_length=50)]


@router.get("", response_model=Envelope[list[s.ToolOut]])
async def list_tools(
    session: DbSession, user: Authorized("tools:read"), page: Annotated[s.ToolPage, Query()],
    type: s.ToolType | None = None, category: s.ToolCategory | None = None, status: s.ToolStatus | None = None,
    tags: TagsQuery = None, is_public: Annotated[bool | None, Query(alias="isPublic")] = None,
    created_by: Annotated[uuid.UUID | None, Query(alias="createdBy")] = None,
):
    tools, total = await service.list_tools(session=session, user=user, page=page, type_=type, category=category,
                                            status=status, tags=tags, is_public=is_public, created_by=created_by)
    return ok(await service.to_out_list(session=session, tools=tools),
              pagination=Pagination.of(page=page.page, limit=page.limit, total=total))


@router.post("", response_model=Envelope[s.ToolOut], status_code=201)
async def create_tool(body: s.ToolCreate, session: DbSession, user: Authorized("tools:create")):
    tool = await service.create_tool(session=session, user=user, body=body)
    await session.commit()  # durable before the client hears about it
    return ok(service.to_out(tool))


@router.get("/marketplace", response_model=Envelope[list[s.ToolOut]],
            dependencies=[requires_feature("marketplace_enabled")])
async def marketplace(
    session: DbSession, user: Authorized("tools:read"), page: Annotated[s.MarketplacePage, Query()],
    category: s.ToolCategory | None = None, type: s.ToolType | None = None,
    pricing: Literal["free", "paid"] | None = None,
    rating: Annotated[float | None, Query(ge=0, le=5, description="minimum rating")] = None,
    popular: bool = False, tags: TagsQuery = None,
):
    tools, total = await service.marketplace(session=session, page=page, category=category, type_=type,
                                             pricing=pricing, rating=rating, popular=popular, tags=tags)
    return ok(await service.to_out_list(session=session, tools=tools),
              pagination=Pagination.of(page=page.page, limit=page.limit, total=total))


@router.get("/{tool_id}", response_model=Envelope[s.ToolOut])
async def get_tool(tool_id: uuid.UUID, session: DbSession, user: Authorized("tools:read")):
    tool = await service.get_tool(session=session, user=user, tool_id=tool_id)
    return ok(service.to_out(tool, await service.usage_summary(session=session, tool=tool)))


@router.put("/{tool_id}", response_model=Envelope[s.ToolOut])
async def update_tool(tool_id: uuid.UUID, body: s.ToolUpdate, session: DbSession, user: Authorized("tools:update")):
    tool = await service.update_tool(session=session, user=user, tool_id=tool_id, body=body)
    await session.commit()  # durable before the client hears about it
    return ok(service.to_out(tool, await service.usage_summary(session=session, tool=tool)))


@router.delete("/{tool_id}", response_model=Envelope[Message])
async def delete_tool(tool_id: uuid.UUID, session: DbSession, user: Authorized("tools:delete")):
    await service.delete_tool(session=session, user=user, tool_id=tool_id)
    await session.commit()  # durable before the client hears about it
    return ok(Message(message="Tool deleted"))


@router.get("/{tool_id}/usage", response_model=Envelope[s.ToolUsageReport])
async def tool_usage(
    tool_id: uuid.UUID, session: DbSession, user: Authorized("tools:read"),
    period: Literal["hour", "day", "week", "month"] = "day",
    group_by: Annotated[Literal["agent", "company", "user"] | None, Query(alias="groupBy")] = None,
):
    return ok(await service.usage_report(session=session, user=user, tool_id=tool_id, period=period,
                                         group_by=group_by))


@router.post("/{tool_id}/install", response_model=Envelope[s.Installation], status_code=201)
async def install_tool(tool_id: uuid.UUID, body: s.InstallRequest, session: DbSession,
                       user: Authorized("tools:execute", "companies:update")):
    installation = await service.install(session=session, user=user, tool_id=tool_id, body=body)
    await session.commit()  # durable before the client hears about it
    return ok(installation)


@router.post("/{tool_id}/uninstall", response_model=Envelope[s.Uninstalled])
async def uninstall_tool(tool_id: uuid.UUID, body: s.UninstallRequest, session: DbSession,
                         user: Authorized("tools:execute", "companies:update")):
    removed = await service.uninstall(session=session, user=user, tool_id=tool_id, body=body)
    await session.commit()  # durable before the client hears about it
    return ok(removed)
