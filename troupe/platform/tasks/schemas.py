from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from troupe.platform.schemas import CamelModel, RoundTripInput, StrictInput, UtcDateTime, omittable

TaskType = Literal["workflow", "single_agent", "batch", "scheduled"]
Priority = Literal["low", "medium", "high", "urgent"]
TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled", "paused"]


_UUID = {"type": "string", "format": "uuid"}
_WORKFLOW = {"required": ["workflowId"], "properties": {"workflowId": _UUID}}
_AGENT = {"required": ["agentId"], "properties": {"agentId": _UUID}}


def _when(task_type: str, then: dict[str, Any]) -> dict[str, Any]:
    return {"if": {"properties": {"type": {"const": task_type}}, "required": ["type"]}, "then": then}


# What tasks.service.check_refs_loaded requires per type, declared so the OpenAPI says it:
# a workflow task names its workflow, a single_agent task its agent, a batch or scheduled
# task one of them, and a scheduled task its time.
TYPE_REQUIREMENTS: dict[str, Any] = {"allOf": [
    _when("workflow", _WORKFLOW),
    _when("single_agent", _AGENT),
    _when("batch", {"anyOf": [_WORKFLOW, _AGENT]}),
    _when("scheduled", {"anyOf": [_WORKFLOW, _AGENT], "required": ["scheduledAt"],
                        "properties": {"scheduledAt": {"type": "string", "format": "date-time"}}}),
]}


class TaskCreate(StrictInput):
    """``workflowId``, ``agentId`` and ``scheduledAt`` are required by ``type`` (see the
    schema's ``allOf``); a missing one is VAL_002 naming it."""

    model_config = ConfigDict(json_schema_extra=TYPE_REQUIREMENTS)

    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    type: TaskType
    priority: Priority = "medium"
    company_id: uuid.UUID
    workflow_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    input: Any = None
    assigned_to: uuid.UUID | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)
    scheduled_at: UtcDateTime | None = None


class TaskUpdate(RoundTripInput):
    """Partial: fields left out keep their value. The whole GET answer may be sent
    back: its server-owned fields (status, type, companyId, ...) are ignored."""

    read_models = ("TaskOut",)

    name: str = omittable(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=10_000)
    priority: Priority = omittable()
    input: Any = None
    assigned_to: uuid.UUID | None = None
    tags: list[str] = omittable(max_length=50)
    scheduled_at: UtcDateTime | None = None


class TaskExecute(StrictInput):
    priority: Priority | None = None
    variables: dict[str, Any] | None = None


class TaskCancel(StrictInput):
    reason: str | None = Field(None, max_length=1000)


class TaskRetry(StrictInput):
    from_step: str | None = Field(None, max_length=255)
    reset_progress: bool = False


class TaskBatchItem(StrictInput):
    model_config = ConfigDict(json_schema_extra=TYPE_REQUIREMENTS)

    name: str = Field(min_length=1, max_length=255)
    type: TaskType
    company_id: uuid.UUID
    workflow_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    input: Any = None
    priority: Priority = "medium"
    scheduled_at: UtcDateTime | None = Field(None, description="required for type scheduled: when the task runs")


class TaskBatch(StrictInput):
    tasks: list[TaskBatchItem] = Field(min_length=1, max_length=1000)
    # Also start every task, in the same all-or-nothing request (as /execute does for one).
    execute: bool = False
    variables: dict[str, Any] | None = Field(None, description="Run variables of every task (with execute)")


class TaskOut(CamelModel):
    id: uuid.UUID
    name: str
    description: str | None = None
    type: TaskType
    status: TaskStatus
    priority: Priority
    company_id: uuid.UUID | None = None
    workflow_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    input: Any = None
    output: Any = None
    error: Any = None
    progress: int = 0
    current_step: str | None = None
    total_steps: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    execution_time: int | None = None
    estimated_completion: datetime | None = None
    created_by: uuid.UUID | None = None
    assigned_to: uuid.UUID | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    scheduled_at: datetime | None = None
    queued_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ExecutionOut(CamelModel):
    id: uuid.UUID
    task_id: uuid.UUID | None = None
    node_id: str
    agent_id: uuid.UUID | None = None
    tool_id: uuid.UUID | None = None
    status: str
    input: Any = None
    output: Any = None
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    execution_time: int | None = None
    retry_count: int = 0
    iteration: int = 0
    attempt: int = 0
    idempotency_key: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class QueueStatus(CamelModel):
    pending: int
    running: int
    completed: int
    failed: int
    total_capacity: int
    used_capacity: int
    estimated_wait_time: int = Field(description="Milliseconds")


class TaskBatchResult(CamelModel):
    created: int
    tasks: list[TaskOut]
