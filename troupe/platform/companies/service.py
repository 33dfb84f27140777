"""Companies: CRUD and members, live metrics, logs, tasks, duplicate, export/import.

Every read goes through ``access.visible_companies`` / ``access.load_company`` so
another tenant's company answers RES_001; writes need the 'write' need (owner or
admin). Multi-row changes run in the request's single transaction: an error
anywhere rolls everything back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.errors import AppError, ErrorCode, invalid
from troupe.platform import access
from troupe.platform.agents import service as agents_service
from troupe.platform.agents.schemas import AgentRead
from troupe.platform.companies.schemas import (
    LIST_EMBED_LIMIT,
    CompanyCosts,
    CompanyCreate,
    CompanyDetail,
    CompanyDocument,
    CompanyImportRequest,
    CompanyListParams,
    CompanyMetrics,
    CompanyMetricsReport,
    CompanyRead,
    CompanySettings,
    CompanySettingsIn,
    CompanyToolRead,
    CompanyUpdate,
    CostBreakdown,
    DuplicatedCompany,
    DuplicateRequest,
    ExportAgent,
    ExportCompany,
    ExportToolLink,
    ExportWorkflow,
    ImportResult,
    LogParams,
    MemberRead,
    MetricsParams,
    NeedsReentry,
    Performance,
    ResourceUsage,
    SpecCompanyDocument,
    TaskListParams,
    TaskRead,
    TeamMemberIn,
    TrendPoint,
    WorkflowSummary,
    default_settings,
    effective_settings,
)
from troupe.platform.deps import Principal
from troupe.platform.logs import service as logs_service
from troupe.platform.logs.schemas import LogEntry
from troupe.platform.schemas import Pagination, deep_merge, percent
from troupe.platform.system.gates import ensure_company_settings, ensure_team_size
from troupe.platform.tools import service as tools_service
from troupe.platform.tools.schemas import ToolUsage
from troupe.platform.workflows import service as workflows_service
from troupe.platform.workflows.schemas import WorkflowOut
from troupe.security import SecretBox
from troupe.timeutil import as_utc, iso, utcnow

ACTIVE_TASK_STATES = ("running", "paused")
C = models.Company


# --------------------------------------------------------------------------- secrets


_SECRET_SUFFIXES = ("secret", "secrets", "password", "apikey", "token", "credentials", "authorization",
                    "privatekey")
_DROP = object()


def _is_secret_name(key: str) -> bool:
    return key.lower().replace("_", "").replace("-", "").endswith(_SECRET_SUFFIXES)


def scrub_secrets(value: Any) -> Any:
    """Remove every secret-bearing value (documents leaving the deployment)."""
    return clear_secrets(value, "", [])


# --------------------------------------------------------------------------- helpers


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def _validated_settings(merged: dict[str, Any], field: str = "settings") -> dict[str, Any]:
    try:
        return CompanySettings.model_validate(merged).model_dump(mode="json", by_alias=True)
    except ValueError as exc:
        raise invalid(f"settings: {exc}", field=field) from exc


async def _count(session: AsyncSession, model: Any, *where: ColumnElement[bool]) -> int:
    return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def _has_active_tasks(session: AsyncSession, company_id: uuid.UUID) -> bool:
    T = models.Task
    started_pending = and_(T.status == "pending", or_(T.started_at.is_not(None), T.queued_at.is_not(None)))
    return await _count(session, T, T.company_id == company_id,
                        or_(T.status.in_(ACTIVE_TASK_STATES), started_pending)) > 0


def _limit_error(what: str, limit: int, wanted: int) -> AppError:
    return AppError(ErrorCode.RESOURCE_LIMIT_EXCEEDED, f"The company allows at most {limit} {what}",
                    details={"limit": limit, "requested": wanted})


async def _check_members(session: AsyncSession, company: models.Company | None, owner_id: uuid.UUID,
                         members: list[TeamMemberIn], field: str) -> tuple[list[uuid.UUID], dict[str, str]]:
    ids = [m.user_id for m in members]
    if len(ids) != len(set(ids)):
        raise invalid("A user is listed twice", field=field)
    if owner_id in ids:
        raise invalid("The owner is not a team member", field=field)
    await ensure_team_size(len(ids), field=field)
    found = set((await session.execute(select(models.User.id).where(
        models.User.id.in_(ids), models.User.deleted_at.is_(None)))).scalars()) if ids else set()
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise AppError(ErrorCode.RESOURCE_NOT_FOUND, "User not found", field=field, details={"userIds": missing})
    return ids, {str(m.user_id): m.role for m in members}


# --------------------------------------------------------------------------- live metrics

_NUM = "CASE WHEN jsonb_typeof({e}) = 'number' THEN ({e})::numeric END"
_T_COST = _NUM.format(e="t.metadata->'cost'")
_T_TOKENS = _NUM.format(e="t.metadata->'resourceUsage'->'tokens'")
_E_COST = _NUM.format(e="e.metadata->'cost'")
_E_TOKENS = _NUM.format(e="e.metadata->'tokensUsed'")

# Per task: its own cost/tokens when recorded on the task, else the sum over its node executions.
_TASKS_CTE = f"""
ex AS (
  SELECT e.task_id, sum({_E_COST}) AS cost, sum({_E_TOKENS}) AS tokens, count(*) AS n,
         count(*) FILTER (WHERE e.status = 'failed') AS nf,
         sum(e.execution_time) AS exec_ms, count(e.execution_time) AS exec_n
  FROM task_executions e JOIN tasks t ON t.id = e.task_id
  WHERE {{where}} GROUP BY e.task_id
),
tk AS (
  SELECT t.company_id, t.status, t.created_at, t.started_at, t.completed_at, t.execution_time,
         coalesce({_T_COST}, ex.cost, 0) AS cost, coalesce(ex.cost, 0) AS api_cost,
         coalesce({_T_TOKENS}, ex.tokens, 0) AS tokens,
         coalesce(ex.n, 0) AS n, coalesce(ex.nf, 0) AS nf, coalesce(ex.exec_ms, 0) AS exec_ms,
         coalesce(ex.exec_n, 0) AS exec_n
  FROM tasks t LEFT JOIN ex ON ex.task_id = t.id
  WHERE {{where}}
)"""

_IN_WINDOW = ("t.company_id = ANY(:ids)"
              " AND (CAST(:start AS timestamptz) IS NULL OR t.created_at >= CAST(:start AS timestamptz))"
              " AND (CAST(:end AS timestamptz) IS NULL OR t.created_at < CAST(:end AS timestamptz))")

_METRICS_SQL = text("WITH " + _TASKS_CTE.format(where=_IN_WINDOW) + """
SELECT company_id,
       count(*) AS total,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'running') AS running,
       coalesce(avg(execution_time) FILTER (WHERE status = 'completed'), 0) AS avg_time,
       max(started_at) AS last_execution,
       coalesce(sum(cost), 0) AS cost, coalesce(sum(api_cost), 0) AS api_cost,
       coalesce(sum(cost) FILTER (WHERE created_at >= date_trunc('month', CAST(:now AS timestamptz))), 0) AS monthly,
       coalesce(sum(tokens), 0) AS tokens,
       coalesce(sum(exec_ms), 0) AS exec_ms, coalesce(sum(exec_n), 0) AS exec_n,
       coalesce(sum(n), 0) AS executions, coalesce(sum(nf), 0) AS failed_executions,
       count(*) FILTER (WHERE status IN ('completed', 'failed')
                        AND completed_at >= CAST(:now AS timestamptz) - interval '24 hours') AS finished_24h
