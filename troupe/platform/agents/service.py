"""Agents: visibility, configuration rules, CRUD, performance, clone, marketplace, reviews.

Visibility: an agent is readable by its creator, by anyone who can read the
company that holds it, and by everyone once public; writable only by its
creator or a global admin. Anything unreadable answers RES_001.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, text, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.db import models
from troupe.errors import AppError, ErrorCode, forbidden, invalid, not_found
from troupe.knowledge import index as knowledge
from troupe.platform import access
from troupe.platform.agents.schemas import (
    BASE_URL_PROVIDERS,
    RECENT_REVIEWS,
    AgentConfiguration,
    AgentCreate,
    AgentListParams,
    AgentPerformance,
    AgentPerformanceReport,
    AgentRead,
    AgentUpdate,
    CloneRequest,
    PerformanceMetric,
    PerformanceParams,
    PerformanceTrends,
    PublishRequest,
    ReviewCreate,
    ReviewListParams,
    ReviewRead,
    ReviewResult,
    SelectedTrends,
)
from troupe.platform.companies.schemas import effective_settings
from troupe.platform.deps import Principal
from troupe.platform.schemas import Pagination, deep_merge, percent
from troupe.platform.system.gates import ensure_feature
from troupe.platform.tools.secrets import MASK
from troupe.providers.catalog import DEFAULT_CONTEXT_WINDOW, context_window
from troupe.security import SecretBox
from troupe.timeutil import iso, utcnow

# Changing any of these changes what the agent does, so the version moves.
BEHAVIOUR_FIELDS = ("configuration", "model", "provider", "capabilities")
ACTIVE_TASK_STATES = ("running", "paused")


# --------------------------------------------------------------------------- visibility


def visible_agents(user: Principal) -> ColumnElement[bool]:
    """SQL filter: agents the caller may read (own, in a readable company, or public)."""
    if user.is_global:
        return true()
    return or_(models.Agent.created_by == user.id, models.Agent.is_public.is_(True),
               models.Agent.company_id.in_(access.member_company_ids_subquery(user)))


def visible_tools(user: Principal) -> ColumnElement[bool]:
    """SQL filter: tools the caller may use (own, public, or installed in a readable company)."""
    if user.is_global:
        return true()
    installed = select(models.CompanyTool.tool_id).where(
        models.CompanyTool.company_id.in_(access.member_company_ids_subquery(user)))
    return or_(models.Tool.created_by == user.id, models.Tool.is_public.is_(True), models.Tool.id.in_(installed))


def can_write(agent: models.Agent, user: Principal) -> bool:
    return user.is_global or agent.created_by == user.id


def _parse_id(value: uuid.UUID | str, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise not_found(what) from exc


async def load_agent(session: AsyncSession, user: Principal, agent_id: uuid.UUID | str, *,
                     write: bool = False, for_update: bool = False) -> models.Agent:
    aid = _parse_id(agent_id, "Agent")
    stmt = select(models.Agent).where(models.Agent.id == aid, visible_agents(user))
    if for_update:
        stmt = stmt.with_for_update(of=models.Agent)
    agent = (await session.execute(stmt)).scalar_one_or_none()
    if agent is None:
        raise not_found("Agent")
    if write and not can_write(agent, user):
        raise forbidden("Only the agent's creator or an admin may change it")
    return agent


async def ensure_tools_visible(session: AsyncSession, user: Principal, tool_ids: list[uuid.UUID],
                               field: str) -> None:
    wanted = set(tool_ids)
    if not wanted:
        return
    found = set((await session.execute(
        select(models.Tool.id).where(models.Tool.id.in_(wanted), visible_tools(user)))).scalars())
    missing = sorted(str(t) for t in wanted - found)
    if missing:
        raise AppError(ErrorCode.RESOURCE_NOT_FOUND, "Tool not found", field=field, details={"toolIds": missing})


async def ensure_agent_capacity(session: AsyncSession, company: models.Company, adding: int) -> None:
    """RES_004 when ``adding`` more agents would exceed the company's maxAgents.
    Callers hold the company row locked (load_company(..., for_update=True))."""
    if adding <= 0:
        return
    limit = int(effective_settings(company.settings)["maxAgents"])
    current = await session.scalar(select(func.count()).select_from(models.Agent)
                                   .where(models.Agent.company_id == company.id)) or 0
    if current + adding > limit:
        raise AppError(ErrorCode.RESOURCE_LIMIT_EXCEEDED,
                       f"The company allows at most {limit} agents ({current} attached)",
                       details={"maxAgents": limit, "current": current, "adding": adding})


def check_configuration(provider: str, model: str, config: dict[str, Any], *, field: str = "configuration") -> None:
    """Rules that span fields: maxTokens <= contextWindow <= the model's known window;
    which provider takes baseUrl, endpoint and apiKey; responseSchema only for structured."""
    known = context_window(provider, model)
    # A stored configuration may predate a key (rows written before it existed): its default applies.
    defaults = AgentConfiguration.model_fields
    window = int(config.get("contextWindow") or defaults["context_window"].default)
    if known is not None and window > known:
        raise invalid(f"contextWindow {window} exceeds {model}'s context window of {known} tokens",
                      field=f"{field}.contextWindow")
    if int(config.get("maxTokens") or defaults["max_tokens"].default) > window:
        raise invalid(f"maxTokens must not exceed contextWindow ({window})", field=f"{field}.maxTokens")
    if config.get("baseUrl") and provider not in BASE_URL_PROVIDERS:
        raise invalid(f"baseUrl is for providers {', '.join(BASE_URL_PROVIDERS)}; provider 'custom' takes "
                      "endpoint", field=f"{field}.baseUrl")
    if config.get("endpoint") and provider != "custom":
        raise invalid("endpoint is the custom provider's URL; other providers take baseUrl",
                      field=f"{field}.endpoint")
    if provider == "custom" and not config.get("endpoint"):
        raise invalid("provider 'custom' needs configuration.endpoint", field=f"{field}.endpoint")
    if config.get("apiKey") and provider == "simulated":
        raise invalid("the simulated provider takes no apiKey", field=f"{field}.apiKey")
    schema = config.get("responseSchema")
    if schema is not None:
        if config.get("responseFormat") != "structured":
            raise invalid("responseSchema applies to responseFormat 'structured'", field=f"{field}.responseSchema")
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise invalid(f"responseSchema is not a valid JSON Schema: {exc.message}",
                          field=f"{field}.responseSchema") from exc


def seal_api_key(config: dict[str, Any], sent: str | None, stored: Any, *, field: str) -> None:
    """``config["apiKey"]`` sealed: a new key is sealed, ``********`` keeps the stored
    one. A sealed value from the caller is refused: only keys sealed here are opened."""
    if sent is None:
        return
    if sent == MASK:
        if not SecretBox.is_sealed(stored):
            raise invalid("there is no stored apiKey to keep; send the key", field=f"{field}.apiKey")
        config["apiKey"] = stored
    elif SecretBox.is_sealed(sent):
        raise invalid("send the API key itself, not a sealed value", field=f"{field}.apiKey")
    else:
        config["apiKey"] = SecretBox().seal(sent)


def refuse_unevaluated(config: AgentConfiguration, *, field: str = "configuration") -> None:
    """Settings nothing evaluates are refused rather than stored as if they worked: there is
    no chat-platform connector, no toxicity or bias classifier (contentFilter and personalDataFilter are applied)."""
    enabled = [name for name, on in config.integrations.model_dump(by_alias=True).items() if on]
    if enabled:
        # No chat-platform connector ships with Troupe: an enabled integration would be stored
        # and never used.
        raise invalid(f"integrations are not available: {', '.join(enabled)} has no connector",
                      field=f"{field}.integrations.{enabled[0]}")
    safety = config.safety
    if "safety" not in config.model_fields_set:
        return
    if safety.bias_detection:
        raise invalid("biasDetection is not available: no bias classifier is configured",
                      field=f"{field}.safety.biasDetection")
    if "toxicity_threshold" in safety.model_fields_set and safety.toxicity_threshold != 0.8:
        raise invalid("toxicityThreshold cannot be changed: no toxicity classifier is configured (contentFilter "
                      "blocks listed phrases)", field=f"{field}.safety.toxicityThreshold")


def build_configuration(provider: str, model: str, config: AgentConfiguration,
                        *, field: str = "configuration") -> dict[str, Any]:
    refuse_unevaluated(config, field=field)
    data = config.model_dump(mode="json", by_alias=True)
    if "context_window" not in config.model_fields_set:
        data["contextWindow"] = context_window(provider, model) or DEFAULT_CONTEXT_WINDOW
    check_configuration(provider, model, data, field=field)
    seal_api_key(data, config.api_key, None, field=field)
    return data


def masked_configuration(config: dict[str, Any] | None) -> dict[str, Any]:
    """The stored configuration as callers see it: the agent's own key masked."""
    data = dict(config or {})
    if data.get("apiKey"):
        data["apiKey"] = MASK
    return data


