"""Companies: CRUD and members, live metrics, logs, tasks, duplicate, export/import.

Every read goes through ``access.visible_companies`` / ``access.load_company`` so
another tenant's company answers RES_001; writes need the 'write' need (owner or
admin). Multi-row changes run in the request's single transaction: an error
anywhere rolls everything back.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.errors import AppError, ErrorCode, invalid
from troupe.platform import access
from troupe.platform.agents import service as agents_service
from troupe.platform.companies.schemas import (
    CompanyCreate,
    CompanyDetail,
    CompanyDocument,
    CompanyListParams,
    CompanyMetrics,
    CompanyMetricsReport,
    CompanyRead,
    CompanySettings,
    CompanyUpdate,
    CostBreakdown,
    Costs,
    DuplicatedCompany,
    DuplicateRequest,
    ExportAgent,
    ExportCompany,
    ExportToolLink,
    ExportWorkflow,
    ImportRequest,
    ImportResult,
    LogParams,
    LogRead,
    MemberRead,
    MetricsParams,
    MetricsTotals,
    NeedsReentry,
    Performance,
    ResourceUsage,
    TaskListParams,
    TaskRead,
    TeamMemberIn,
    ToolLinkRead,
    TrendPoint,
    WorkflowSummary,
    default_settings,
    effective_settings,
)
from troupe.platform.deps import Principal
from troupe.platform.schemas import Pagination, deep_merge
from troupe.platform.system.gates import ensure_company_settings, ensure_team_size
from troupe.security import SecretBox
from troupe.timeutil import iso, utcnow

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


def _naive(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


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

_LIVE_SQL = text("WITH " + _TASKS_CTE.format(where="t.company_id = ANY(:ids)") + """
SELECT company_id,
       count(*) AS total,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'running') AS running,
       coalesce(avg(execution_time) FILTER (WHERE status = 'completed'), 0) AS avg_time,
       max(started_at) AS last_execution,
       coalesce(sum(cost), 0) AS cost, coalesce(sum(api_cost), 0) AS api_cost,
       coalesce(sum(cost) FILTER (WHERE created_at >= date_trunc('month', CAST(:now AS timestamp))), 0) AS monthly,
       coalesce(sum(tokens), 0) AS tokens,
       coalesce(sum(exec_ms), 0) AS exec_ms, coalesce(sum(exec_n), 0) AS exec_n,
       count(*) FILTER (WHERE status IN ('completed', 'failed')
                        AND completed_at >= CAST(:now AS timestamp) - interval '24 hours') AS finished_24h
FROM tk GROUP BY company_id
""")


def _rate(completed: int, failed: int) -> float:
    return round(100.0 * completed / (completed + failed), 2) if completed + failed else 0.0


async def live_metrics(session: AsyncSession, company_ids: list[uuid.UUID]) -> dict[uuid.UUID, CompanyMetrics]:
    """The spec's CompanyMetrics for many companies in two grouped queries."""
    if not company_ids:
        return {}
    rows = {r.company_id: r for r in (await session.execute(_LIVE_SQL, {"ids": company_ids, "now": utcnow()})).all()}
    storage = dict((await session.execute(
        select(models.File.company_id, func.coalesce(func.sum(models.File.size), 0))
        .where(models.File.company_id.in_(company_ids)).group_by(models.File.company_id))).all())
    out = {}
    for cid in company_ids:
        r = rows.get(cid)
        if r is None:
            out[cid] = CompanyMetrics(
                total_tasks=0, completed_tasks=0, failed_tasks=0, pending_tasks=0, running_tasks=0,
                average_execution_time=0.0, success_rate=0.0, last_execution_at=None,
                resource_usage=ResourceUsage(storage=int(storage.get(cid, 0)), tokens=0),
                costs=Costs(monthly=0, total=0, breakdown=CostBreakdown(api=0, other=0)),
                performance=Performance(response_time=0, throughput=0))
            continue
        total_cost, api_cost = float(r.cost), float(r.api_cost)
        out[cid] = CompanyMetrics(
            total_tasks=r.total, completed_tasks=r.completed, failed_tasks=r.failed, pending_tasks=r.pending,
            running_tasks=r.running, average_execution_time=round(float(r.avg_time), 3),
            success_rate=_rate(r.completed, r.failed), last_execution_at=r.last_execution,
            resource_usage=ResourceUsage(storage=int(storage.get(cid, 0)), tokens=int(r.tokens)),
            costs=Costs(monthly=float(r.monthly), total=total_cost,
                        breakdown=CostBreakdown(api=api_cost, other=max(total_cost - api_cost, 0.0))),
            performance=Performance(
                response_time=round(float(r.exec_ms) / int(r.exec_n), 3) if r.exec_n else 0.0,
                throughput=round(int(r.finished_24h) / 24.0, 4)))
    return out


# --------------------------------------------------------------------------- reads


def _agent_count():
    return (select(func.count()).select_from(models.Agent).where(models.Agent.company_id == C.id)
            .correlate(C).scalar_subquery())


def _tool_count():
    return (select(func.count()).select_from(models.CompanyTool).where(models.CompanyTool.company_id == C.id)
            .correlate(C).scalar_subquery())


def _to_read(company: models.Company, user: Principal, *, agents: int = 0, tools: int = 0,
             metrics: CompanyMetrics | None = None) -> CompanyRead:
    return CompanyRead(
        id=company.id, name=company.name, description=company.description, type=company.type,
        industry=company.industry, status=company.status, owner_id=company.owner_id,
        team_members=list(company.team_members or []),
        settings=CompanySettings.model_validate(effective_settings(company.settings)),
        tags=list(company.tags or []), logo=company.logo, website=company.website, agent_count=agents,
        tool_count=tools, my_role=access.role_in(company, user), metrics=metrics, created_at=company.created_at,
        updated_at=company.updated_at, last_activity_at=company.last_activity_at)


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
    metrics = await live_metrics(session, [c.id for c, _, _ in rows])
    items = [_to_read(c, user, agents=a, tools=t, metrics=metrics[c.id]) for c, a, t in rows]
    return items, Pagination.of(page=params.page, limit=params.limit, total=total)