FROM tk GROUP BY company_id
""")


def _rate(completed: int, failed: int) -> float:
    return percent(completed, completed + failed)


async def _metrics_rows(session: AsyncSession, company_ids: list[uuid.UUID], start: datetime | None = None,
                        end: datetime | None = None) -> tuple[dict[uuid.UUID, Any], dict[uuid.UUID, int]]:
    rows = {r.company_id: r for r in (await session.execute(
        _METRICS_SQL, {"ids": company_ids, "now": utcnow(), "start": start, "end": end})).all()}
    storage = dict((await session.execute(
        select(models.File.company_id, func.coalesce(func.sum(models.File.size), 0))
        .where(models.File.company_id.in_(company_ids)).group_by(models.File.company_id))).all())
    return rows, storage


def _metrics(r: Any, storage: int) -> CompanyMetrics:
    """CompanyMetrics from one row of _METRICS_SQL (None: the company has no tasks)."""
    total_cost, api_cost = (float(r.cost), float(r.api_cost)) if r else (0.0, 0.0)
    exec_n = int(r.exec_n) if r else 0
    return CompanyMetrics(
        total_tasks=r.total if r else 0, completed_tasks=r.completed if r else 0,
        failed_tasks=r.failed if r else 0, pending_tasks=r.pending if r else 0,
        running_tasks=r.running if r else 0,
        average_execution_time=round(float(r.avg_time), 3) if r else 0.0,
        success_rate=_rate(r.completed, r.failed) if r else 0.0,
        last_execution_at=r.last_execution if r else None,
        resource_usage=ResourceUsage(cpu=None, memory=None, storage=int(storage), bandwidth=None,
                                     tokens=int(r.tokens) if r else 0),
        costs=CompanyCosts(monthly=float(r.monthly) if r else 0.0, total=total_cost,
                    breakdown=CostBreakdown(compute=None, storage=None, api=api_cost,
                                            other=max(total_cost - api_cost, 0.0))),
        performance=Performance(uptime=None, response_time=round(float(r.exec_ms) / exec_n, 3) if exec_n else 0.0,
                                throughput=round(int(r.finished_24h) / 24.0, 4) if r else 0.0))


async def live_metrics(session: AsyncSession, company_ids: list[uuid.UUID]) -> dict[uuid.UUID, CompanyMetrics]:
    """The spec's CompanyMetrics for many companies in two grouped queries."""
    if not company_ids:
        return {}
    rows, storage = await _metrics_rows(session, company_ids)
    return {cid: _metrics(rows.get(cid), storage.get(cid, 0)) for cid in company_ids}


# --------------------------------------------------------------------------- reads


def _agent_count():
    return (select(func.count()).select_from(models.Agent).where(models.Agent.company_id == C.id)
            .correlate(C).scalar_subquery())


def _tool_count():
    return (select(func.count()).select_from(models.CompanyTool).where(models.CompanyTool.company_id == C.id)
            .correlate(C).scalar_subquery())


def _to_read(company: models.Company, user: Principal, embedded: _Embedded, *, agents: int, tools: int,
             metrics: CompanyMetrics) -> CompanyRead:
    return CompanyRead(
        id=company.id, name=company.name, description=company.description, type=company.type,
        industry=company.industry or "other", status=company.status or "idle", owner_id=company.owner_id,
        team_members=list(company.team_members or []), agents=embedded.agents.get(company.id, []),
        tools=embedded.tools.get(company.id, []), workflow=embedded.workflow.get(company.id),
        settings=CompanySettings.model_validate(effective_settings(company.settings)),
        tags=list(company.tags or []), logo=company.logo, website=company.website, agent_count=agents,
        tool_count=tools, my_role=access.role_in(company, user), metrics=metrics, created_at=company.created_at,
        updated_at=company.updated_at, last_activity_at=company.last_activity_at)


