"""Workflow rules: visibility, drafts vs activation, secrets, templates,
export/import and schedules.

Visibility: workflows of companies the caller may read, plus templates (readable
by every caller with workflows:read). Writing needs 'write' on the workflow's
company (owner or admin); built-in templates (no company) only admins may change.
An ``active`` workflow must stay valid: activating it, or changing the
definition of an active one, runs the full validation and answers BIZ_001 with
the list of problems, writing nothing.

Secrets: ``configuration.secrets`` and an inline agent node's ``apiKey`` are sealed
on save (create, update, import) and read back as ``********``; sending ``********``
back keeps the stored value. A sealed value can only be kept, never sent in: one
taken from elsewhere would be opened by the node task and sent wherever this
workflow points. Exports and copies into another company carry no sealed values.
Execute may set only the variables listed in ``configuration.overridableVariables``
(``check_run_variables``).
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, cast, func, or_, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import Text

from troupe.config import get_settings
from troupe.db import models
from troupe.engine.contract import OVERRIDABLE_VARIABLES, refused_variables
from troupe.engine.nodes import SEALED_PATTERN as _SEALED
from troupe.engine.nodes import mask_sealed
from troupe.engine.validate import Problem, cron_problem, errors_of, timezone_problem, validate_graph
from troupe.errors import AppError, ErrorCode, forbidden, invalid, not_found
from troupe.platform.access import load_company, may, member_company_ids_subquery
from troupe.platform.deps import Principal
from troupe.platform.schemas import PageParams
from troupe.platform.tools.secrets import MASK, mask_map, seal_map, strip_sealed
from troupe.platform.tools.service import bump_version, visible_tools
from troupe.platform.workflows import schemas as s
from troupe.platform.workflows import triggers as workflow_triggers
from troupe.security import SecretBox
from troupe.timeutil import as_utc, iso, utcnow

SORTS: dict[str, Any] = {
    "name": models.Workflow.name,
    "createdAt": models.Workflow.created_at,
    "updatedAt": models.Workflow.updated_at,
    "status": models.Workflow.status,
    "lastExecutedAt": models.Workflow.last_executed_at,
}
_RUNNING_TASK_STATES = ("pending", "running", "paused")


# --------------------------------------------------------------------------- visibility and access


def visible_workflows(user: Principal) -> ColumnElement[bool]:
    """SQL filter on ``models.Workflow``: what the caller may read."""
    if user.is_global:
        return true()
    return or_(models.Workflow.is_template.is_(true()),
               models.Workflow.company_id.in_(member_company_ids_subquery(user)))


def visible_agents(user: Principal) -> ColumnElement[bool]:
    """Agents a workflow node may point at: the caller's, their companies', public ones."""
    if user.is_global:
        return true()
    return or_(models.Agent.created_by == user.id, models.Agent.is_public.is_(true()),
               models.Agent.company_id.in_(member_company_ids_subquery(user)))


async def get_workflow(*, session: AsyncSession, user: Principal, workflow_id: uuid.UUID | str,
                       for_update: bool = False) -> models.Workflow:
    try:
        wid = workflow_id if isinstance(workflow_id, uuid.UUID) else uuid.UUID(str(workflow_id))
    except ValueError as exc:
        raise not_found("Workflow") from exc
    query = select(models.Workflow).where(models.Workflow.id == wid, visible_workflows(user))
    if for_update:
        query = query.with_for_update()
    workflow = (await session.execute(query)).scalar_one_or_none()
    if workflow is None:
        raise not_found("Workflow")
    return workflow


async def ensure_write(*, session: AsyncSession, user: Principal, workflow: models.Workflow) -> None:
    """The caller can already read it (else RES_001 was raised): refusal is AUTH_004."""
    if workflow.company_id is None:
        if not user.is_global:
            raise forbidden("Built-in templates can only be changed by an admin")
        return
    company = await session.get(models.Company, workflow.company_id)
    if company is None or not may(company, user, "write"):
        raise forbidden("Only the company's owner or an admin may change this workflow")


# --------------------------------------------------------------------------- validation


async def resource_problems(*, session: AsyncSession, user: Principal, nodes: list[Any]) -> list[Problem]:
    """Agent and tool nodes must point at agents/tools that exist and the caller may see."""
    wanted: dict[str, dict[uuid.UUID, list[str]]] = {"agent": {}, "tool": {}}
    for node in nodes:
        if not isinstance(node, dict) or node.get("type") not in wanted or not isinstance(node.get("data"), dict):
            continue
        ref = node["data"].get("agentId" if node["type"] == "agent" else "toolId")
        try:
            ref_id = uuid.UUID(str(ref)) if ref is not None else None
        except ValueError:
            continue  # reported by validate_graph as invalid_reference
        if ref_id is not None:
            wanted[node["type"]].setdefault(ref_id, []).append(str(node.get("id")))
    problems: list[Problem] = []
    for kind, model, visible in (("agent", models.Agent, visible_agents(user)),
                                 ("tool", models.Tool, visible_tools(user))):
        refs = wanted[kind]
        if not refs:
            continue
        found = set((await session.execute(
            select(model.id).where(model.id.in_(list(refs)), visible))).scalars().all())
        for ref_id, node_ids in refs.items():
            if ref_id not in found:
                problems.extend(Problem(f"{kind}_not_found", f"node {nid!r}: {kind} {ref_id} does not exist or is "
                                        "not visible to you", "invalid_config", node_id=nid) for nid in node_ids)
    return problems


async def check_definition(*, session: AsyncSession, user: Principal, nodes: list[Any], edges: list[Any],
                           configuration: dict[str, Any] | None, schedule: dict[str, Any] | None) -> list[Problem]:
    """Everything ``validate`` reports: the engine's graph rules (the same call, with the
    same limits, as execute makes) plus resource checks."""
    problems = validate_graph(nodes, edges, configuration, schedule)
    return problems + await resource_problems(session=session, user=user, nodes=nodes)


def _issue(problem: Problem) -> s.ValidationIssue:
    return s.ValidationIssue(code=problem.code, type=problem.type, message=problem.message,
                             severity=problem.severity, node_id=problem.node_id, edge_id=problem.edge_id)


_SUGGESTIONS = {
    "no_input_node": "Add an input node: runs start there.",
    "no_output_node": "Add an output node to collect the result.",
    "cycle_without_loop": "Route repetitions through a loop node with configuration.maxIterations.",
    "loop_without_bound": "Set configuration.maxIterations (1..10000) on every loop node.",
    "loop_without_items_or_while": "Give every loop configuration.items (a list) or configuration.while "
                                   "(conditions).",
    "loop_without_body": "Route an edge from the loop's last body node back to the loop node.",
    "unreachable_node": "Connect every node to a path starting at an input node, or remove it.",
    "agent_not_found": "Pick an agent of this company or a public one, or configure provider and model inline.",
    "tool_not_found": "Install the tool in this company or pick a public tool.",
    "conditional_edge_without_condition": "Give conditional edges a condition (\"true\"/\"false\" from a "
                                          "condition node).",
    "dead_end": "Connect the node's result onward or to an output node.",
}


def report(problems: list[Problem]) -> s.ValidationReport:
    errors = [_issue(p) for p in problems if p.severity == "error"]
    warnings = [_issue(p) for p in problems if p.severity == "warning"]
    suggestions = list(dict.fromkeys(_SUGGESTIONS[p.code] for p in problems if p.code in _SUGGESTIONS))
    return s.ValidationReport(is_valid=not errors, valid=not errors, errors=errors, warnings=warnings,
                              suggestions=suggestions)


async def _require_valid(session: AsyncSession, user: Principal, workflow: models.Workflow) -> None:
    problems = errors_of(await check_definition(session=session, user=user, nodes=workflow.nodes,
                                                edges=workflow.edges, configuration=workflow.configuration,
                                                schedule=workflow.schedule))
    if problems:
        raise AppError(ErrorCode.WORKFLOW_INVALID,
                       f"The workflow is not valid ({len(problems)} problem{'s' if len(problems) > 1 else ''}); "
                       "it can only be saved as a draft",
                       details=[_issue(p).model_dump(mode="json", by_alias=True) for p in problems])


# --------------------------------------------------------------------------- documents


def _dump_list(items: list[Any] | None) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in items or []]


def _configuration(body: s.WorkflowConfiguration | None, old: dict[str, Any] | None,
                   *, keep_unsent_secrets: bool = False) -> dict[str, Any]:
    doc = (body or s.WorkflowConfiguration()).model_dump(mode="json", by_alias=True)
    old_secrets = (old or {}).get("secrets") or {}
    doc["secrets"] = seal_map(doc["secrets"], old_secrets, field="configuration.secrets") or {}
    if keep_unsent_secrets:
        doc["secrets"] = {**{k: v for k, v in old_secrets.items() if k not in doc["secrets"]}, **doc["secrets"]}
    return doc


# Keys of an inline agent node's configuration that hold its own provider key.
NODE_KEY_NAMES = ("apiKey", "api_key")


def _agent_config(node: Any) -> dict[str, Any] | None:
    if not isinstance(node, dict) or node.get("type") != "agent" or not isinstance(node.get("data"), dict):
        return None
    config = node["data"].get("configuration")
    return config if isinstance(config, dict) else None


def _sealed_in(value: Any) -> set[str]:
    """Every sealed value inside ``value`` (whole strings or embedded, as the node task opens them)."""
    if isinstance(value, str):
        return set(_SEALED.findall(value)) if SecretBox.PREFIX in value else set()
    if isinstance(value, dict):
        return set().union(*(_sealed_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_sealed_in(v) for v in value))
    return set()


def seal_node_secrets(nodes: list[dict[str, Any]], old: list[Any] | None, *,
                      keep_unsent: bool = False) -> list[dict[str, Any]]:
    """``nodes`` (fresh dicts, changed in place) with each inline agent node's plain ``apiKey``
    sealed. ``********`` keeps the stored key of the node with the same id; with
    ``keep_unsent`` (import) a node sent without one keeps it too. A template such as
    ``{{secrets.openai}}`` is kept as written (the workflow secret is sealed already).
    Any sealed value in ``nodes`` must be one this workflow already holds."""
    held = _sealed_in(old or [])
    for index, node in enumerate(nodes):
        if _sealed_in(node) - held:
            raise invalid(f"nodes[{index}] holds a sealed value (enc:v1:...) this workflow does not hold: send "
                          "the secret itself (it is sealed on save) or ******** to keep a stored one",
                          field=f"nodes[{index}]")
    old_by_id = {str(n.get("id")): n for n in old or [] if isinstance(n, dict)}
    box = SecretBox()
    for index, node in enumerate(nodes):
        config = _agent_config(node)
        if config is None:
            continue
        previous = _agent_config(old_by_id.get(str(node.get("id")))) or {}
        for key in NODE_KEY_NAMES:
            field = f"nodes[{index}].data.configuration.{key}"
            if key not in config:
                if keep_unsent and SecretBox.is_sealed(previous.get(key)):
                    config[key] = previous[key]
                continue
            value = config[key]
            if value == MASK:
                kept = previous.get(key)
                if not _is_key(kept):
                    raise invalid(f"{field}: there is no stored key to keep; send the key", field=field)
                # A key stored before keys were sealed is sealed now.
                config[key] = kept if SecretBox.is_sealed(kept) else box.seal(kept)
            elif _is_key(value) and not SecretBox.is_sealed(value):
                config[key] = box.seal(value)
    return nodes


def _is_key(value: Any) -> bool:
    """A stored key (plain or sealed); a template such as ``{{secrets.openai}}`` is not one."""
    return isinstance(value, str) and bool(value) and "{{" not in value and value != MASK


def node_keys_out(nodes: list[Any], *, drop: bool) -> list[Any]:
    """Copies of ``nodes`` with every inline agent node's key masked (reads) or removed
    (``drop``: exports and copies), plain keys stored before sealing included, and any
    other sealed value masked or removed likewise."""
    out = copy.deepcopy(list(nodes or []))
    for node in out:
        config = _agent_config(node)
        for key in NODE_KEY_NAMES if config is not None else ():
            if _is_key(config.get(key)):
                if drop:
                    del config[key]
                else:
                    config[key] = MASK
    return _drop_sealed(out) if drop else mask_sealed(out)


def _drop_sealed(value: Any) -> Any:
    """``value`` without sealed values: whole ones removed, embedded ones masked (exports, copies)."""
    if isinstance(value, dict):
        return {k: _drop_sealed(v) for k, v in value.items() if not SecretBox.is_sealed(v)}
    if isinstance(value, list):
        return [_drop_sealed(v) for v in value if not SecretBox.is_sealed(v)]
    return mask_sealed(value)


def check_run_variables(workflow: models.Workflow | None, variables: dict[str, Any] | None, *,
                        field: str = "variables") -> None:
    """Execute's ``variables`` may set only what the workflow lists in
    ``configuration.overridableVariables`` (sending the workflow's own value is no override).
    Refused with VAL_001 naming the variable; the run driver checks again when it loads."""
    refused = refused_variables(variables, configuration=workflow.configuration if workflow else None,
                                schedule=workflow.schedule if workflow else None,
                                triggers=workflow.triggers if workflow else None)
    if refused:
        names = ", ".join(refused)
        raise invalid(f"variable(s) {names} may not be overridden at execute: the workflow lists the variables a "
                      f"run may set in configuration.{OVERRIDABLE_VARIABLES}", field=f"{field}.{refused[0]}",
                      details={"refused": refused})


def next_run(cron: str, timezone: str, now: datetime | None = None) -> datetime:
    """Next fire time of ``cron`` read in ``timezone``, in UTC."""
    from croniter import croniter

    zone = ZoneInfo(timezone)
    start = as_utc(now or utcnow()).astimezone(zone)
    fire = croniter(cron, start).get_next(datetime)
    return fire.astimezone(UTC)


def _schedule_doc(body: s.ScheduleInput | None, old: dict[str, Any] | None, *,
                  variables: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Stored as sent; ``nextRun`` only when the schedule is enabled and valid (a draft
    may hold an invalid one, which ``validate`` reports)."""
    if body is None:
        return None
    doc: dict[str, Any] = {"enabled": body.enabled, "cron": body.cron, "timezone": body.timezone,
                           "variables": variables if variables is not None else (old or {}).get("variables"),
                           "lastRun": (old or {}).get("lastRun"), "nextRun": None}
    if body.enabled and cron_problem(body.cron) is None and timezone_problem(body.timezone) is None:
        doc["nextRun"] = iso(next_run(body.cron, body.timezone))
    return doc


def _check_size(nodes: list[Any], edges: list[Any], configuration: dict[str, Any] | None) -> None:
    limit = get_settings().max_body_bytes
    size = len(json.dumps({"nodes": nodes, "edges": edges, "configuration": configuration}).encode())
    if size > limit:
        raise invalid(f"The workflow definition is {size} bytes; at most {limit} are allowed", field="nodes")


# --------------------------------------------------------------------------- CRUD


async def _template(session: AsyncSession, user: Principal, template_id: uuid.UUID) -> models.Workflow:
    template = await get_workflow(session=session, user=user, workflow_id=template_id)
    if not template.is_template:
        raise not_found("Template")
    return template


async def create_workflow(*, session: AsyncSession, user: Principal, body: s.WorkflowCreate) -> models.Workflow:
    company = await load_company(session, user, body.company_id, "write")
    template = await _template(session, user, body.template_id) if body.template_id else None
    fields = body.model_fields_set
    name = body.name or (template.name if template else None)
    if not name:
        raise invalid("name is required", field="name", code=ErrorCode.REQUIRED_FIELD_MISSING)
    if body.configuration is not None or template is None:
        configuration = _configuration(body.configuration, None)
    else:
        configuration = dict(template.configuration or {})
        # Sealed secrets only travel with a copy inside the same company.
        if template.company_id != company.id:
            configuration["secrets"] = {}
    if body.nodes is not None:
        nodes = seal_node_secrets(_dump_list(body.nodes), None)
    else:
        nodes = copy.deepcopy(list(template.nodes if template else []))
        if template is not None and template.company_id != company.id:
            nodes = node_keys_out(nodes, drop=True)
    workflow = models.Workflow(
        name=name,
        description=body.description if "description" in fields or not template else template.description,
        version="1.0.0", company_id=company.id,
        nodes=nodes,
        edges=_dump_list(body.edges) if body.edges is not None else list(template.edges if template else []),
        configuration=configuration, status=body.status,
        triggers=await workflow_triggers.trigger_docs(session=session, items=body.triggers, old=None,
                                                      workflow_id=None, company_id=company.id)
        if body.triggers is not None else [t if template and template.company_id == company.id
                                           else workflow_triggers.exported(t)
                                           for t in (template.triggers or [] if template else [])],
        schedule=_schedule_doc(body.schedule, None), created_by=user.id,
        tags=body.tags if body.tags is not None else list(template.tags or [] if template else []),
        is_template=body.is_template,
        template_category=body.template_category if body.template_category is not None else
        (template.template_category if template and body.is_template else None),
    )
    _check_size(workflow.nodes, workflow.edges, workflow.configuration)
    if workflow.status == "active":
        await _require_valid(session, user, workflow)
    session.add(workflow)
    await session.flush()
    return workflow


async def update_workflow(*, session: AsyncSession, user: Principal, workflow_id: uuid.UUID,
                          body: s.WorkflowUpdate) -> models.Workflow:
    workflow = await get_workflow(session=session, user=user, workflow_id=workflow_id, for_update=True)
    await ensure_write(session=session, user=user, workflow=workflow)
    fields = body.model_fields_set  # null is refused by the schema where it has no meaning
    before = (workflow.nodes, workflow.edges, workflow.configuration, workflow.triggers, workflow.schedule)
    if "nodes" in fields:
        workflow.nodes = seal_node_secrets(_dump_list(body.nodes), workflow.nodes)
    if "edges" in fields:
        workflow.edges = _dump_list(body.edges)
    if "configuration" in fields:
        workflow.configuration = _configuration(body.configuration, workflow.configuration)
    if "triggers" in fields:
        workflow.triggers = await workflow_triggers.trigger_docs(
            session=session, items=body.triggers, old=workflow.triggers, workflow_id=workflow.id,
            company_id=workflow.company_id)
    if "schedule" in fields:
        workflow.schedule = _schedule_doc(body.schedule, workflow.schedule)
    for name in ("name", "description", "status", "is_template", "template_category"):
        if name in fields:
            setattr(workflow, name, getattr(body, name))
    if "tags" in fields:
        workflow.tags = body.tags or []
    definition_changed = before != (workflow.nodes, workflow.edges, workflow.configuration, workflow.triggers,
                                    workflow.schedule)
    _check_size(workflow.nodes, workflow.edges, workflow.configuration)
    if workflow.status == "active" and ("status" in fields or definition_changed):
        await _require_valid(session, user, workflow)
    if definition_changed:
        workflow.version = bump_version(workflow.version)
    workflow.updated_at = utcnow()
    await session.flush()
    return workflow


async def delete_workflow(*, session: AsyncSession, user: Principal, workflow_id: uuid.UUID) -> None:
    workflow = await get_workflow(session=session, user=user, workflow_id=workflow_id, for_update=True)
    await ensure_write(session=session, user=user, workflow=workflow)
    running = (await session.execute(select(func.count()).select_from(models.Task).where(
        models.Task.workflow_id == workflow.id, models.Task.status.in_(_RUNNING_TASK_STATES)))).scalar_one()
    if running:
        raise AppError(ErrorCode.RESOURCE_IN_USE, f"{running} run(s) of this workflow are not finished",
                       details={"activeTasks": running})
    await session.delete(workflow)
    await session.flush()


# --------------------------------------------------------------------------- lists


def _tags(values: list[str] | None) -> list[str]:
    return [t.strip() for v in values or [] for t in v.split(",") if t.strip()]


async def _page(session: AsyncSession, query: Select, page: PageParams, sorts: dict[str, Any],
                default_sort: str) -> tuple[list[models.Workflow], int]:
    sort = page.sort or default_sort
    if sort not in sorts:
        raise invalid(f"sort must be one of {sorted(sorts)}", field="sort")
    if page.search:
        query = query.where(func.to_tsvector(
            "simple", func.coalesce(models.Workflow.name, "") + " " + func.coalesce(models.Workflow.description, "")
        ).op("@@")(func.plainto_tsquery("simple", page.search)))
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    column = sorts[sort]
    query = query.order_by(column.asc().nulls_last() if page.order == "asc" else column.desc().nulls_last(),
                           models.Workflow.id)
    rows = (await session.execute(query.offset(page.offset).limit(page.limit))).scalars().all()
    return list(rows), total


async def list_workflows(*, session: AsyncSession, user: Principal, page: PageParams,
                         company_id: uuid.UUID | None = None, status: str | None = None,
                         is_template: bool | None = None, category: str | None = None,
                         tags: list[str] | None = None, created_by: uuid.UUID | None = None,
                         ) -> tuple[list[models.Workflow], int]:
    query = select(models.Workflow).where(visible_workflows(user))
    if company_id is not None:
        query = query.where(models.Workflow.company_id == company_id)
    if status:
        query = query.where(models.Workflow.status == status)
    if is_template is not None:
        query = query.where(models.Workflow.is_template.is_(true()) if is_template
                            else models.Workflow.is_template.is_not(true()))
    if category:
        query = query.where(models.Workflow.template_category == category)
    if wanted := _tags(tags):
        query = query.where(models.Workflow.tags.contains(cast(wanted, ARRAY(Text))))
    if created_by is not None:
        query = query.where(models.Workflow.created_by == created_by)
    return await _page(session, query, page, SORTS, "createdAt")


async def list_templates(*, session: AsyncSession, user: Principal, page: PageParams, category: str | None = None,
                         industry: str | None = None, complexity: str | None = None,
                         ) -> tuple[list[models.Workflow], int]:
    """Templates carry ``industry:<x>`` and ``complexity:<simple|medium|complex>`` tags."""
    query = select(models.Workflow).where(models.Workflow.is_template.is_(true()), visible_workflows(user))
    if category:
        query = query.where(models.Workflow.template_category == category)
    wanted = [f"industry:{industry}"] if industry else []
    wanted += [f"complexity:{complexity}"] if complexity else []
    if wanted:
        query = query.where(models.Workflow.tags.contains(cast(wanted, ARRAY(Text))))
    return await _page(session, query, page, SORTS, "name")


# --------------------------------------------------------------------------- validate, export, import, schedule


async def validate_workflow(*, session: AsyncSession, user: Principal, workflow_id: uuid.UUID) -> s.ValidationReport:
    workflow = await get_workflow(session=session, user=user, workflow_id=workflow_id)
    return report(await check_definition(session=session, user=user, nodes=workflow.nodes, edges=workflow.edges,
                                         configuration=workflow.configuration, schedule=workflow.schedule))


def _schedule_input(schedule: dict[str, Any] | None) -> dict[str, Any] | None:
    if not schedule:
        return None
    return {"enabled": bool(schedule.get("enabled")), "cron": schedule.get("cron") or "",
            "timezone": schedule.get("timezone") or "UTC"}


async def export_workflow(*, session: AsyncSession, user: Principal, workflow_id: uuid.UUID) -> s.ExportDocument:
    workflow = await get_workflow(session=session, user=user, workflow_id=workflow_id)
    configuration = dict(workflow.configuration or {})
    configuration["secrets"] = strip_sealed(configuration.get("secrets"))
    exported = s.ExportedWorkflow.model_validate({
        "name": workflow.name, "description": workflow.description, "version": workflow.version or "1.0.0",
        "nodes": node_keys_out(workflow.nodes, drop=True), "edges": workflow.edges, "configuration": configuration,
        "triggers": [workflow_triggers.exported(t) for t in workflow.triggers or []],
        "schedule": _schedule_input(workflow.schedule),
        "tags": list(workflow.tags or []), "templateCategory": workflow.template_category,
    })
    agent_ids = {n["data"]["agentId"] for n in workflow.nodes if n.get("type") == "agent"
                 and (n.get("data") or {}).get("agentId")}
    tool_ids = {n["data"]["toolId"] for n in workflow.nodes if n.get("type") == "tool"
                and (n.get("data") or {}).get("toolId")}
    agents = (await session.execute(select(models.Agent).where(
        models.Agent.id.in_([uuid.UUID(a) for a in agent_ids]), visible_agents(user)))).scalars().all() \
        if agent_ids else []
    tools = (await session.execute(select(models.Tool).where(
        models.Tool.id.in_([uuid.UUID(t) for t in tool_ids]), visible_tools(user)))).scalars().all() \
        if tool_ids else []
    return s.ExportDocument(
        metadata=s.ExportMetadata(exported_at=utcnow(), exported_by=user.id, platform="troupe"),
        workflow=exported,
        dependencies=s.Dependencies(
            agents=[s.DependencyRef(id=a.id, name=a.name, kind="agent",
                                    detail={"provider": a.provider, "model": a.model, "type": a.type})
                    for a in agents],
            tools=[s.DependencyRef(id=t.id, name=t.name, kind="tool",
                                   detail={"type": t.type, "category": t.category, "version": t.version})
                   for t in tools]),
    )


async def import_workflow(*, session: AsyncSession, user: Principal, workflow_id: uuid.UUID,
                          body: s.WorkflowImportRequest) -> models.Workflow:
    workflow = await get_workflow(session=session, user=user, workflow_id=workflow_id, for_update=True)
    await ensure_write(session=session, user=user, workflow=workflow)
    doc = body.data.workflow
    if workflow.nodes and not body.overwrite:
        raise AppError(ErrorCode.RESOURCE_ALREADY_EXISTS,
                       "The workflow already has a definition; send overwrite: true to replace it")
    # Exports carry no secrets: the workflow's stored secrets (and nodes' keys) stay unless the document sets them.
    nodes = seal_node_secrets(_dump_list(doc.nodes), workflow.nodes, keep_unsent=True)
    edges = _dump_list(doc.edges)
    configuration = _configuration(doc.configuration, workflow.configuration, keep_unsent_secrets=True)
    _check_size(nodes, edges, configuration)
    workflow.name, workflow.description = doc.name, doc.description
    workflow.nodes, workflow.edges, workflow.configuration = nodes, edges, configuration
    workflow.triggers = await workflow_triggers.trigger_docs(
        session=session, items=doc.triggers, old=workflow.triggers, workflow_id=workflow.id,
        company_id=workflow.company_id, keep_unsent_secrets=True)
    workflow.schedule = _schedule_doc(doc.schedule, workflow.schedule)
    workflow.tags = doc.tags
    if doc.template_category is not None:
        workflow.template_category = doc.template_category
    if workflow.status == "active":
        await _require_valid(session, user, workflow)
    workflow.version = bump_version(workflow.version)
    workflow.updated_at = utcnow()
    await session.flush()
    return workflow


async def set_schedule(*, session: AsyncSession, user: Principal, workflow_id: uuid.UUID,
                       body: s.ScheduleRequest) -> s.WorkflowSchedule:
    workflow = await get_workflow(session=session, user=user, workflow_id=workflow_id, for_update=True)
    await ensure_write(session=session, user=user, workflow=workflow)
    if (message := cron_problem(body.cron)) is not None:
        raise invalid(message, field="cron")
    if (message := timezone_problem(body.timezone)) is not None:
        raise invalid(message, field="timezone")
    workflow.schedule = _schedule_doc(body, workflow.schedule, variables=body.variables)
    workflow.updated_at = utcnow()
    await session.flush()
    return schedule_out(workflow.schedule)


# --------------------------------------------------------------------------- output


def schedule_out(schedule: dict[str, Any] | None) -> s.WorkflowSchedule | None:
    if not schedule:
        return None
    return s.WorkflowSchedule(enabled=bool(schedule.get("enabled")), cron=schedule.get("cron") or "",
                              timezone=schedule.get("timezone") or "UTC", variables=schedule.get("variables"),
                              next_run=schedule.get("nextRun"), last_run=schedule.get("lastRun"))


def to_out(workflow: models.Workflow) -> s.WorkflowOut:
    configuration = dict(workflow.configuration or {})
    configuration["secrets"] = mask_map(configuration.get("secrets")) or {}
    return s.WorkflowOut(
        id=workflow.id, name=workflow.name, description=workflow.description, version=workflow.version or "1.0.0",
        company_id=workflow.company_id,
        # Sealed node values (an inline agent's apiKey) read as "********".
        nodes=[s.WorkflowNode.model_validate(n) for n in node_keys_out(workflow.nodes, drop=False)],
        edges=[s.WorkflowEdge.model_validate(e) for e in workflow.edges or []],
        configuration=s.WorkflowConfiguration.model_validate(configuration),
        status=workflow.status or "draft",
        triggers=[workflow_triggers.trigger_out(workflow.id, t) for t in workflow.triggers or []],
        schedule=schedule_out(workflow.schedule), created_by=workflow.created_by, tags=list(workflow.tags or []),
        is_template=bool(workflow.is_template), template_category=workflow.template_category,
        created_at=workflow.created_at, updated_at=workflow.updated_at, last_executed_at=workflow.last_executed_at,
    )
