from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from troupe.platform.schemas import CamelModel, StrictInput
from troupe.platform.tasks.schemas import Priority


class CompanyControl(CamelModel):
    company_id: str
    status: str
    execution_stopped: bool
    running: int


class WorkflowExecute(StrictInput):
    input: Any = None
    variables: dict[str, Any] | None = None
    priority: Priority = "medium"
    name: str | None = Field(None, max_length=255)


class AgentTest(StrictInput):
    input: str = Field(min_length=1, max_length=100_000)
    context: Any = None
    tools: list[str] | None = None
    conversation_id: str | None = Field(
        None, min_length=1, max_length=200,
        description="Memory to use: the caller's own conversation of this name (default: the caller's test one)")


class AgentTestMeta(CamelModel):
    tokens_used: int
    response_time: int
    model: str
    cost: float
    simulated: bool = False


class AgentTestResult(CamelModel):
    output: str
    metadata: AgentTestMeta


class AgentTrain(StrictInput):
    training_data: list[Any] = Field(min_length=1, max_length=1000)
    epochs: int | None = Field(None, ge=1, le=1000)
    learning_rate: float | None = Field(None, gt=0, le=1)


class AgentTrainResult(CamelModel):
    agent_id: str
    version: str
    examples_stored: int
    method: str
    message: str


class ToolTest(StrictInput):
    input: Any = None
    validate_schema: bool = True
    # The company the call runs for (a file tool's storage area); the caller needs its execute right.
    company_id: uuid.UUID | None = None


class ToolTestResult(CamelModel):
    success: bool
    output: Any = None
    error: dict[str, Any] | None = None
    duration_ms: int