def _summary(w: models.Workflow) -> WorkflowSummary:
    return WorkflowSummary(id=w.id, name=w.name, version=w.version, status=w.status, node_count=len(w.nodes or []),
                           edge_count=len(w.edges or []), updated_at=w.updated_at,
                           last_executed_at=w.last_executed_at)


async def _detail(session: AsyncSession, user: Principal, company: models.Company) -> CompanyDetail:
    agent_rows = (await session.execute(
        select(models.Agent, agents_service._review_count()).where(models.Agent.company_id == company.id)
        .order_by(models.Agent.created_at, models.Agent.id))).all()
    tool_rows = (await session.execute(
        select(models.Tool, models.CompanyTool.installed_at)
        .join(models.CompanyTool, models.CompanyTool.tool_id == models.Tool.id)
        .where(models.CompanyTool.company_id == company.id).order_by(models.CompanyTool.installed_at))).all()
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
    base = _to_read(company, user, agents=len(agent_rows), tools=len(tool_rows), metrics=metrics)
    summaries = [_summary(w) for w in workflows]
    main = next((s for s in summaries if s.status == "active"), summaries[0] if summaries else None)
    return CompanyDetail(
        **base.model_dump(), members=members,
        agents=[agents_service.to_read(a, n) for a, n in agent_rows],
        tools=[ToolLinkRead(id=t.id, name=t.name, version=t.version, type=t.type, category=t.category,
                            installed_at=at) for t, at in tool_rows],
        workflows=summaries, workflow=main)


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
        company.team_members, company.member_roles = await _check_members(
            session, company, company.owner_id, data.team_members, "teamMembers")
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

_TOTALS_SQL = text("WITH " + _TASKS_CTE.format(where=_WINDOW) + """
SELECT count(*) AS total,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'running') AS running,
       coalesce(avg(execution_time) FILTER (WHERE status = 'completed'), 0) AS avg_time,
       coalesce(sum(cost), 0) AS cost, coalesce(sum(tokens), 0) AS tokens,
       coalesce(sum(n), 0) AS executions, coalesce(sum(nf), 0) AS failed_executions
FROM tk
""")

_TREND_SQL = text("WITH " + _TASKS_CTE.format(where=_WINDOW) + """,
buckets AS (
  SELECT generate_series(date_trunc(:unit, CAST(:start AS timestamp)),
                         date_trunc(:unit, CAST(:end AS timestamp) - interval '1 microsecond'),
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
    company = await access.load_company(session, user, company_id, "read")
    end = _naive(params.end_date) or utcnow()
    start = _naive(params.start_date) or end - _DEFAULT_SPAN[params.period]
    if start >= end:
        raise invalid("startDate must be before endDate", field="startDate")
    if (end - start) / _STEP[params.period] > _MAX_BUCKETS:
        raise invalid(f"The range holds more than {_MAX_BUCKETS} {params.period} buckets; use a larger period",
                      field="period")
    args = {"cid": company.id, "start": start, "end": end}
    t = (await session.execute(_TOTALS_SQL, args)).one()
    rows = (await session.execute(_TREND_SQL, {**args, "unit": params.period,
                                               "step": f"1 {params.period}"})).all()
    trend = [TrendPoint(date=iso(r.bucket), tasks=r.tasks, completed=r.completed, failed=r.failed,
                        success_rate=_rate(r.completed, r.failed), average_duration=round(float(r.avg_time), 3),
                        cost=float(r.cost), tokens=int(r.tokens)) for r in rows]
    totals = MetricsTotals(
        total_tasks=t.total, completed_tasks=t.completed, failed_tasks=t.failed, cancelled_tasks=t.cancelled,
        pending_tasks=t.pending, running_tasks=t.running, success_rate=_rate(t.completed, t.failed),
        average_duration=round(float(t.avg_time), 3), total_cost=float(t.cost), total_tokens=int(t.tokens),
        executions=int(t.executions), failed_executions=int(t.failed_executions))
    return CompanyMetricsReport(company_id=company.id, period=params.period, start_date=start, end_date=end,
                                totals=totals, trend=trend)


async def list_logs(*, session: AsyncSession, user: Principal, company_id: str,
                    params: LogParams) -> tuple[list[LogRead], Pagination]:
    company = await access.load_company(session, user, company_id, "read")
    L = models.Log
    conditions: list[ColumnElement[bool]] = [L.company_id == company.id]
    if params.level:
        conditions.append(L.level == params.level)
    if params.start_date:
        conditions.append(L.created_at >= _naive(params.start_date))
    if params.end_date:
        conditions.append(L.created_at < _naive(params.end_date))
    if params.search:
        escaped = params.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(L.message.ilike(f"%{escaped}%", escape="\\"))
    total = await _count(session, L, *conditions)
    rows = (await session.execute(select(L).where(*conditions).order_by(L.created_at.desc(), L.id)
                                  .offset((params.page - 1) * params.limit).limit(params.limit))).scalars().all()
    return [LogRead.model_validate(r) for r in rows], Pagination.of(page=params.page, limit=params.limit,
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


async def import_company(*, session: AsyncSession, user: Principal, company_id: str,
                         data: ImportRequest) -> ImportResult:
    company = await access.load_company(session, user, company_id, "write", for_update=True)
    doc = data.data
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
            configuration=scrub_secrets(wf.configuration), status="draft",
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

