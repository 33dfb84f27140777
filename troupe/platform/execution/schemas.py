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


class TrainingExample(StrictInput):
    input: Any = Field(description="what the agent is given (stored as text, at most 4000 characters)")
    output: Any = Field(description="what it should answer (stored as text, at most 4000 characters)")


class AgentTrain(StrictInput):
    # The spec's epochs/learningRate are not taken: examples become few-shot memory, and
    # nothing would read them (an unknown field is refused by name).
    training_data: list[TrainingExample] = Field(min_length=1, max_length=1000)


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
