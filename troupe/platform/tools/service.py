"""Tool rules: visibility, secrets, JSON Schema checks, installs and usage.

Visibility: a caller sees the tools they created, public tools, and tools
installed in a company they may read (admins see all). Only the creator or an
admin may change or delete a tool; others get RES_001 for what they can't see
and AUTH_004 for what they can see but not change.

Deletion policy: a tool installed in a company whose owner is not the tool's
creator is in use by another tenant, so deleting it is refused with RES_003
(uninstall it there first, or deprecate it with ``status: deprecated``).
Installs in the creator's own companies are removed with the tool.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from sqlalchemy import (
    ColumnElement,
    Select,
    cast,
    delete,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import DateTime, Text

from troupe.db import models
from troupe.errors import AppError, ErrorCode, forbidden, invalid, not_found
from troupe.platform.access import load_company, member_company_ids_subquery
from troupe.platform.deps import Principal
from troupe.platform.schemas import PageParams, percent
from troupe.platform.system.gates import ensure_feature
from troupe.platform.tools import schemas as s
from troupe.platform.tools.secrets import looks_secret, mask_map, seal_map
from troupe.timeutil import utcnow

# A company's settings.maxTools when the company does not set one.
DEFAULT_MAX_TOOLS = 20

SORTS: dict[str, Any] = {
    "name": models.Tool.name,
    "createdAt": models.Tool.created_at,
    "updatedAt": models.Tool.updated_at,
    "rating": models.Tool.rating,
    "downloads": models.Tool.downloads,
    "type": models.Tool.type,
    "category": models.Tool.category,
    "status": models.Tool.status,
    "lastUsedAt": models.Tool.last_used_at,
}
MARKET_SORTS: dict[str, Any] = {
    "rating": models.Tool.rating,
    "downloads": models.Tool.downloads,
    "newest": models.Tool.created_at,
}


# --------------------------------------------------------------------------- visibility


def visible_tools(user: Principal) -> ColumnElement[bool]:
    """SQL filter on ``models.Tool``: tools the caller may read."""
    if user.is_global:
        return true()
    installed = select(models.CompanyTool.tool_id).where(
        models.CompanyTool.company_id.in_(member_company_ids_subquery(user)))
    return or_(models.Tool.created_by == user.id, models.Tool.is_public.is_(true()), models.Tool.id.in_(installed))


def _uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError as exc:
        raise not_found(what) from exc


async def get_tool(*, session: AsyncSession, user: Principal, tool_id: uuid.UUID | str,
                   for_update: bool = False) -> models.Tool:
    query = select(models.Tool).where(models.Tool.id == _uuid(tool_id, "Tool"), visible_tools(user))
    if for_update:
        query = query.with_for_update()
    tool = (await session.execute(query)).scalar_one_or_none()
    if tool is None:
        raise not_found("Tool")
    return tool


def _ensure_owner(tool: models.Tool, user: Principal) -> None:
    if not user.is_global and tool.created_by != user.id:
        raise forbidden("Only the tool's creator or an admin may change it")


# --------------------------------------------------------------------------- validation and secrets


def check_json_schema(schema: dict[str, Any] | None, field: str) -> None:
    if schema is None:
        return
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        path = ".".join(str(p) for p in exc.path)
        where = f"{field}.{path}" if path else field
        raise invalid(f"{where}: not a valid JSON Schema: {exc.message}", field=where) from exc


def _schema_doc(body: s.ToolSchema) -> dict[str, Any]:
    doc = body.model_dump(mode="json", by_alias=True)
    check_json_schema(doc["input"], "schema.input")
    check_json_schema(doc["output"], "schema.output")
    return doc


# Type-specific values stored sealed: (section, key); plugin settings by their name (looks_secret).
SEALED_FIELDS = (("database", "connectionString"), ("webhook", "secret"), ("translator", "apiKey"))


def check_type(type_: str, body: s.ToolConfiguration) -> None:
    problems = s.check_type_configuration(type_, body)
    if problems:
        field, message = problems[0]
        raise invalid(message, field=field, details={"problems": [{"field": f, "message": m} for f, m in problems]})


def _seal_sections(doc: dict[str, Any], old: dict[str, Any]) -> None:
    for section, key in SEALED_FIELDS:
        part = doc.get(section)
        if isinstance(part, dict) and part.get(key) is not None:
            part[key] = seal_map({key: part[key]}, old.get(section) if isinstance(old.get(section), dict) else None,
                                 field=f"configuration.{section}")[key]
    plugin = doc.get("plugin")
    if isinstance(plugin, dict):
        old_plugin = old.get("plugin") if isinstance(old.get("plugin"), dict) else {}
        plugin["settings"] = seal_map(plugin.get("settings") or {}, old_plugin.get("settings"),
                                      field="configuration.plugin.settings", is_secret=looks_secret)


def _configuration_doc(body: s.ToolConfiguration, old: dict[str, Any] | None) -> dict[str, Any]:
    doc = body.model_dump(mode="json", by_alias=True, exclude_none=False)
    # Unused type-specific sections are not stored (a null section is "not configured").
    for name in s.ALL_SECTIONS:
        if doc.get(name) is None:
            doc.pop(name, None)
    check_json_schema(doc["validation"].get("inputSchema"), "configuration.validation.inputSchema")
    check_json_schema(doc["validation"].get("outputSchema"), "configuration.validation.outputSchema")
    old = old or {}
    doc["headers"] = seal_map(doc.get("headers"), old.get("headers"), field="configuration.headers",
                              is_secret=looks_secret)
    doc["authentication"]["credentials"] = seal_map(
        doc["authentication"].get("credentials"), (old.get("authentication") or {}).get("credentials"),
        field="configuration.authentication.credentials")
    _seal_sections(doc, old)
    return doc


def masked_configuration(config: dict[str, Any] | None) -> dict[str, Any]:
    doc = copy.deepcopy(config or {})
    if doc.get("headers"):
        doc["headers"] = mask_map(doc["headers"])
    auth = doc.get("authentication")
    if isinstance(auth, dict) and auth.get("credentials"):
        auth["credentials"] = mask_map(auth["credentials"])
    for section, key in SEALED_FIELDS:
        part = doc.get(section)
        if isinstance(part, dict) and key in part:
            part[key] = mask_map({key: part[key]})[key]
    plugin = doc.get("plugin")
    if isinstance(plugin, dict) and plugin.get("settings"):
        plugin["settings"] = mask_map(plugin["settings"])
    return doc


def bump_version(version: str | None) -> str:
    """Patch bump of a semantic version (1.0.0 -> 1.0.1)."""
    parts = (version or "1.0.0").split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"{parts[0]}.{parts[1]}.{int(parts[2]) + 1}"
    return "1.0.1"


# --------------------------------------------------------------------------- CRUD


async def create_tool(*, session: AsyncSession, user: Principal, body: s.ToolCreate) -> models.Tool:
    if body.is_public:  # a public tool is published to the marketplace
        await ensure_feature("marketplace_enabled")
    check_type(body.type, body.configuration)
    tool = models.Tool(
        name=body.name, description=body.description, type=body.type, category=body.category,
        version="1.0.0", status="active",
        configuration=_configuration_doc(body.configuration, None),
        schema=_schema_doc(body.schema_),
        usage={},
        documentation=(body.documentation or s.ToolDocumentation()).model_dump(mode="json", by_alias=True),
        pricing=(body.pricing or s.ToolPricing()).model_dump(mode="json", by_alias=True),
        created_by=user.id, tags=body.tags, is_public=body.is_public,
    )
    session.add(tool)
    await session.flush()
    return tool


async def update_tool(*, session: AsyncSession, user: Principal, tool_id: uuid.UUID,
                      body: s.ToolUpdate) -> models.Tool:
    tool = await get_tool(session=session, user=user, tool_id=tool_id, for_update=True)
    _ensure_owner(tool, user)
    fields = body.model_fields_set
    if "is_public" in fields and body.is_public and not tool.is_public:
        await ensure_feature("marketplace_enabled")
    changed_behaviour = False
    new_type = body.type if "type" in fields and body.type is not None else tool.type
    if ("configuration" in fields and body.configuration is not None) or new_type != tool.type:
        check_type(new_type, body.configuration if "configuration" in fields and body.configuration is not None
                   else s.ToolConfiguration.model_validate(masked_configuration(tool.configuration)))
    if "configuration" in fields and body.configuration is not None:
        config = _configuration_doc(body.configuration, tool.configuration)
        changed_behaviour |= config != tool.configuration
        tool.configuration = config
    if "schema_" in fields and body.schema_ is not None:
        schema = _schema_doc(body.schema_)
        changed_behaviour |= schema != tool.schema
        tool.schema = schema
    for name in ("name", "description", "type", "category", "status", "tags", "is_public"):
        if name in fields:  # never null: the schema refuses it
            setattr(tool, name, getattr(body, name))
    if "documentation" in fields and body.documentation is not None:
        tool.documentation = body.documentation.model_dump(mode="json", by_alias=True)
    if "pricing" in fields and body.pricing is not None:
        tool.pricing = body.pricing.model_dump(mode="json", by_alias=True)
    if changed_behaviour:
        tool.version = bump_version(tool.version)
    tool.updated_at = utcnow()
    await session.flush()
    return tool


async def delete_tool(*, session: AsyncSession, user: Principal, tool_id: uuid.UUID) -> None:
    tool = await get_tool(session=session, user=user, tool_id=tool_id, for_update=True)
    _ensure_owner(tool, user)
    foreign = (await session.execute(
        select(func.count()).select_from(models.CompanyTool)
        .join(models.Company, models.Company.id == models.CompanyTool.company_id)
        .where(models.CompanyTool.tool_id == tool.id,
               or_(models.Company.owner_id.is_(None), models.Company.owner_id != tool.created_by))
    )).scalar_one()
    if foreign:
        raise AppError(ErrorCode.RESOURCE_IN_USE,
                       f"The tool is installed in {foreign} other tenant compan{'y' if foreign == 1 else 'ies'}; "
                       "it must be uninstalled there first (or set status 'deprecated')",
                       details={"installedCompanies": foreign})
    await session.delete(tool)
    await session.flush()


# --------------------------------------------------------------------------- lists


def _order(query: Select, column: Any, order: str) -> Select:
    primary = column.asc().nulls_last() if order == "asc" else column.desc().nulls_last()
    return query.order_by(primary, models.Tool.id)


def _search(query: Select, term: str | None) -> Select:
    if not term:
        return query
    # Same expression as the ix_tools_fts GIN index.
    return query.where(text(
        "to_tsvector('simple', coalesce(tools.name, '') || ' ' || coalesce(tools.description, '')) "
        "@@ plainto_tsquery('simple', :tool_search)").bindparams(tool_search=term))


def _tags(values: list[str] | None) -> list[str]:
    # ?tags=a&tags=b and ?tags=a,b both work; a tool must carry every tag asked for.
    return [t.strip() for v in values or [] for t in v.split(",") if t.strip()]


async def _page(session: AsyncSession, query: Select, page: PageParams) -> tuple[list[models.Tool], int]:
    total = (await session.execute(select(func.count()).select_from(query.order_by(None).subquery()))).scalar_one()
    rows = (await session.execute(query.offset(page.offset).limit(page.limit))).scalars().all()
    return list(rows), total


async def list_tools(*, session: AsyncSession, user: Principal, page: PageParams, type_: str | None = None,
                     category: str | None = None, status: str | None = None, tags: list[str] | None = None,
                     is_public: bool | None = None, created_by: uuid.UUID | None = None,
                     ) -> tuple[list[models.Tool], int]:
    sort = page.sort or "createdAt"
    if sort not in SORTS:
        raise invalid(f"sort must be one of {sorted(SORTS)}", field="sort")
    query = select(models.Tool).where(visible_tools(user))
    if type_:
        query = query.where(models.Tool.type == type_)
    if category:
        query = query.where(models.Tool.category == category)
    if status:
        query = query.where(models.Tool.status == status)
    if wanted := _tags(tags):
        query = query.where(models.Tool.tags.contains(cast(wanted, ARRAY(Text))))
    if is_public is not None:
        query = query.where(models.Tool.is_public.is_(true() if is_public else false()))
    if created_by is not None:
        query = query.where(models.Tool.created_by == created_by)
    query = _order(_search(query, page.search), SORTS[sort], page.order)
    return await _page(session, query, page)


async def marketplace(*, session: AsyncSession, page: PageParams, category: str | None = None,
                      type_: str | None = None, pricing: Literal["free", "paid"] | None = None,
                      rating: float | None = None, popular: bool = False, tags: list[str] | None = None,
                      ) -> tuple[list[models.Tool], int]:
    sort = page.sort or ("downloads" if popular else "rating")
    if sort not in MARKET_SORTS:
        raise invalid(f"sort must be one of {sorted(MARKET_SORTS)}", field="sort")
    query = select(models.Tool).where(models.Tool.is_public.is_(true()),
                                      models.Tool.status.in_(("active", "maintenance")))
    if category:
        query = query.where(models.Tool.category == category)
    if type_:
        query = query.where(models.Tool.type == type_)
    if wanted := _tags(tags):
        query = query.where(models.Tool.tags.contains(cast(wanted, ARRAY(Text))))
    is_free = func.coalesce(models.Tool.pricing["model"].astext, "free") == "free"
    if pricing == "free":
        query = query.where(is_free)
    elif pricing == "paid":
        query = query.where(~is_free)
    if rating is not None:
        query = query.where(models.Tool.rating >= rating)
    column = models.Tool.downloads if popular and not page.sort else MARKET_SORTS[sort]
    query = _order(_search(query, page.search), column, page.order)
    return await _page(session, query, page)


# --------------------------------------------------------------------------- usage


def _usage_scope(tool: models.Tool, user: Principal) -> tuple[ColumnElement[bool], Literal["all", "yours"]]:
    if user.is_global or tool.created_by == user.id:
        return true(), "all"
    # Someone else's public tool: only the calls made in your companies or by you.
    return or_(models.ToolCall.company_id.in_(member_company_ids_subquery(user)),
               models.ToolCall.user_id == user.id), "yours"


async def _series(session: AsyncSession, tool_id: uuid.UUID, scope: ColumnElement[bool], unit: str,
                  count: int, now: datetime) -> list[tuple[datetime, int, int]]:
    """Calls per ``unit`` over the last ``count`` units, oldest first, zero-filled in SQL."""
    trunc_now = func.date_trunc(unit, cast(now, DateTime(timezone=True)))
    step = literal_column(f"interval '1 {unit}'")  # unit comes from a fixed whitelist
    buckets = select(func.generate_series(trunc_now - step * (count - 1), trunc_now, step)
                     .label("start")).subquery()
    calls = (select(func.date_trunc(unit, models.ToolCall.created_at).label("start"),
                    func.count().label("total"),
                    func.count().filter(models.ToolCall.success.is_(true())).label("ok"))
             .where(models.ToolCall.tool_id == tool_id, scope)
             .group_by(literal_column("1")).subquery())
    rows = (await session.execute(
        select(buckets.c.start, func.coalesce(calls.c.total, 0), func.coalesce(calls.c.ok, 0))
        .select_from(buckets.outerjoin(calls, calls.c.start == buckets.c.start))
        .order_by(buckets.c.start))).all()
    return [(r[0], int(r[1]), int(r[2])) for r in rows]


async def usage_summary(*, session: AsyncSession, tool: models.Tool, trends: bool = True) -> s.ToolUsage:
    """The tool's own counters (all calls, as downloads and rating are public
    figures); the per-agent/company/user breakdown is ``usage_report``'s, scoped."""
    return await _summary(session, tool.id, true(), None, trends=trends)


