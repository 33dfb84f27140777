"""Company start/stop/pause/resume, workflow execution, agent test/train and tool test.

Company control (stored on the company row, applied by its CompanyActor):
- ``start``: clears the stop switch, status ``active``; queued tasks are admitted.
- ``stop``: sets the stop switch, status ``idle``; running tasks are cancelled, queued
  ones are cancelled too, and executing is refused with BIZ_002 until ``start``.
- ``pause``: status ``paused``; the queue is held and running tasks pause at their
  next node boundary (they resume with the company).
- ``resume``: status ``active``; tasks paused by the company are queued again.
A company in ``maintenance`` refuses execution with BIZ_008.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from troupe.actors import handles
from troupe.actors import pool as agent_pool
from troupe.db import models
from troupe.engine.calculator import CalculatorError, calculate
from troupe.errors import AppError, ErrorCode, forbidden, invalid, not_found
from troupe.platform.access import load_company, may, visible_companies
from troupe.platform.deps import Principal
from troupe.platform.execution import schemas
from troupe.platform.tasks import schemas as task_schemas
from troupe.platform.tasks import service as tasks
from troupe.timeutil import utcnow

CALCULATOR_TIMEOUT_S = 1.0


async def control_company(*, session: AsyncSession, user: Principal, company_id: str,
                          action: str) -> schemas.CompanyControl:
    company = await load_company(session, user, company_id, "execute", for_update=True)
    if action == "start":
        company.execution_stopped = False
        company.status = "active"
    elif action == "stop":
        company.execution_stopped = True
        company.status = "idle"
        await session.execute(update(models.Task).where(
            models.Task.company_id == company.id,
            (models.Task.status == "paused") | ((models.Task.status == "pending") & models.Task.queued_at.is_not(None))
        ).values(status="cancelled", completed_at=utcnow(),
                 error={"code": "CANCELLED", "message": "company stopped", "recoverable": True, "retryCount": 0}))
    elif action == "pause":
        if company.execution_stopped:
            raise AppError(ErrorCode.AGENT_UNAVAILABLE, "The company is stopped; start it first")
        company.status = "paused"
    elif action == "resume":
        if company.execution_stopped:
            raise AppError(ErrorCode.AGENT_UNAVAILABLE, "The company is stopped; start it first")
        if company.status == "maintenance":
            raise AppError(ErrorCode.MAINTENANCE_MODE, "The company is in maintenance")
        company.status = "active"
        await session.execute(update(models.Task).where(
            models.Task.company_id == company.id, models.Task.status == "paused",
            models.Task.started_at.is_not(None)).values(status="pending", queued_at=utcnow()))
    company.last_activity_at = utcnow()
    await session.commit()
    result = await handles.call(handles.company_name(str(company.id)), "set_mode", action)
    return schemas.CompanyControl(company_id=str(company.id), status=company.status or "idle",
                                  execution_stopped=company.execution_stopped, running=int(result.get("running", 0)))


async def execute_workflow(*, session: AsyncSession, user: Principal, workflow_id: str,
                           body: schemas.WorkflowExecute) -> models.Task:
    try:
        wid = uuid.UUID(workflow_id)
    except ValueError as exc:
        raise not_found("Workflow") from exc
    workflow = await session.get(models.Workflow, wid)
    if workflow is None or workflow.company_id is None:
        raise not_found("Workflow")
    await load_company(session, user, workflow.company_id, "execute")
    task = await tasks.create(session=session, user=user, body=task_schemas.TaskCreate(
        name=body.name or f"{workflow.name} run", type="workflow", priority=body.priority,
        company_id=workflow.company_id, workflow_id=workflow.id, input=body.input))
    await session.flush()
    now = utcnow()
    # To the second: concurrent executes of one workflow must not queue on its row lock to stamp it.
    if workflow.last_executed_at is None or (now - workflow.last_executed_at).total_seconds() >= 1:
        workflow.last_executed_at = now
    return await tasks.execute(session=session, user=user, task_id=str(task.id),
                               body=task_schemas.TaskExecute(variables=body.variables))


async def workflow_executions(*, session: AsyncSession, user: Principal, workflow_id: str, page: int,
                              limit: int) -> tuple[list[models.Task], int]:
    try:
        wid = uuid.UUID(workflow_id)
    except ValueError as exc:
        raise not_found("Workflow") from exc
    workflow = await session.get(models.Workflow, wid)
    if workflow is None or workflow.company_id is None:
        raise not_found("Workflow")
    await load_company(session, user, workflow.company_id, "read")
    return await tasks.list_tasks(session=session, user=user, page=page, limit=limit, sort="createdAt",
                                  order="desc", workflow_id=wid)


async def _agent(session: AsyncSession, user: Principal, agent_id: str, *, write: bool = False) -> models.Agent:
    from troupe.platform.agents.service import load_agent

    return await load_agent(session, user, agent_id, write=write)


async def _ensure_may_run_agent(session: AsyncSession, user: Principal, agent: models.Agent) -> None:
    """Running an agent needs the execute right in its company (owner, member or
    admin; never viewer). Seeing a public agent is not enough: others use it from
    their own workflows, where they pay and where its memory is theirs."""
    if user.is_global:
        return
    if agent.company_id is None:
        if agent.created_by != user.id:
            raise forbidden("Only the agent's creator may run an agent that belongs to no company")
        return
    company = await session.get(models.Company, agent.company_id)
    if company is None or not may(company, user, "execute"):
        raise forbidden("Running this agent needs the execute right in its company (owner or member)")


async def _ensure_may_run_tool(session: AsyncSession, user: Principal, tool: models.Tool) -> None:
    """Testing a tool runs it with its stored configuration (credentials included):
    its creator, an admin, or someone with the execute right in a company that
    installed it (owner or member; never viewer)."""
    if user.is_global or tool.created_by == user.id:
        return
    companies = (await session.execute(
        select(models.Company).join(models.CompanyTool, models.CompanyTool.company_id == models.Company.id)
        .where(models.CompanyTool.tool_id == tool.id, visible_companies(user)))).scalars().all()
    if not any(may(company, user, "execute") for company in companies):
        raise forbidden("Running this tool needs the execute right in a company that installed it")


async def test_agent(*, session: AsyncSession, user: Principal, agent_id: str,
                     body: schemas.AgentTest) -> schemas.AgentTestResult:
    agent = await _agent(session, user, agent_id)
    await _ensure_may_run_agent(session, user, agent)
    prompt = body.input if body.context is None else f"{body.input}\n\nContext: {body.context}"
    # The row is at hand: pass it, so a cold agent's activation does not query it again.
    # Memory and activity belong to the caller: the company they run it in, their own conversation.
    request = {"prompt": prompt, "timeout": 60, "extra": {},
               "companyId": str(agent.company_id) if agent.company_id else None, "userId": str(user.id),
               # Offer only these of the agent's tools to the model (all of them when absent).
               "toolIds": body.tools,
               "conversationId": f"user:{user.id}:{body.conversation_id or 'test'}"}
    result = await agent_pool.complete(str(agent.id), request, agent=agent_pool.agent_state(agent))
    if not result.ok:
        try:
            error_code = ErrorCode(result.code or "BIZ_002")
        except ValueError:
            error_code = ErrorCode.AGENT_UNAVAILABLE
        raise AppError(error_code, f"Agent call failed: {result.message}")
    meta = result.meta
    return schemas.AgentTestResult(output=result.output["text"], metadata=schemas.AgentTestMeta(
        tokens_used=int(meta.get("tokensUsed", 0)), response_time=int(meta.get("responseTime", 0)),
        model=str(meta.get("model", agent.model)), cost=float(meta.get("cost", 0)),
        simulated=bool(meta.get("simulated"))))


def _bump(version: str | None) -> str:
    parts = (version or "1.0.0").split(".")
    try:
        major, minor, patch = (int(p) for p in (parts + ["0", "0"])[:3])
    except ValueError:
        return "1.0.1"
    return f"{major}.{minor}.{patch + 1}"


async def train_agent(*, session: AsyncSession, user: Principal, agent_id: str,
                      body: schemas.AgentTrain) -> schemas.AgentTrainResult:
    """No model weights are trained offline: the examples become few-shot memory
    (``configuration.fewShotExamples``, used in every prompt) and the version is bumped."""
    agent = await _agent(session, user, agent_id, write=True)
    examples: list[dict[str, str]] = []
    for item in body.training_data:
        examples.append({"input": str(item.input)[:4000], "output": str(item.output)[:4000]})
    config = dict(agent.configuration or {})
    config["fewShotExamples"] = (list(config.get("fewShotExamples") or []) + examples)[-50:]
    agent.configuration = config
    agent.version = _bump(agent.version)
    if (config.get("knowledgeBase") or {}).get("enabled"):
        from troupe.knowledge import index as knowledge

        # The examples are knowledge sources too: index them with the agent's other chunks.
        await knowledge.replace_chunks(session, agent.id, await knowledge.read_sources(
            session, user, config, kinds=("training",)), kinds=("training",))
    await session.commit()
    await agent_pool.reload(str(agent.id), agent_pool.agent_state(agent))
    return schemas.AgentTrainResult(agent_id=str(agent.id), version=agent.version, examples_stored=len(examples),
                                    method="few-shot memory",
                                    message="Examples stored as few-shot memory; no model weights were changed")


async def test_tool(*, session: AsyncSession, user: Principal, tool_id: str,
                    body: schemas.ToolTest) -> schemas.ToolTestResult:
    import jsonschema

    from troupe.engine.contract import NodeResult, ToolSpec
    from troupe.engine.tools import ToolContext, arun_tool
    from troupe.platform.tools.service import get_tool

    tool = await get_tool(session=session, user=user, tool_id=tool_id)
    await _ensure_may_run_tool(session, user, tool)
    if body.validate_schema:
        schema = (tool.schema or {}).get("input")
        if schema:
            try:
                jsonschema.validate(body.input, schema)
            except jsonschema.ValidationError as exc:
                raise invalid(f"input does not match the tool's schema: {exc.message}", field="input",
                              details={"path": list(exc.absolute_path)}) from exc
    # A company gives the call its storage area (file tools): the caller must may execute there.
    company_id = None
    if body.company_id is not None:
        company_id = (await load_company(session, user, body.company_id, "execute")).id
    started = time.perf_counter()
    if str(tool.type or "").lower() == "calculator":
        result = NodeResult.success({"result": await _calculate(body.input)})
    else:
        spec = ToolSpec(id=str(tool.id), type=tool.type, configuration=tool.configuration or {},
                        schema=tool.schema or {})
        result = await arun_tool(spec, body.input, context=ToolContext(
            company_id=str(company_id) if company_id else None, user_id=str(user.id),
            validate_input=body.validate_schema))
    duration = int((time.perf_counter() - started) * 1000)
    session.add(models.ToolCall(tool_id=tool.id, user_id=user.id, company_id=company_id, success=result.ok,
                                duration_ms=duration, error=None if result.ok else result.message))
    tool.last_used_at = utcnow()
    error = None if result.ok else result.as_error()
    return schemas.ToolTestResult(success=result.ok, output=result.output, error=error, duration_ms=duration)


async def _calculate(tool_input: Any) -> float | int:
    """The calculator, off the event loop and bounded in time (its own bounds keep
    each step short; the timeout answers the caller even if a thread lags). A refused
    expression is the caller's error: VAL_001, nothing recorded."""
    expression = tool_input.get("expression") if isinstance(tool_input, dict) else tool_input
    try:
        return await asyncio.wait_for(asyncio.to_thread(calculate, expression, timeout_s=CALCULATOR_TIMEOUT_S),
                                      timeout=CALCULATOR_TIMEOUT_S + 1)
    except CalculatorError as exc:
        raise invalid(f"calculator: {exc}", field="input.expression") from None
    except TimeoutError:
        raise invalid("calculator: expression took too long to evaluate", field="input.expression") from None