def bump_patch(version: str | None) -> str:
    try:
        major, minor, patch = (int(p) for p in (version or "").split("."))
    except ValueError:
        return "1.0.1"
    return f"{major}.{minor}.{patch + 1}"


# --------------------------------------------------------------------------- reads


def to_read(agent: models.Agent, performance: AgentPerformance, reviews: list[ReviewRead],
            review_count: int) -> AgentRead:
    return AgentRead(
        id=agent.id, name=agent.name, description=agent.description or "", type=agent.type, model=agent.model,
        provider=agent.provider, status=agent.status or "idle", capabilities=list(agent.capabilities or []),
        configuration=masked_configuration(agent.configuration), performance=performance,
        company_id=agent.company_id, created_by=agent.created_by, tags=list(agent.tags or []),
        version=agent.version or "1.0.0", is_public=bool(agent.is_public), rating=float(agent.rating or 0),
        reviews=reviews, review_count=review_count, marketplace=agent.marketplace, created_at=agent.created_at,
        updated_at=agent.updated_at, last_used_at=agent.last_used_at)


_RECENT_REVIEWS_SQL = text("""
SELECT * FROM (
  SELECT r.id, r.agent_id, r.user_id, u.username, r.rating, r.comment, r.created_at,
         row_number() OVER (PARTITION BY r.agent_id ORDER BY r.created_at DESC, r.id) AS rn,
         count(*) OVER (PARTITION BY r.agent_id) AS total
  FROM agent_reviews r LEFT JOIN users u ON u.id = r.user_id
  WHERE r.agent_id = ANY(:ids)
) x WHERE rn <= :n ORDER BY agent_id, rn
""")