@dataclass
class _Embedded:
    agents: dict[uuid.UUID, list[AgentRead]] = field(default_factory=dict)
    tools: dict[uuid.UUID, list[CompanyToolRead]] = field(default_factory=dict)
    workflow: dict[uuid.UUID, WorkflowOut] = field(default_factory=dict)


async def _embedded(session: AsyncSession, company_ids: list[uuid.UUID], *, limit: int | None) -> _Embedded:
    """Agents (the spec's Agent), tools (the spec's Tool) and main workflow of many companies in
    a fixed number of queries: at most ``limit`` agents and tools per company (None: all)."""
    out = _Embedded()
    if not company_ids:
        return out
    A, CT, W = models.Agent, models.CompanyTool, models.Workflow
    ranked = select(A.id, func.row_number().over(partition_by=A.company_id, order_by=(A.created_at, A.id))
                    .label("rn")).where(A.company_id.in_(company_ids)).subquery()
    query = select(A).join(ranked, ranked.c.id == A.id)
    if limit is not None:
        query = query.where(ranked.c.rn <= limit)
    agents = list((await session.execute(query.order_by(A.company_id, ranked.c.rn))).scalars().all())
    for agent, read in zip(agents, await agents_service.read_agents(session, agents), strict=True):
        out.agents.setdefault(agent.company_id, []).append(read)
    installs = select(CT.company_id, CT.tool_id, CT.installed_at, func.row_number().over(
        partition_by=CT.company_id, order_by=(CT.installed_at, CT.tool_id)).label("rn")).where(
        CT.company_id.in_(company_ids)).subquery()
    query = select(models.Tool, installs.c.company_id, installs.c.installed_at).join(
        installs, installs.c.tool_id == models.Tool.id)
    if limit is not None:
        query = query.where(installs.c.rn <= limit)
    rows = (await session.execute(query.order_by(installs.c.company_id, installs.c.rn))).all()
    tool_ids = list({t.id for t, _, _ in rows})
    usage = await tools_service.usage_summaries(session=session, tool_ids=tool_ids)
    trends = await tools_service.usage_trends(session=session, tool_ids=tool_ids)
    for tool, cid, installed_at in rows:
        counters = usage.get(tool.id) or ToolUsage()
        counters.trends = trends[tool.id]
        dumped = tools_service.to_out(tool, counters).model_dump(by_alias=True)
        out.tools.setdefault(cid, []).append(CompanyToolRead.model_validate({**dumped, "installedAt": installed_at}))
    main = (await session.execute(
        select(W).where(W.company_id.in_(company_ids)).distinct(W.company_id)
        .order_by(W.company_id, (W.status == "active").desc(), W.updated_at.desc().nulls_last(), W.id))).scalars()
    out.workflow = {w.company_id: workflows_service.to_out(w) for w in main.all()}
    return out


_SORTS = {"name": C.name, "createdAt": C.created_at, "updatedAt": C.updated_at, "type": C.type,
          "industry": C.industry, "status": C.status, "lastActivityAt": C.last_activity_at}


async def list_companies(*, session: AsyncSession, user: Principal,
                         params: CompanyListParams) -> tuple[list[CompanyRead], Pagination]:
    conditions: list[ColumnElement[bool]] = [access.visible_companies(user)]
    if params.search:
        conditions.append(agents_service.search_filter(C.name, C.description, params.search))
    for column, value in ((C.type, params.type), (C.status, params.status), (C.owner_id, params.owner_id),
                          (C.industry, params.industry)):
        if value is not None:
            conditions.append(column == value)
    if params.tags:
        conditions.append(C.tags.overlap(params.tags))
    total = await _count(session, C, *conditions)
    column = _SORTS[params.sort]
    ordering = column.asc().nulls_last() if params.order == "asc" else column.desc().nulls_last()
    rows = (await session.execute(
        select(C, _agent_count(), _tool_count()).where(*conditions).order_by(ordering, C.id)
        .offset((params.page - 1) * params.limit).limit(params.limit))).all()
    ids = [c.id for c, _, _ in rows]
    metrics = await live_metrics(session, ids)
    embedded = await _embedded(session, ids, limit=LIST_EMBED_LIMIT)
    items = [_to_read(c, user, embedded, agents=a, tools=t, metrics=metrics[c.id]) for c, a, t in rows]
    return items, Pagination.of(page=params.page, limit=params.limit, total=total)


def _summary(w: models.Workflow) -> WorkflowSummary:
    return WorkflowSummary(id=w.id, name=w.name, version=w.version, status=w.status, node_count=len(w.nodes or []),
                           edge_count=len(w.edges or []), updated_at=w.updated_at,
                           last_executed_at=w.last_executed_at)


async def _detail(session: AsyncSession, user: Principal, company: models.Company) -> CompanyDetail:
    embedded = await _embedded(session, [company.id], limit=None)
    workflows = (await session.execute(
        select(models.Workflow).where(models.Workflow.company_id == company.id)
        .order_by(models.Workflow.updated_at.desc(), models.Workflow.id))).scalars().all()
    people = [company.owner_id, *(company.team_members or [])]
    names = dict((await session.execute(select(models.User.id, models.User.username)
                                        .where(models.User.id.in_([p for p in people if p])))).all())
    roles = company.member_roles or {}
    members = ([MemberRead(user_id=company.owner_id, username=names.get(company.owner_id), role="owner")]
               if company.owner_id else [])
    members += [MemberRead(user_id=m, username=names.get(m), role="viewer" if roles.get(str(m)) == "viewer"
                           else "member") for m in company.team_members or []]
    metrics = (await live_metrics(session, [company.id]))[company.id]
    base = _to_read(company, user, embedded, agents=len(embedded.agents.get(company.id, [])),
                    tools=len(embedded.tools.get(company.id, [])), metrics=metrics)
    return CompanyDetail(**base.model_dump(by_alias=True), members=members,
                         workflows=[_summary(w) for w in workflows])