async def _summary(session: AsyncSession, tool_id: uuid.UUID, scope: ColumnElement[bool],
                   since: datetime | None, *, trends: bool) -> s.ToolUsage:
    where = [models.ToolCall.tool_id == tool_id, scope]
    if since is not None:
        where.append(models.ToolCall.created_at >= since)
    total, ok, avg, last = (await session.execute(
        select(func.count(), func.count().filter(models.ToolCall.success.is_(true())),
               func.avg(models.ToolCall.duration_ms), func.max(models.ToolCall.created_at)).where(*where))).one()
    agents = (await session.execute(
        select(models.ToolCall.agent_id).where(*where, models.ToolCall.agent_id.is_not(None))
        .group_by(models.ToolCall.agent_id).order_by(func.count().desc(), models.ToolCall.agent_id).limit(5)
    )).scalars().all()
    trend = s.ToolTrends(daily=[], weekly=[], monthly=[])
    if trends:
        now = utcnow()
        trend = s.ToolTrends(
            daily=[t for _, t, _ in await _series(session, tool_id, scope, "day", 7, now)],
            weekly=[t for _, t, _ in await _series(session, tool_id, scope, "week", 4, now)],
            monthly=[t for _, t, _ in await _series(session, tool_id, scope, "month", 12, now)],
        )
    return s.ToolUsage(total_calls=total, successful_calls=ok, failed_calls=total - ok,
                       average_response_time=round(float(avg or 0), 3), last_used_at=last,
                       error_rate=percent(total - ok, total), popular_agents=[str(a) for a in agents], trends=trend)