async def recent_reviews(session: AsyncSession, agent_ids: list[uuid.UUID],
                         n: int = RECENT_REVIEWS) -> dict[uuid.UUID, tuple[list[ReviewRead], int]]:
    """The ``n`` newest reviews and the review count of each agent, in one query."""
    out: dict[uuid.UUID, tuple[list[ReviewRead], int]] = {}
    if not agent_ids:
        return out
    for r in (await session.execute(_RECENT_REVIEWS_SQL, {"ids": agent_ids, "n": n})).all():
        items, _ = out.get(r.agent_id, ([], 0))
        items.append(ReviewRead(id=r.id, agent_id=r.agent_id, user_id=r.user_id, username=r.username,
                                rating=r.rating, comment=r.comment, created_at=r.created_at))
        out[r.agent_id] = (items, int(r.total))
    return out


async def read_agents(session: AsyncSession, agents: list[models.Agent]) -> list[AgentRead]:
    """Agents as answered, with performance and recent reviews: three queries for any number of agents."""
    ids = [a.id for a in agents]
    performances = await agent_performances(session, ids, trend_buckets=EMBEDDED_TREND_BUCKETS)
    reviews = await recent_reviews(session, ids)
    out = []
    for agent in agents:
        items, count = reviews.get(agent.id, ([], 0))
        perf = performances[agent.id]
        if perf.last_used_at is None and agent.last_used_at is not None:
            perf.last_used_at = agent.last_used_at
        out.append(to_read(agent, perf, items, count))
    return out


async def _read(session: AsyncSession, agent: models.Agent) -> AgentRead:
    return (await read_agents(session, [agent]))[0]