async def get_company(*, session: AsyncSession, user: Principal, company_id: str) -> CompanyDetail:
    company = await access.load_company(session, user, company_id, "read")
    return await _detail(session, user, company)


# --------------------------------------------------------------------------- attach agents / tools


async def _attach_agents(session: AsyncSession, user: Principal, company: models.Company,
                         agent_ids: list[uuid.UUID], field: str) -> None:
    ids = list(dict.fromkeys(agent_ids))
    if not ids:
        return
    agents = (await session.execute(select(models.Agent).where(
        models.Agent.id.in_(ids), agents_service.visible_agents(user)).with_for_update())).scalars().all()
    found = {a.id for a in agents}
    missing = [str(i) for i in ids if i not in found]
    if missing:
        raise AppError(ErrorCode.RESOURCE_NOT_FOUND, "Agent not found", field=field, details={"agentIds": missing})
    # Attaching moves the agent: only its creator (or an admin) may do that.
    foreign = [str(a.id) for a in agents if not agents_service.can_write(a, user)]
    if foreign:
        raise AppError(ErrorCode.INSUFFICIENT_PERMISSIONS, "Only agents you created can be attached", field=field,
                       details={"agentIds": foreign})
    await agents_service.ensure_agent_capacity(session, company, len([a for a in agents
                                                                      if a.company_id != company.id]))
    for agent in agents:
        agent.company_id = company.id


async def _install_tools(session: AsyncSession, user: Principal, company: models.Company,
                         tool_ids: list[uuid.UUID], field: str) -> list[uuid.UUID]:
    ids = list(dict.fromkeys(tool_ids))
    if not ids:
        return []
    await agents_service.ensure_tools_visible(session, user, ids, field)
    installed = set((await session.execute(select(models.CompanyTool.tool_id).where(
        models.CompanyTool.company_id == company.id))).scalars())
    new = [t for t in ids if t not in installed]
    limit = int(effective_settings(company.settings)["maxTools"])
    if len(installed) + len(new) > limit:
        raise _limit_error("tools", limit, len(installed) + len(new))
    if new:
        session.add_all([models.CompanyTool(company_id=company.id, tool_id=t, configuration={}, installed_by=user.id)
                         for t in new])
        # An install counts as a download, as with POST /tools/:id/install.
        await session.execute(update(models.Tool).where(models.Tool.id.in_(new))
                              .values(downloads=func.coalesce(models.Tool.downloads, 0) + 1))
    return new


# --------------------------------------------------------------------------- writes


async def create_company(*, session: AsyncSession, user: Principal, data: CompanyCreate) -> CompanyDetail:
    settings = default_settings()
    asked = data.settings.model_dump(mode="json", by_alias=True, exclude_unset=True) if data.settings else {}
    if data.settings is not None:
        settings = _validated_settings(deep_merge(settings, asked))
    settings = await ensure_company_settings(settings, asked)  # the server's limits cap the company's
    if len(set(data.agents)) > settings["maxAgents"]:
        raise _limit_error("agents", settings["maxAgents"], len(set(data.agents)))
    if len(set(data.tools)) > settings["maxTools"]:
        raise _limit_error("tools", settings["maxTools"], len(set(data.tools)))
    company = models.Company(
        name=data.name, description=data.description, type=data.type, industry=data.industry, status="idle",
        owner_id=user.id, team_members=[], member_roles={}, settings=settings, metrics={}, tags=data.tags,
        logo=data.logo, website=data.website)
    session.add(company)
    await session.flush()
    await _attach_agents(session, user, company, data.agents, "agents")
    await _install_tools(session, user, company, data.tools, "tools")
    if data.workflow is not None:
        session.add(models.Workflow(
            name=f"{data.name} workflow", company_id=company.id, status="draft", created_by=user.id,
            nodes=[n.model_dump(mode="json", by_alias=True, exclude_none=True) for n in data.workflow.nodes],
            edges=[e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in data.workflow.edges],
            configuration={}, triggers=[], tags=[]))
    await session.flush()
    return await _detail(session, user, company)