_WINDOWS: dict[str, tuple[int, timedelta]] = {
    "hour": (24, timedelta(hours=23)),
    "day": (30, timedelta(days=29)),
    "week": (12, timedelta(weeks=11)),
    "month": (12, timedelta(days=335)),
}
_GROUP_COLUMNS = {"agent": models.ToolCall.agent_id, "company": models.ToolCall.company_id,
                  "user": models.ToolCall.user_id}


async def usage_report(*, session: AsyncSession, user: Principal, tool_id: uuid.UUID,
                       period: Literal["hour", "day", "week", "month"] = "day",
                       group_by: Literal["agent", "company", "user"] | None = None) -> s.ToolUsageReport:
    tool = await get_tool(session=session, user=user, tool_id=tool_id)
    scope, scope_name = _usage_scope(tool, user)
    count, _ = _WINDOWS[period]
    now = utcnow()
    series = await _series(session, tool.id, scope, period, count, now)
    since = series[0][0]
    summary = await _summary(session, tool.id, scope, since, trends=True)
    groups: list[s.UsageGroup] = []
    if group_by is not None:
        column = _GROUP_COLUMNS[group_by]
        ok = func.count().filter(models.ToolCall.success.is_(true()))
        rows = (await session.execute(
            select(column, func.count(), ok, func.avg(models.ToolCall.duration_ms))
            .where(models.ToolCall.tool_id == tool.id, scope, models.ToolCall.created_at >= since)
            .group_by(column).order_by(func.count().desc(), column).limit(100))).all()
        groups = [s.UsageGroup(key=str(key) if key else None, total_calls=total, successful_calls=good,
                               failed_calls=total - good, error_rate=percent(total - good, total),
                               average_response_time=round(float(avg or 0), 3))
                  for key, total, good, avg in rows]
    return s.ToolUsageReport(
        **summary.model_dump(), tool_id=tool.id, period=period, group_by=group_by, since=since,
        series=[s.UsageBucket(start=start, total_calls=total, successful_calls=good, failed_calls=total - good)
                for start, total, good in series],
        groups=groups, scope=scope_name)