def search_filter(column_name: Any, column_description: Any, search: str) -> ColumnElement[bool]:
    """Full-text (same expression as the ix_<table>_fts index) OR a prefix match for partial words."""
    document = func.to_tsvector("simple", func.coalesce(column_name, "").op("||")(" ")
                                .op("||")(func.coalesce(column_description, "")))
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(document.op("@@")(func.plainto_tsquery("simple", search)),
               column_name.ilike(f"{escaped}%", escape="\\"))


_SORTS = {"name": models.Agent.name, "createdAt": models.Agent.created_at, "updatedAt": models.Agent.updated_at,
          "rating": models.Agent.rating, "type": models.Agent.type, "status": models.Agent.status,
          "provider": models.Agent.provider}


async def list_agents(*, session: AsyncSession, user: Principal,
                      params: AgentListParams) -> tuple[list[AgentRead], Pagination]:
    conditions: list[ColumnElement[bool]] = [visible_agents(user)]
    A = models.Agent
    if params.search:
        conditions.append(search_filter(A.name, A.description, params.search))
    for column, value in ((A.type, params.type), (A.status, params.status), (A.company_id, params.company_id),
                          (A.provider, params.provider), (A.created_by, params.created_by)):
        if value is not None:
            conditions.append(column == value)
    if params.is_public is not None:
        conditions.append(A.is_public.is_(params.is_public))
    if params.tags:
        conditions.append(A.tags.overlap(params.tags))
    total = await session.scalar(select(func.count()).select_from(A).where(*conditions)) or 0
    column = _SORTS[params.sort]
    ordering = column.asc().nulls_last() if params.order == "asc" else column.desc().nulls_last()
    rows = (await session.execute(
        select(A).where(*conditions).order_by(ordering, A.id)
        .offset((params.page - 1) * params.limit).limit(params.limit))).scalars().all()
    return await read_agents(session, list(rows)), Pagination.of(page=params.page, limit=params.limit, total=total)


async def get_agent(*, session: AsyncSession, user: Principal, agent_id: str) -> AgentRead:
    return await _read(session, await load_agent(session, user, agent_id))


# --------------------------------------------------------------------------- writes


async def _attach_target(session: AsyncSession, user: Principal, company_id: uuid.UUID | None,
                         *, field: str = "companyId") -> models.Company | None:
    if company_id is None:
        return None
    try:
        company = await access.load_company(session, user, company_id, "write", for_update=True)
    except AppError as exc:
        exc.field = field
        raise
    await ensure_agent_capacity(session, company, 1)
    return company


async def create_agent(*, session: AsyncSession, user: Principal, data: AgentCreate) -> AgentRead:
    if data.is_public and not user.can("agents:publish"):
        raise forbidden("Making an agent public needs the agents:publish permission")
    configuration = build_configuration(data.provider, data.model, data.configuration)
    await ensure_tools_visible(session, user, data.configuration.tools, "configuration.tools")
    await _attach_target(session, user, data.company_id)
    agent = models.Agent(
        name=data.name, description=data.description, type=data.type, model=data.model, provider=data.provider,
        status="idle", capabilities=data.capabilities, configuration=configuration, performance={},
        company_id=data.company_id, created_by=user.id, tags=data.tags, version="1.0.0",
        is_public=data.is_public)
    session.add(agent)
    await session.flush()
    if data.configuration.knowledge_base.enabled:
        await knowledge.index_agent(session, user, agent)
    return await _read(session, agent)