async def update_company(*, session: AsyncSession, user: Principal, company_id: str,
                         data: CompanyUpdate) -> CompanyDetail:
    company = await access.load_company(session, user, company_id, "write", for_update=True)
    patch = data.model_dump(exclude_unset=True, by_alias=False)
    for key in ("name", "type", "industry", "tags"):
        if patch.get(key) is not None:
            setattr(company, key, patch[key])
    for key in ("description", "logo", "website"):  # nullable: an explicit null clears them
        if key in patch:
            setattr(company, key, patch[key])
    if data.settings is not None:
        asked = data.settings.model_dump(mode="json", by_alias=True, exclude_unset=True)
        settings = await ensure_company_settings(
            _validated_settings(deep_merge(effective_settings(company.settings), asked)), asked)
        agents = await _count(session, models.Agent, models.Agent.company_id == company.id)
        tools = await _count(session, models.CompanyTool, models.CompanyTool.company_id == company.id)
        if agents > settings["maxAgents"]:
            raise _limit_error("agents", settings["maxAgents"], agents)
        if tools > settings["maxTools"]:
            raise _limit_error("tools", settings["maxTools"], tools)
        company.settings = settings
    if data.team_members is not None:
        # A bare id (as a GET answers teamMembers) keeps that member's role; a new one joins as member.
        kept = company.member_roles or {}
        asked_members = [m if isinstance(m, TeamMemberIn) else
                         TeamMemberIn(user_id=m, role="viewer" if kept.get(str(m)) == "viewer" else "member")
                         for m in data.team_members]
        company.team_members, company.member_roles = await _check_members(
            session, company, company.owner_id, asked_members, "teamMembers")
    if data.add_members or data.remove_members:
        roles = dict(company.member_roles or {})
        current = [m for m in company.team_members or [] if m not in set(data.remove_members or [])]
        merged = {m: TeamMemberIn(user_id=m, role="viewer" if roles.get(str(m)) == "viewer" else "member")
                  for m in current}
        for member in data.add_members or []:
            merged[member.user_id] = member
        company.team_members, company.member_roles = await _check_members(
            session, company, company.owner_id, list(merged.values()), "addMembers")
    company.updated_at = utcnow()
    await session.flush()
    return await _detail(session, user, company)


async def delete_company(*, session: AsyncSession, user: Principal, company_id: str) -> None:
    company = await access.load_company(session, user, company_id, "write", for_update=True)
    if await _has_active_tasks(session, company.id):
        raise AppError(ErrorCode.RESOURCE_IN_USE, "The company has running tasks; stop them first")
    # FKs do the rest: agents and files are detached (SET NULL), workflows, tasks and
    # tool installs are removed (CASCADE), logs keep their text without the link.
    await session.delete(company)
    await session.flush()


# --------------------------------------------------------------------------- metrics, logs, tasks

_DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30), "week": timedelta(weeks=12),
                 "month": timedelta(days=365)}
_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1),
         "month": timedelta(days=31)}
_MAX_BUCKETS = 1000
_WINDOW = "t.company_id = :cid AND t.created_at >= :start AND t.created_at < :end"

_TREND_SQL = text("WITH " + _TASKS_CTE.format(where=_WINDOW) + """,
buckets AS (
  SELECT generate_series(date_trunc(:unit, CAST(:start AS timestamptz)),
                         date_trunc(:unit, CAST(:end AS timestamptz) - interval '1 microsecond'),
                         CAST(:step AS interval)) AS b
)
SELECT b.b AS bucket, count(tk.status) AS tasks,
       count(*) FILTER (WHERE tk.status = 'completed') AS completed,
       count(*) FILTER (WHERE tk.status = 'failed') AS failed,
       coalesce(avg(tk.execution_time) FILTER (WHERE tk.status = 'completed'), 0) AS avg_time,
       coalesce(sum(tk.cost), 0) AS cost, coalesce(sum(tk.tokens), 0) AS tokens
FROM buckets b
LEFT JOIN tk ON date_trunc(:unit, tk.created_at) = b.b
GROUP BY b.b ORDER BY b.b
""")


async def metrics_report(*, session: AsyncSession, user: Principal, company_id: str,
                         params: MetricsParams) -> CompanyMetricsReport:
    """The spec's CompanyMetrics over [startDate, endDate) (no startDate: every task up to
    endDate, i.e. the company's own ``metrics``), with a trend in ``period`` buckets."""
    company = await access.load_company(session, user, company_id, "read")
    end = _utc(params.end_date) or utcnow()
    start = _utc(params.start_date)
    trend_start = start or end - _DEFAULT_SPAN[params.period]
    if trend_start >= end:
        raise invalid("startDate must be before endDate", field="startDate")
    if (end - trend_start) / _STEP[params.period] > _MAX_BUCKETS:
        raise invalid(f"The range holds more than {_MAX_BUCKETS} {params.period} buckets; use a larger period",
                      field="period")
    rows, storage = await _metrics_rows(session, [company.id], start, end)
    r = rows.get(company.id)
    trend_rows = (await session.execute(_TREND_SQL, {"cid": company.id, "start": trend_start, "end": end,
                                                     "unit": params.period, "step": f"1 {params.period}"})).all()
    trend = [TrendPoint(date=iso(t.bucket), tasks=t.tasks, completed=t.completed, failed=t.failed,
                        success_rate=_rate(t.completed, t.failed), average_duration=round(float(t.avg_time), 3),
                        cost=float(t.cost), tokens=int(t.tokens)) for t in trend_rows]
    return CompanyMetricsReport(
        **_metrics(r, storage.get(company.id, 0)).model_dump(), company_id=company.id, period=params.period,
        start_date=start, end_date=end, cancelled_tasks=r.cancelled if r else 0,
        executions=int(r.executions) if r else 0, failed_executions=int(r.failed_executions) if r else 0,
        trend=trend)


async def list_logs(*, session: AsyncSession, user: Principal, company_id: str,
                    params: LogParams) -> tuple[list[LogEntry], Pagination]:
    company = await access.load_company(session, user, company_id, "read")
    L = models.Log
    conditions: list[ColumnElement[bool]] = [L.company_id == company.id]
    if params.level:
        conditions.append(L.level == params.level)
    if params.start_date:
        conditions.append(L.created_at >= _utc(params.start_date))
    if params.end_date:
        conditions.append(L.created_at < _utc(params.end_date))
    if params.search:
        escaped = params.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(L.message.ilike(f"%{escaped}%", escape="\\"))
    total = await _count(session, L, *conditions)
    rows = (await session.execute(select(L).where(*conditions).order_by(L.created_at.desc(), L.id)
                                  .offset((params.page - 1) * params.limit).limit(params.limit))).scalars().all()
    return [logs_service.log_entry(r) for r in rows], Pagination.of(page=params.page, limit=params.limit,
                                                                    total=total)