async def usage_summaries(*, session: AsyncSession, tool_ids: list[uuid.UUID]) -> dict[uuid.UUID, s.ToolUsage]:
    """Counters for a page of tools in one grouped query (lists show them without trends)."""
    if not tool_ids:
        return {}
    ok = func.count().filter(models.ToolCall.success.is_(true()))
    rows = (await session.execute(
        select(models.ToolCall.tool_id, func.count(), ok, func.avg(models.ToolCall.duration_ms),
               func.max(models.ToolCall.created_at))
        .where(models.ToolCall.tool_id.in_(tool_ids)).group_by(models.ToolCall.tool_id))).all()
    return {tid: s.ToolUsage(total_calls=total, successful_calls=good, failed_calls=total - good,
                             average_response_time=round(float(avg or 0), 3), last_used_at=last,
                             error_rate=percent(total - good, total))
            for tid, total, good, avg, last in rows}


_TRENDS_SQL = text("""
WITH spans AS (
  SELECT * FROM (VALUES ('daily', 'day', 7), ('weekly', 'week', 4), ('monthly', 'month', 12)) AS v(trend, unit, n)
),
buckets AS (
  SELECT s.trend, b AS start, b + CAST('1 ' || s.unit AS interval) AS stop
  FROM spans s, LATERAL generate_series(
    date_trunc(s.unit, CAST(:now AS timestamptz)) - CAST((s.n - 1) || ' ' || s.unit AS interval),
    date_trunc(s.unit, CAST(:now AS timestamptz)), CAST('1 ' || s.unit AS interval)) AS b
),
ids AS (SELECT DISTINCT unnest(CAST(:ids AS uuid[])) AS tool_id),
calls AS (
  SELECT c.tool_id, c.created_at FROM tool_calls c
  WHERE c.tool_id = ANY(:ids) AND c.created_at >= (SELECT min(start) FROM buckets)
)
SELECT ids.tool_id, bk.trend, bk.start, count(calls.tool_id) AS calls
FROM ids CROSS JOIN buckets bk
LEFT JOIN calls ON calls.tool_id = ids.tool_id AND calls.created_at >= bk.start AND calls.created_at < bk.stop
GROUP BY ids.tool_id, bk.trend, bk.start
ORDER BY ids.tool_id, bk.trend, bk.start
""")