async def update_agent(*, session: AsyncSession, user: Principal, agent_id: str, data: AgentUpdate) -> AgentRead:
    agent = await load_agent(session, user, agent_id, write=True, for_update=True)
    patch = data.model_dump(exclude_unset=True, by_alias=False)
    for key in ("name", "description", "type", "tags"):
        if key in patch and patch[key] is not None:
            setattr(agent, key, patch[key])
    provider = data.provider or agent.provider
    model = data.model or agent.model
    configuration = dict(agent.configuration or {})
    stored_key = configuration.get("apiKey")
    if data.configuration is not None:
        refuse_unevaluated(data.configuration)
        sent = data.configuration.model_dump(mode="json", by_alias=True, exclude_unset=True)
        # The key is checked and sealed apart from the merge (it is stored sealed, sent plain).
        sent_key = sent.pop("apiKey", None)
        configuration = deep_merge(configuration, sent)
        # Training's examples are the runtime's, not a settable field: kept aside from validation.
        examples = configuration.pop("fewShotExamples", None)
        # Re-validate the merged whole: stored rows are trusted, the merge may not be.
        try:
            merged = AgentConfiguration.model_validate(configuration)
        except ValueError as exc:
            raise invalid(f"configuration: {exc}", field="configuration") from exc
        configuration = merged.model_dump(mode="json", by_alias=True)
        if examples is not None:
            configuration["fewShotExamples"] = examples
        if "api_key" in data.configuration.model_fields_set and sent_key is None:
            configuration["apiKey"] = None  # an explicit null removes the agent's own key
        else:
            configuration["apiKey"] = stored_key
            seal_api_key(configuration, sent_key, stored_key, field="configuration")
        await ensure_tools_visible(session, user, merged.tools, "configuration.tools")
    if data.configuration is not None or data.provider or data.model:
        check_configuration(provider, model, configuration)
    new_behaviour = {"configuration": configuration, "model": model, "provider": provider,
                     "capabilities": patch["capabilities"] if patch.get("capabilities") is not None
                     else list(agent.capabilities or [])}
    changed = any(new_behaviour[f] != (getattr(agent, f) if f != "capabilities" else list(agent.capabilities or []))
                  for f in BEHAVIOUR_FIELDS)
    if changed:
        agent.configuration, agent.model, agent.provider = configuration, model, provider
        agent.capabilities = new_behaviour["capabilities"]
        agent.version = bump_patch(agent.version)
    if data.configuration is not None and "knowledge_base" in data.configuration.model_fields_set:
        # Sources (or the switch) may have changed: read and index them again.
        await knowledge.index_agent(session, user, agent)
    if "company_id" in patch and patch["company_id"] != agent.company_id:
        await _attach_target(session, user, patch["company_id"])
        agent.company_id = patch["company_id"]
    agent.updated_at = utcnow()
    await session.flush()
    return await _read(session, agent)


async def _ensure_idle(session: AsyncSession, agent_id: uuid.UUID) -> None:
    busy = await session.scalar(select(func.count()).select_from(models.Task).where(
        models.Task.agent_id == agent_id, models.Task.status.in_(ACTIVE_TASK_STATES)))
    running = await session.scalar(select(func.count()).select_from(models.TaskExecution).where(
        models.TaskExecution.agent_id == agent_id, models.TaskExecution.status == "running"))
    if busy or running:
        raise AppError(ErrorCode.RESOURCE_IN_USE, "The agent is used by a running task")


async def delete_agent(*, session: AsyncSession, user: Principal, agent_id: str) -> None:
    agent = await load_agent(session, user, agent_id, write=True, for_update=True)
    await _ensure_idle(session, agent.id)
    await session.delete(agent)
    await session.flush()


async def clone_agent(*, session: AsyncSession, user: Principal, agent_id: str, data: CloneRequest) -> AgentRead:
    source = await load_agent(session, user, agent_id)
    configuration = dict(source.configuration or {})
    # The source's own API key is its owner's: a clone brings its own.
    configuration.pop("apiKey", None)
    # The clone belongs to the caller: keep only tools the caller may use.
    tool_ids = [uuid.UUID(t) for t in configuration.get("tools", [])]
    if tool_ids:
        usable = set((await session.execute(select(models.Tool.id).where(
            models.Tool.id.in_(tool_ids), visible_tools(user)))).scalars())
        configuration["tools"] = [str(t) for t in tool_ids if t in usable]
    await _attach_target(session, user, data.company_id)
    agent = models.Agent(
        name=data.name, description=source.description, type=source.type, model=source.model,
        provider=source.provider, status="idle", capabilities=list(source.capabilities or []),
        configuration=configuration, performance={}, company_id=data.company_id, created_by=user.id,
        tags=list(source.tags or []), version="1.0.0", is_public=False)
    session.add(agent)
    await session.flush()
    # The source's indexed knowledge comes along (its sources may be files only its owner can read).
    await session.execute(text(
        "INSERT INTO agent_knowledge_chunks (agent_id, source, kind, position, content, indexed_at) "
        "SELECT :clone, source, kind, position, content, indexed_at FROM agent_knowledge_chunks "
        "WHERE agent_id = :source"), {"clone": agent.id, "source": source.id})
    return await _read(session, agent)


