"""Typed views of the API's records: the fields a caller usually needs are declared (snake_case,
read from the API's camelCase); every other field the server sends is kept as an extra."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    id: str

    def to_dict(self) -> dict[str, Any]:
        """The record as the API sent it (camelCase)."""
        return self.model_dump(mode="json", by_alias=True)


class User(Record):
    email: str
    username: str | None = None
    role: str | None = None
    status: str | None = None


class Company(Record):
    name: str
    type: str | None = None
    status: str | None = None
    industry: str | None = None
    owner_id: str | None = None
    settings: dict[str, Any] = {}
    created_at: datetime | None = None


class Agent(Record):
    name: str
    type: str | None = None
    status: str | None = None
    provider: str | None = None
    model: str | None = None
    company_id: str | None = None
    configuration: dict[str, Any] = {}


class Tool(Record):
    name: str
    type: str | None = None
    category: str | None = None
    status: str | None = None
    configuration: dict[str, Any] = {}


class Workflow(Record):
    name: str
    status: str | None = None
    company_id: str | None = None
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    configuration: dict[str, Any] = {}


class Task(Record):
    name: str
    type: str | None = None
    status: str
    priority: str | None = None
    company_id: str | None = None
    workflow_id: str | None = None
    agent_id: str | None = None
    input: Any = None
    output: Any = None
    error: Any = None
    progress: int = 0
    current_step: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class Execution(Record):
    node_id: str
    status: str
    task_id: str | None = None
    output: Any = None
    error: str | None = None
    attempt: int = 0


class File(Record):
    filename: str
    size: int | None = None
    mime_type: str | None = None
    type: str | None = None
    url: str | None = None


FINISHED = frozenset({"completed", "failed", "cancelled"})


@dataclass
class ItemResult:
    """One input's outcome in a batch: ``status`` is the task's (``completed``, ``failed``,
    ``cancelled``, or its last known status when the wait timed out), ``error`` the task's error
    (``{"code", "message", ...}``) or None."""

    index: int
    task_id: str | None
    status: str
    output: Any = None
    error: Any = None
    input: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "taskId": self.task_id, "status": self.status, "output": self.output,
                "error": self.error}