async def usage_trends(*, session: AsyncSession, tool_ids: list[uuid.UUID]) -> dict[uuid.UUID, s.ToolTrends]:
    """``usage.trends`` (calls per day / week / month, as ``usage_summary``) for many tools in one query."""
    if not tool_ids:
        return {}
    series: dict[uuid.UUID, dict[str, list[int]]] = {
        t: {"daily": [], "weekly": [], "monthly": []} for t in tool_ids}
    for r in (await session.execute(_TRENDS_SQL, {"ids": tool_ids, "now": utcnow()})).all():
        series[r.tool_id][r.trend].append(int(r.calls))
    return {t: s.ToolTrends(**v) for t, v in series.items()}


# --------------------------------------------------------------------------- installs


async def install(*, session: AsyncSession, user: Principal, tool_id: uuid.UUID,
                  body: s.InstallRequest) -> s.Installation:
    tool = await get_tool(session=session, user=user, tool_id=tool_id)
    # The row lock serialises concurrent installs into one company, so maxTools holds.
    company = await load_company(session, user, body.company_id, "write", for_update=True)
    exists = (await session.execute(select(models.CompanyTool.id).where(
        models.CompanyTool.company_id == company.id, models.CompanyTool.tool_id == tool.id))).scalar_one_or_none()
    if exists is not None:
        raise AppError(ErrorCode.RESOURCE_ALREADY_EXISTS, "The tool is already installed in this company")
    installed = (await session.execute(select(func.count()).select_from(models.CompanyTool).where(
        models.CompanyTool.company_id == company.id))).scalar_one()
    limit = _max_tools(company)
    if installed >= limit:
        raise AppError(ErrorCode.RESOURCE_LIMIT_EXCEEDED,
                       f"The company already has {installed} tools; its maxTools is {limit}",
                       details={"maxTools": limit, "installed": installed})
    link = models.CompanyTool(company_id=company.id, tool_id=tool.id, installed_by=user.id,
                              configuration=seal_map(body.configuration or {}, None, field="configuration",
                                                     is_secret=looks_secret))
    session.add(link)
    await session.flush()
    downloads = (await session.execute(
        update(models.Tool).where(models.Tool.id == tool.id).values(downloads=models.Tool.downloads + 1)
        .returning(models.Tool.downloads))).scalar_one()
    return s.Installation(id=link.id, company_id=company.id, tool_id=tool.id,
                          configuration=mask_map(link.configuration) or {}, installed_by=user.id,
                          installed_at=link.installed_at, downloads=downloads)