async def publish_agent(*, session: AsyncSession, user: Principal, agent_id: str,
                        data: PublishRequest) -> AgentRead:
    await ensure_feature("marketplace_enabled")
    agent = await load_agent(session, user, agent_id, write=True, for_update=True)
    agent.is_public = True
    agent.marketplace = {"category": data.category,
                         "pricing": data.pricing.model_dump(mode="json", by_alias=True) if data.pricing else None,
                         "documentation": data.documentation, "publishedAt": iso(utcnow()),
                         "publishedBy": str(user.id)}
    agent.updated_at = utcnow()
    await session.flush()
    return await _read(session, agent)


async def unpublish_agent(*, session: AsyncSession, user: Principal, agent_id: str) -> AgentRead:
    agent = await load_agent(session, user, agent_id, write=True, for_update=True)
    agent.is_public = False
    agent.marketplace = None
    agent.updated_at = utcnow()
    await session.flush()
    return await _read(session, agent)


async def review_agent(*, session: AsyncSession, user: Principal, agent_id: str,
                       data: ReviewCreate) -> ReviewResult:
    agent = await load_agent(session, user, agent_id)
    if agent.created_by == user.id:
        raise forbidden("You cannot review your own agent")
    R = models.AgentReview
    # ON CONFLICT keeps "one review per user" true under concurrent requests too.
    review_id = await session.scalar(
        insert(R).values(agent_id=agent.id, user_id=user.id, rating=data.rating, comment=data.comment)
        .on_conflict_do_nothing(index_elements=[R.agent_id, R.user_id]).returning(R.id))
    if review_id is None:
        raise AppError(ErrorCode.RESOURCE_ALREADY_EXISTS, "You have already reviewed this agent")
    avg = select(func.coalesce(func.round(func.avg(R.rating), 2), 0)).where(R.agent_id == agent.id) \
        .scalar_subquery()
    rating = await session.scalar(update(models.Agent).where(models.Agent.id == agent.id)
                                  .values(rating=avg).returning(models.Agent.rating))
    review = await session.get(R, review_id)
    count = await session.scalar(select(func.count()).select_from(R).where(R.agent_id == agent.id)) or 0
    return ReviewResult(review=ReviewRead(id=review.id, agent_id=agent.id, user_id=user.id, username=user.username,
                                          rating=review.rating, comment=review.comment,
                                          created_at=review.created_at),
                        agent_rating=float(rating or 0), review_count=count)


async def list_reviews(*, session: AsyncSession, user: Principal, agent_id: str,
                       params: ReviewListParams) -> tuple[list[ReviewRead], Pagination]:
    agent = await load_agent(session, user, agent_id)
    R = models.AgentReview
    total = await session.scalar(select(func.count()).select_from(R).where(R.agent_id == agent.id)) or 0
    column = R.rating if params.sort == "rating" else R.created_at
    rows = (await session.execute(
        select(R, models.User.username).outerjoin(models.User, models.User.id == R.user_id)
        .where(R.agent_id == agent.id)
        .order_by(column.asc() if params.order == "asc" else column.desc(), R.id)
        .offset((params.page - 1) * params.limit).limit(params.limit))).all()
    items = [ReviewRead(id=r.id, agent_id=r.agent_id, user_id=r.user_id, username=name, rating=r.rating,
                        comment=r.comment, created_at=r.created_at) for r, name in rows]
    return items, Pagination.of(page=params.page, limit=params.limit, total=total)


# --------------------------------------------------------------------------- performance

_WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7),
            "month": timedelta(days=30)}