_TASK_SORTS = {"createdAt": models.Task.created_at, "updatedAt": models.Task.updated_at,
               "priority": models.Task.priority, "status": models.Task.status, "name": models.Task.name,
               "startedAt": models.Task.started_at, "completedAt": models.Task.completed_at}


async def list_tasks(*, session: AsyncSession, user: Principal, company_id: str,
                     params: TaskListParams) -> tuple[list[TaskRead], Pagination]:
    company = await access.load_company(session, user, company_id, "read")
    T = models.Task
    conditions: list[ColumnElement[bool]] = [T.company_id == company.id]
    for column, value in ((T.status, params.status), (T.priority, params.priority), (T.type, params.type)):
        if value is not None:
            conditions.append(column == value)
    total = await _count(session, T, *conditions)
    column = _TASK_SORTS[params.sort]
    if params.sort == "priority":  # by urgency, not alphabet
        column = func.array_position(text("ARRAY['low','medium','high','urgent']::text[]"), T.priority)
    ordering = column.asc().nulls_last() if params.order == "asc" else column.desc().nulls_last()
    rows = (await session.execute(select(T).where(*conditions).order_by(ordering, T.id)
                                  .offset((params.page - 1) * params.limit).limit(params.limit))).scalars().all()
    return [TaskRead.model_validate(r) for r in rows], Pagination.of(page=params.page, limit=params.limit,
                                                                     total=total)


# --------------------------------------------------------------------------- duplicate