def _max_tools(company: models.Company) -> int:
    value = (company.settings or {}).get("maxTools")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else DEFAULT_MAX_TOOLS


async def uninstall(*, session: AsyncSession, user: Principal, tool_id: uuid.UUID,
                    body: s.UninstallRequest) -> s.Uninstalled:
    tool_uuid = _uuid(tool_id, "Tool")
    company = await load_company(session, user, body.company_id, "write")
    removed = (await session.execute(
        delete(models.CompanyTool).where(models.CompanyTool.company_id == company.id,
                                         models.CompanyTool.tool_id == tool_uuid)
        .returning(models.CompanyTool.id))).scalar_one_or_none()
    if removed is None:
        raise not_found("Tool installation")
    return s.Uninstalled(company_id=company.id, tool_id=tool_uuid)


# --------------------------------------------------------------------------- output


def to_out(tool: models.Tool, usage: s.ToolUsage | None = None) -> s.ToolOut:
    return s.ToolOut(
        id=tool.id, name=tool.name, description=tool.description, type=tool.type, category=tool.category,
        version=tool.version or "1.0.0", status=tool.status or "active",
        configuration=s.ToolConfiguration.model_validate(masked_configuration(tool.configuration)),
        schema=s.ToolSchema.model_validate(tool.schema or {}),
        usage=usage or s.ToolUsage(),
        documentation=s.ToolDocumentation.model_validate(tool.documentation or {}),
        pricing=s.ToolPricing.model_validate(tool.pricing or {}),
        created_by=tool.created_by, tags=list(tool.tags or []), is_public=bool(tool.is_public),
        rating=float(tool.rating or 0), downloads=int(tool.downloads or 0),
        created_at=tool.created_at, updated_at=tool.updated_at, last_used_at=tool.last_used_at)


async def to_out_list(*, session: AsyncSession, tools: list[models.Tool]) -> list[s.ToolOut]:
    usage = await usage_summaries(session=session, tool_ids=[t.id for t in tools])
    return [to_out(t, usage.get(t.id)) for t in tools]