# How many buckets each trend has: embedded in an agent (bounded list payloads) and on /performance.
EMBEDDED_TREND_BUCKETS = {"daily": 7, "weekly": 4, "monthly": 12}
REPORT_TREND_BUCKETS = {"daily": 30, "weekly": 12, "monthly": 12}
_UNITS = {"daily": "day", "weekly": "week", "monthly": "month"}

# Numbers inside JSONB metadata, ignoring values of any other JSON type.
_COST = "CASE WHEN jsonb_typeof(e.metadata->'cost') = 'number' THEN (e.metadata->>'cost')::numeric END"
_TOKENS = ("CASE WHEN jsonb_typeof(e.metadata->'tokensUsed') = 'number' "
           "THEN (e.metadata->>'tokensUsed')::numeric END")
_FINISHED = "e.status IN ('completed', 'failed')"

# Per agent: finished node executions since :since (all time when null), and the review average.
_SUMMARY_SQL = text(f"""
WITH ids AS (SELECT DISTINCT unnest(CAST(:ids AS uuid[])) AS agent_id),
ex AS (
  SELECT e.agent_id,
         count(*) FILTER (WHERE {_FINISHED}) AS requests,
         count(*) FILTER (WHERE e.status = 'completed') AS successes,
         count(*) FILTER (WHERE e.status = 'failed') AS failures,
         avg(e.execution_time) FILTER (WHERE {_FINISHED}) AS response_time,
         avg({_TOKENS}) FILTER (WHERE {_FINISHED}) AS avg_tokens,
         sum({_TOKENS}) AS tokens, sum({_COST}) AS cost,
         max(coalesce(e.completed_at, e.started_at)) AS last_used,
         count(DISTINCT e.task_id) AS tasks
  FROM task_executions e
  WHERE e.agent_id = ANY(:ids)
    AND (CAST(:since AS timestamptz) IS NULL OR e.started_at >= CAST(:since AS timestamptz))
  GROUP BY e.agent_id
),
rv AS (SELECT agent_id, avg(rating) AS satisfaction FROM agent_reviews WHERE agent_id = ANY(:ids) GROUP BY agent_id)
SELECT ids.agent_id, coalesce(ex.requests, 0) AS requests, coalesce(ex.successes, 0) AS successes,
       coalesce(ex.failures, 0) AS failures, coalesce(ex.response_time, 0) AS response_time,
       coalesce(ex.avg_tokens, 0) AS avg_tokens, coalesce(ex.tokens, 0) AS tokens, coalesce(ex.cost, 0) AS cost,
       ex.last_used, coalesce(ex.tasks, 0) AS tasks, rv.satisfaction
FROM ids LEFT JOIN ex ON ex.agent_id = ids.agent_id LEFT JOIN rv ON rv.agent_id = ids.agent_id
""")

# Per agent and trend: zero-filled buckets ending with the current one (:daily/:weekly/:monthly
# buckets each; 0 leaves the trend out).
_TRENDS_SQL = text(f"""
WITH spans AS (
  SELECT * FROM (VALUES ('daily', 'day', CAST(:daily AS int)), ('weekly', 'week', CAST(:weekly AS int)),
                        ('monthly', 'month', CAST(:monthly AS int))) AS v(trend, unit, n)
  WHERE n > 0
),
buckets AS (
  SELECT s.trend, b AS start, b + CAST('1 ' || s.unit AS interval) AS stop
  FROM spans s, LATERAL generate_series(
    date_trunc(s.unit, CAST(:now AS timestamptz)) - CAST((s.n - 1) || ' ' || s.unit AS interval),
    date_trunc(s.unit, CAST(:now AS timestamptz)), CAST('1 ' || s.unit AS interval)) AS b
),
ids AS (SELECT DISTINCT unnest(CAST(:ids AS uuid[])) AS agent_id),
ex AS (
  SELECT e.agent_id, e.started_at, e.status, e.execution_time, {_COST} AS cost, {_TOKENS} AS tokens
  FROM task_executions e
  WHERE e.agent_id = ANY(:ids) AND e.started_at >= (SELECT min(start) FROM buckets)
)
SELECT ids.agent_id, bk.trend, bk.start AS bucket,
       count(ex.agent_id) FILTER (WHERE ex.status IN ('completed', 'failed')) AS requests,
       coalesce(avg(ex.execution_time) FILTER (WHERE ex.status IN ('completed', 'failed')), 0) AS response_time,
       count(ex.agent_id) FILTER (WHERE ex.status = 'failed') AS failures,
       coalesce(sum(ex.cost), 0) AS cost, coalesce(sum(ex.tokens), 0) AS tokens
FROM ids CROSS JOIN buckets bk
LEFT JOIN ex ON ex.agent_id = ids.agent_id AND ex.started_at >= bk.start AND ex.started_at < bk.stop
GROUP BY ids.agent_id, bk.trend, bk.start
ORDER BY ids.agent_id, bk.trend, bk.start
""")