def clear_secrets(value: Any, path: str, cleared: list[str]) -> Any:
    """A copy of ``value`` without secrets: sealed values and non-empty values under
    secret names are removed, and their paths appended to ``cleared`` (a duplicate
    must not hand the source's secrets to whoever owns the copy)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if _is_secret_name(str(key)) and item not in (None, "", {}, []):
                cleared.append(sub)
                continue
            cleaned = clear_secrets(item, sub, cleared)
            if cleaned is not _DROP:
                out[key] = cleaned
        return out
    if isinstance(value, list):
        items = (clear_secrets(item, f"{path}[{index}]", cleared) for index, item in enumerate(value))
        return [item for item in items if item is not _DROP]
    if SecretBox.is_sealed(value):
        cleared.append(path)
        return _DROP
    return value


def _copy_workflow_configuration(configuration: dict[str, Any], cleared: list[str]) -> dict[str, Any]:
    """The workflow's named secrets keep their names with an empty value (the workflow
    still lists what it needs); everything else secret goes."""
    names = list((configuration.get("secrets") or {}).keys())
    rest = clear_secrets({k: v for k, v in configuration.items() if k != "secrets"}, "configuration", cleared)
    cleared.extend(f"configuration.secrets.{name}" for name in names)
    return {**rest, "secrets": dict.fromkeys(names, "")} if "secrets" in configuration else rest


def _remap_nodes(nodes: list[dict[str, Any]], agent_map: dict[str, str], cleared: list[str]) -> list[dict[str, Any]]:
    out = []
    for node in clear_secrets(nodes or [], "nodes", cleared):
        data = node.get("data")
        if isinstance(data, dict) and data.get("agentId") in agent_map:
            node = {**node, "data": {**data, "agentId": agent_map[data["agentId"]]}}
        out.append(node)
    return out


async def duplicate_company(*, session: AsyncSession, user: Principal, company_id: str,
                            data: DuplicateRequest) -> DuplicatedCompany:
    """A copy of the company owned by the caller. Duplicating needs update rights on
    the source (owner or admin): a copy is a way of taking everything the company
    holds. Secrets are never copied; ``needsReentry`` lists what was cleared."""
    source = await access.load_company(session, user, company_id, "write")
    settings = effective_settings(source.settings)
    settings["billing"]["currentUsage"] = 0.0
    team: list[uuid.UUID] = []
    roles: dict[str, str] = {}
    if data.include_data:
        team = [m for m in source.team_members or [] if m != user.id]
        if source.owner_id and source.owner_id != user.id:
            team.append(source.owner_id)
        roles = {str(m): (source.member_roles or {}).get(str(m), "member") for m in team}
    copy = models.Company(
        name=data.name, description=source.description, type=source.type, industry=source.industry,
        status="idle", owner_id=user.id, team_members=team, member_roles=roles, settings=settings, metrics={},
        tags=list(source.tags or []), logo=source.logo, website=source.website)
    session.add(copy)
    await session.flush()
    reentry: list[NeedsReentry] = []
    agents = (await session.execute(select(models.Agent).where(models.Agent.company_id == source.id)
                                    .order_by(models.Agent.created_at, models.Agent.id))).scalars().all()
    agent_map: dict[str, str] = {}
    for agent in agents:
        cleared: list[str] = []
        clone = models.Agent(
            name=agent.name, description=agent.description, type=agent.type, model=agent.model,
            provider=agent.provider, status="idle", capabilities=list(agent.capabilities or []),
            configuration=clear_secrets(dict(agent.configuration or {}), "configuration", cleared),
            performance={}, company_id=copy.id, created_by=user.id, tags=list(agent.tags or []),
            version=agent.version, is_public=False)
        session.add(clone)
        await session.flush()
        agent_map[str(agent.id)] = str(clone.id)
        if cleared:
            reentry.append(NeedsReentry(kind="agent", id=clone.id, name=clone.name, fields=cleared))
    installs = (await session.execute(
        select(models.CompanyTool, models.Tool.name).join(models.Tool, models.Tool.id == models.CompanyTool.tool_id)
        .where(models.CompanyTool.company_id == source.id).order_by(models.CompanyTool.installed_at))).all()
    for install, tool_name in installs:
        cleared = []
        link = models.CompanyTool(company_id=copy.id, tool_id=install.tool_id, installed_by=user.id,
                                  configuration=clear_secrets(install.configuration or {}, "configuration", cleared))
        session.add(link)
        await session.flush()
        if cleared:
            reentry.append(NeedsReentry(kind="toolInstall", id=link.id, name=tool_name, fields=cleared))
    workflows = (await session.execute(select(models.Workflow).where(
        models.Workflow.company_id == source.id).order_by(models.Workflow.created_at, models.Workflow.id))).scalars()
    for wf in workflows.all():
        cleared = []
        row = models.Workflow(
            name=wf.name, description=wf.description, version=wf.version, company_id=copy.id,
            nodes=_remap_nodes(wf.nodes, agent_map, cleared), edges=list(wf.edges or []),
            configuration=_copy_workflow_configuration(wf.configuration or {}, cleared),
            # A copy never starts running on its own: it is a draft until activated.
            status="draft", triggers=clear_secrets(wf.triggers or [], "triggers", cleared),
            schedule=({**clear_secrets(wf.schedule, "schedule", cleared), "enabled": False}
                      if wf.schedule else None),
            created_by=user.id, tags=list(wf.tags or []), is_template=False)
        session.add(row)
        await session.flush()
        if cleared:
            reentry.append(NeedsReentry(kind="workflow", id=row.id, name=row.name, fields=cleared))
    detail = await _detail(session, user, copy)
    return DuplicatedCompany(**detail.model_dump(), needs_reentry=reentry)


# --------------------------------------------------------------------------- export / import


async def export_company(*, session: AsyncSession, user: Principal, company_id: str) -> CompanyDocument:
    company = await access.load_company(session, user, company_id, "read")
    settings = effective_settings(company.settings)
    settings["billing"].pop("currentUsage", None)
    agents = (await session.execute(select(models.Agent).where(models.Agent.company_id == company.id)
                                    .order_by(models.Agent.created_at, models.Agent.id))).scalars().all()
    tools = (await session.execute(
        select(models.Tool).join(models.CompanyTool, models.CompanyTool.tool_id == models.Tool.id)
        .where(models.CompanyTool.company_id == company.id).order_by(models.CompanyTool.installed_at))).scalars().all()
    workflows = (await session.execute(select(models.Workflow).where(models.Workflow.company_id == company.id)
                                       .order_by(models.Workflow.created_at, models.Workflow.id))).scalars().all()
    return CompanyDocument(
        format="troupe.company", version=1, exported_at=iso(utcnow()),
        company=ExportCompany(name=company.name, description=company.description, type=company.type,
                              industry=company.industry or "other", settings=settings,
                              tags=list(company.tags or []), logo=company.logo, website=company.website),
        agents=[ExportAgent(id=str(a.id), name=a.name, description=a.description or "", type=a.type,
                            model=a.model, provider=a.provider, capabilities=list(a.capabilities or []),
                            # The agent's own key stays here; training examples are runtime state.
                            configuration={k: v for k, v in (a.configuration or {}).items()
                                           if k not in ("apiKey", "fewShotExamples")},
                            tags=list(a.tags or [])) for a in agents],
        tools=[ExportToolLink(id=t.id, name=t.name, version=t.version) for t in tools],
        workflows=[ExportWorkflow(
            id=str(w.id), name=w.name, description=w.description, version=w.version or "1.0.0",
            nodes=scrub_secrets(w.nodes or []), edges=w.edges or [],
            configuration=scrub_secrets(w.configuration or {}),
            triggers=scrub_secrets(w.triggers or []),
            schedule=scrub_secrets(w.schedule) if w.schedule else None,
            tags=list(w.tags or [])) for w in workflows])


def _spec_document(spec: SpecCompanyDocument, company: models.Company) -> CompanyDocument:
    """The spec's ``{company: Partial<Company>, agents, tools, workflows}`` as a troupe.company
    document: company fields it leaves out keep the company's values, its settings are merged
    over the company's."""
    src = spec.company
    current = effective_settings(company.settings)
    current["billing"].pop("currentUsage", None)
    asked = src.settings.model_dump(mode="json", by_alias=True, exclude_unset=True) if src.settings else {}
    sent = src.model_fields_set
    try:
        part = ExportCompany(
            name=src.name or company.name, description=src.description if "description" in sent
            else company.description, type=src.type or company.type,
            industry=src.industry or company.industry or "other",
            settings=CompanySettingsIn.model_validate(deep_merge(current, asked)),
            tags=src.tags if src.tags is not None else list(company.tags or []),
            logo=src.logo if "logo" in sent else company.logo,
            website=src.website if "website" in sent else company.website)
    except ValueError as exc:
        raise invalid(f"company: {exc}", field="data.company") from exc
    return CompanyDocument.model_construct(
        format="troupe.company", version=1, exported_at=None, company=part, agents=list(spec.agents),
        tools=list(spec.tools), workflows=list(spec.workflows))


