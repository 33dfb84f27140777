from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from troupe.platform.deps import Authorized, DbSession
from troupe.platform.execution import schemas, service
from troupe.platform.schemas import Envelope, PageParams, Pagination, ok
from troupe.platform.tasks import schemas as task_schemas
from troupe.platform.tasks import service as tasks

router = APIRouter(prefix="/api", tags=["execution"])


def _company_route(action: str):
    async def control(company_id: str, session: DbSession, user: Authorized("companies:execute")):
        return ok(await service.control_company(session=session, user=user, company_id=company_id, action=action))

    control.__name__ = f"{action}_company"
    return control


for _action in ("start", "stop", "pause", "resume"):
    router.add_api_route(f"/companies/{{company_id}}/{_action}", _company_route(_action), methods=["POST"],
                         response_model=Envelope[schemas.CompanyControl], tags=["companies"],
                         summary=f"{_action.title()} the company's execution")


@router.post("/workflows/{workflow_id}/execute", response_model=Envelope[task_schemas.TaskOut], status_code=202,
             tags=["workflows"])
async def execute_workflow(workflow_id: str, session: DbSession, user: Authorized("workflows:execute"),
                           body: schemas.WorkflowExecute | None = None):
    task = await service.execute_workflow(session=session, user=user, workflow_id=workflow_id,
                                          body=body or schemas.WorkflowExecute())
    return ok(tasks.to_out(task))


@router.get("/workflows/{workflow_id}/executions", response_model=Envelope[list[task_schemas.TaskOut]],
            tags=["workflows"])
async def workflow_executions(workflow_id: str, session: DbSession, user: Authorized("workflows:read"),
                              page: Annotated[PageParams, Depends()]):
    rows, total = await service.workflow_executions(session=session, user=user, workflow_id=workflow_id,
                                                    page=page.page, limit=page.limit)
    return ok([tasks.to_out(t) for t in rows], pagination=Pagination.of(page=page.page, limit=page.limit,
                                                                        total=total))


@router.post("/agents/{agent_id}/test", response_model=Envelope[schemas.AgentTestResult], tags=["agents"])
async def test_agent(agent_id: str, body: schemas.AgentTest, session: DbSession, user: Authorized("agents:execute")):
    return ok(await service.test_agent(session=session, user=user, agent_id=agent_id, body=body))


@router.post("/agents/{agent_id}/train", response_model=Envelope[schemas.AgentTrainResult], tags=["agents"])
async def train_agent(agent_id: str, body: schemas.AgentTrain, session: DbSession, user: Authorized("agents:update")):
    return ok(await service.train_agent(session=session, user=user, agent_id=agent_id, body=body))


@router.post("/tools/{tool_id}/test", response_model=Envelope[schemas.ToolTestResult], tags=["tools"])
async def test_tool(tool_id: str, body: schemas.ToolTest, session: DbSession, user: Authorized("tools:execute")):
    return ok(await service.test_tool(session=session, user=user, tool_id=tool_id, body=body))


async def startup_hook() -> None:
    """Each replica makes sure the one cluster-wide recovery actor runs (idempotent by
    name), and keeps making sure: it is re-created if its node is lost."""
    from troupe.actors.pool import ensure_pool
    from troupe.actors.recovery import ensure_recovery, watch_recovery

    await ensure_recovery()
    watch_recovery()
    await ensure_pool()  # blank agent actors start now, before the first agent is called