async def agent_trends(session: AsyncSession, agent_ids: list[uuid.UUID], buckets: dict[str, int],
                       now: datetime) -> dict[uuid.UUID, dict[str, list[PerformanceMetric]]]:
    out: dict[uuid.UUID, dict[str, list[PerformanceMetric]]] = {a: {t: [] for t in _UNITS} for a in agent_ids}
    if not agent_ids or not buckets:
        return out
    rows = (await session.execute(_TRENDS_SQL, {"ids": agent_ids, "now": now, "daily": buckets.get("daily", 0),
                                                "weekly": buckets.get("weekly", 0),
                                                "monthly": buckets.get("monthly", 0)})).all()
    for r in rows:
        out[r.agent_id][r.trend].append(PerformanceMetric(
            date=r.bucket.date().isoformat(), requests=r.requests, response_time=round(float(r.response_time), 3),
            error_rate=percent(r.failures, r.requests), cost=float(r.cost), tokens=int(r.tokens)))
    return out


async def agent_performances(session: AsyncSession, agent_ids: list[uuid.UUID], *,
                             trend_buckets: dict[str, int], since: datetime | None = None,
                             now: datetime | None = None) -> dict[uuid.UUID, AgentPerformance]:
    """The spec's AgentPerformance for many agents in two queries (totals since ``since``, all
    time when None; trends always end now). An agent never used gets zeros and zero-filled trends."""
    if not agent_ids:
        return {}
    now = now or utcnow()
    summaries = {r.agent_id: r for r in (await session.execute(
        _SUMMARY_SQL, {"ids": agent_ids, "since": since})).all()}
    trends = await agent_trends(session, agent_ids, trend_buckets, now)
    out = {}
    for aid in agent_ids:
        s = summaries[aid]
        requests = int(s.requests)
        out[aid] = AgentPerformance(
            total_requests=requests, successful_requests=int(s.successes), failed_requests=int(s.failures),
            average_response_time=round(float(s.response_time), 3), average_tokens_used=round(float(s.avg_tokens), 3),
            last_used_at=s.last_used, error_rate=percent(int(s.failures), requests),
            satisfaction_score=round(float(s.satisfaction), 2) if s.satisfaction is not None else None,
            cost_per_request=round(float(s.cost) / requests, 6) if requests else 0.0,
            popularity_score=int(s.tasks), total_tokens=int(s.tokens), total_cost=float(s.cost),
            trends=PerformanceTrends(**trends[aid]))
    return out


async def performance(*, session: AsyncSession, user: Principal, agent_id: str,
                      params: PerformanceParams) -> AgentPerformanceReport:
    agent = await load_agent(session, user, agent_id)
    now = utcnow()
    since = now - _WINDOWS[params.period] if params.period else None
    wanted = params.metrics or list(REPORT_TREND_BUCKETS)
    buckets = {name: REPORT_TREND_BUCKETS[name] for name in wanted}
    summary = (await agent_performances(session, [agent.id], trend_buckets={}, since=since, now=now))[agent.id]
    trends = (await agent_trends(session, [agent.id], buckets, now))[agent.id]
    return AgentPerformanceReport(
        **summary.model_dump(exclude={"trends", "last_used_at"}),
        last_used_at=summary.last_used_at or agent.last_used_at,
        period=params.period, since=since, trends=SelectedTrends(**{k: v for k, v in trends.items() if k in buckets}))