async def import_company(*, session: AsyncSession, user: Principal, company_id: str,
                         data: CompanyImportRequest) -> ImportResult:
    company = await access.load_company(session, user, company_id, "write", for_update=True)
    doc = data.data if isinstance(data.data, CompanyDocument) else _spec_document(data.data, company)
    # ---- resolve and check everything before the first write
    problems: list[dict[str, str]] = []
    tool_ids = list(dict.fromkeys(t.id for t in doc.tools))
    referenced_tools = set(tool_ids)
    configurations: list[dict[str, Any]] = []
    for i, agent in enumerate(doc.agents):
        try:
            configurations.append(agents_service.build_configuration(
                agent.provider, agent.model, agent.configuration, field=f"data.agents.{i}.configuration"))
        except AppError as exc:
            problems.append({"field": exc.field or f"data.agents.{i}", "message": exc.message})
        referenced_tools.update(agent.configuration.tools)
    doc_agent_ids = {a.id for a in doc.agents}
    external_agents: set[uuid.UUID] = set()
    for wi, wf in enumerate(doc.workflows):
        for node in wf.nodes:
            if node.data.agent_id and node.data.agent_id not in doc_agent_ids:
                try:
                    external_agents.add(uuid.UUID(node.data.agent_id))
                except ValueError:
                    problems.append({"field": f"data.workflows.{wi}.nodes.{node.id}.data.agentId",
                                     "message": "unknown agent reference"})
            if node.data.tool_id:
                referenced_tools.add(node.data.tool_id)
    usable_tools = set((await session.execute(select(models.Tool.id).where(
        models.Tool.id.in_(referenced_tools), agents_service.visible_tools(user))))
        .scalars()) if referenced_tools else set()
    problems += [{"field": "data.tools", "message": f"tool {t} does not exist or is not visible"}
                 for t in sorted(referenced_tools - usable_tools, key=str)]
    usable_agents = set((await session.execute(select(models.Agent.id).where(
        models.Agent.id.in_(external_agents), agents_service.visible_agents(user))))
        .scalars()) if external_agents else set()
    problems += [{"field": "data.workflows", "message": f"agent {a} does not exist or is not visible"}
                 for a in sorted(external_agents - usable_agents, key=str)]
    if problems:
        raise invalid(f"The document has {len(problems)} problem(s)", field=problems[0]["field"],
                      details=problems)
    if data.overwrite:
        settings = _validated_settings(deep_merge(default_settings(), doc.company.settings.model_dump(
            mode="json", by_alias=True, exclude_unset=True)), field="data.company.settings")
        if await _has_active_tasks(session, company.id):
            raise AppError(ErrorCode.RESOURCE_IN_USE, "The company has running tasks; stop them before overwriting")
        agents_after, tools_after = len(doc.agents), len(tool_ids)
    else:
        settings = effective_settings(company.settings)
        agents_after = await _count(session, models.Agent, models.Agent.company_id == company.id) + len(doc.agents)
        installed = set((await session.execute(select(models.CompanyTool.tool_id).where(
            models.CompanyTool.company_id == company.id))).scalars())
        tools_after = len(installed | set(tool_ids))
    if agents_after > settings["maxAgents"]:
        raise _limit_error("agents", settings["maxAgents"], agents_after)
    if tools_after > settings["maxTools"]:
        raise _limit_error("tools", settings["maxTools"], tools_after)
    # ---- writes (one transaction: the request's)
    if data.overwrite:
        src = doc.company
        company.name, company.description, company.type, company.industry = \
            src.name, src.description, src.type, src.industry
        company.tags, company.logo, company.website = src.tags, src.logo, src.website
        if "billing" in (company.settings or {}):
            settings["billing"]["currentUsage"] = effective_settings(company.settings)["billing"]["currentUsage"]
        company.settings = settings
        # Agents belong to their creators: detached, not destroyed. Workflows are the company's own.
        await session.execute(update(models.Agent).where(models.Agent.company_id == company.id)
                              .values(company_id=None))
        await session.execute(delete(models.Workflow).where(models.Workflow.company_id == company.id))
        await session.execute(delete(models.CompanyTool).where(models.CompanyTool.company_id == company.id,
                                                               models.CompanyTool.tool_id.not_in(tool_ids)))
    new_tools = await _install_tools(session, user, company, tool_ids, "data.tools")
    agent_map: dict[str, str] = {}
    for agent, configuration in zip(doc.agents, configurations, strict=True):
        row = models.Agent(name=agent.name, description=agent.description, type=agent.type, model=agent.model,
                           provider=agent.provider, status="idle", capabilities=agent.capabilities,
                           configuration=configuration, performance={}, company_id=company.id,
                           created_by=user.id, tags=agent.tags, version="1.0.0", is_public=False)
        session.add(row)
        await session.flush()
        agent_map[agent.id] = str(row.id)
    workflow_ids = []
    for wf in doc.workflows:
        nodes = [n.model_dump(mode="json", by_alias=True, exclude_none=True) for n in wf.nodes]
        row = models.Workflow(
            name=wf.name, description=wf.description, version=wf.version, company_id=company.id,
            # A document never brings sealed values in (one could be another tenant's ciphertext).
            nodes=_remap_nodes(nodes, agent_map, []),
            edges=[e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in wf.edges],
            configuration=scrub_secrets(wf.configuration.model_dump(mode="json", by_alias=True,
                                                                    exclude_unset=True)),
            status="draft",
            triggers=scrub_secrets(wf.triggers),
            schedule={**wf.schedule, "enabled": False} if wf.schedule else None,
            created_by=user.id, tags=wf.tags, is_template=False)
        session.add(row)
        await session.flush()
        workflow_ids.append(row.id)
    company.updated_at = utcnow()
    await session.flush()
    return ImportResult(company_id=company.id, overwritten=data.overwrite,
                        agents={k: uuid.UUID(v) for k, v in agent_map.items()}, workflows=workflow_ids,
                        tools_installed=new_tools)

