"""The spec's Workflow model as request and response schemas.

Bodies are typed (enums, ranges, sizes are refused with VAL_*), but the graph
itself may be incomplete: drafts are stored as sent and ``validate`` reports
what is missing. ``configuration`` defaults follow the spec's fields.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from troupe.engine.contract import ErrorHandling, Strategy
from troupe.engine.graph_models import Edges, Ident, Nodes, WorkflowEdge, WorkflowNode
from troupe.engine.triggers import EVENT_ON
from troupe.platform.schemas import CamelModel, PageParams, RoundTripInput, StrictInput, omittable

WorkflowStatus = Literal["draft", "active", "paused", "error", "archived"]
TriggerType = Literal["manual", "schedule", "webhook", "event", "file"]

Tag = Annotated[str, Field(min_length=1, max_length=50)]
Tags = Annotated[list[Tag], Field(max_length=50)]
Name = Annotated[str, Field(min_length=1, max_length=255)]
Description = Annotated[str, Field(max_length=5000)]
Category = Annotated[str, Field(min_length=1, max_length=50)]
SecretName = Annotated[str, Field(min_length=1, max_length=100)]
SecretValue = Annotated[str, Field(max_length=4096)]
VariableName = Annotated[str, Field(min_length=1, max_length=100)]


class WorkflowRetryPolicy(StrictInput):
    max_retries: int = Field(3, ge=0, le=10)
    backoff_strategy: Literal["linear", "exponential"] = "exponential"
    # Beyond the spec's three fields: the delays the engine waits between attempts.
    initial_delay: float = Field(1.0, ge=0, le=3600, description="seconds")
    max_delay: float = Field(30.0, ge=0, le=86_400, description="seconds")
    retryable_errors: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=50)] = Field(
        default_factory=list)


class LoggingConfig(StrictInput):
    level: Literal["debug", "info", "warn", "error"] = "info"
    include_inputs: bool = True
    include_outputs: bool = True
    retention: int = Field(30, ge=1, le=3650, description="days")


class NotificationConfig(StrictInput):
    on_start: bool = False
    on_complete: bool = True
    on_error: bool = True
    channels: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=20)] = Field(
        default_factory=list)


class WorkflowConfiguration(StrictInput):
    strategy: Strategy = "sequential"
    timeout: float = Field(3600, ge=1, le=604_800, description="seconds for a whole run")
    retry_policy: WorkflowRetryPolicy | None = Field(
        None, description="null: the company's settings.retryPolicy applies to this workflow's nodes")
    error_handling: ErrorHandling = "stop"
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    notifications: NotificationConfig = Field(default_factory=NotificationConfig)
    variables: dict[str, Any] = Field(default_factory=dict)
    # Troupe's extension: the variables a run may set (execute's ``variables``); any other
    # name sent at execute is refused with VAL_001 (troupe.engine.contract.refused_variables).
    overridable_variables: Annotated[list[VariableName], Field(max_length=100)] = Field(default_factory=list)
    # Stored sealed (AES-256-GCM), answered as "********"; send "********" back to keep a value.
    secrets: Annotated[dict[SecretName, SecretValue], Field(max_length=50)] = Field(default_factory=dict)


# The rules workflows.triggers.check_triggers applies, owned here so the schema declares them.
USED_TRIGGER_TYPES = ("manual", "webhook", "event")  # schedule: the workflow's schedule; file: not supported
TRIGGER_CONFIG_KEYS: dict[str, set[str]] = {"manual": set(), "webhook": {"secret", "url", "variables"},
                                            "event": {"workflowId", "on"}}
WEBHOOK_SECRET_LENGTH = (16, 256)


def _trigger_schema(schema: dict[str, Any], *, secret_required: bool = True) -> None:
    def when(kind: str, configuration: dict[str, Any]) -> dict[str, Any]:
        return {"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                "then": {"properties": {"configuration": {"type": "object", "additionalProperties": False,
                                                          **configuration}}}}

    low, high = WEBHOOK_SECRET_LENGTH
    schema["properties"]["type"]["enum"] = list(USED_TRIGGER_TYPES)
    schema["allOf"] = [
        when("manual", {"maxProperties": 0}),
        when("webhook", {"required": ["secret"] if secret_required else [], "properties": {
            "secret": {"type": "string", "description": '"********" keeps the stored secret',
                       "anyOf": [{"minLength": low, "maxLength": high}, {"const": "********"}]},
            "url": {"type": "string", "readOnly": True}, "variables": {"type": "object"}}}),
        when("event", {"required": ["workflowId"], "properties": {
            "workflowId": {"type": "string", "format": "uuid"}, "on": {"enum": list(EVENT_ON)}}}),
    ]


class WorkflowTrigger(StrictInput):
    model_config = ConfigDict(json_schema_extra=lambda schema: _trigger_schema(schema))

    id: Ident
    type: TriggerType
    configuration: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class ExportedTrigger(WorkflowTrigger):
    """A trigger in an export document: a webhook's secret is left out of exports, so an
    import may omit it (the trigger then answers 401 until a secret is set)."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _trigger_schema(schema, secret_required=False))


class WorkflowTriggerOut(CamelModel):
    """A stored trigger as answered: a webhook's secret is "********", or null when it has none
    (a copy or an import whose secret must be entered again), and its ``url``."""

    id: str
    type: TriggerType
    configuration: dict[str, Any]
    enabled: bool


class ScheduleInput(RoundTripInput):
    read_models = ("WorkflowSchedule",)  # nextRun/lastRun come back from a GET
    enabled: bool = True
    cron: Annotated[str, Field(min_length=1, max_length=200)]
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"


class ScheduleRequest(ScheduleInput):
    """``POST /api/workflows/{id}/schedule``."""

    variables: dict[str, Any] | None = None


class WorkflowSchedule(CamelModel):
    enabled: bool
    cron: str
    timezone: str
    variables: dict[str, Any] | None = None
    next_run: datetime | None = None
    last_run: datetime | None = None


Triggers = Annotated[list[WorkflowTrigger], Field(max_length=50)]


class WorkflowCreate(StrictInput):
    # The service's rule, declared: a name, or a template whose name is copied.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["name"], "properties": {"name": {"type": "string"}}},
        {"required": ["templateId"], "properties": {"templateId": {"type": "string", "format": "uuid"}}}]})

    name: Name | None = Field(None, description="required unless templateId is given")
    description: Description | None = None
    company_id: uuid.UUID
    template_id: uuid.UUID | None = Field(None, description="copy nodes, edges and configuration of a template")
    nodes: Nodes | None = None
    edges: Edges | None = None
    configuration: WorkflowConfiguration | None = None
    status: Literal["draft", "active"] = "draft"
    triggers: Triggers | None = None
    schedule: ScheduleInput | None = None
    tags: Tags | None = None
    is_template: bool = False
    template_category: Category | None = None


class WorkflowUpdate(RoundTripInput):
    """Partial: fields left out keep their value. The whole GET answer may be sent
    back: its server-owned fields are ignored."""

    read_models = ("WorkflowOut",)

    name: Name = omittable()
    description: Description | None = None
    nodes: Nodes = omittable()
    edges: Edges = omittable()
    configuration: WorkflowConfiguration = omittable()
    status: WorkflowStatus = omittable()
    triggers: Triggers = omittable()
    schedule: ScheduleInput | None = None
    tags: Tags | None = None
    is_template: bool = omittable()
    template_category: Category | None = None


class WorkflowOut(CamelModel):
    id: uuid.UUID
    name: str
    description: str | None
    version: str
    company_id: uuid.UUID | None = Field(description="null for the built-in templates")
    nodes: list[WorkflowNode]
    edges: list[WorkflowEdge]
    configuration: WorkflowConfiguration
    status: str
    triggers: list[WorkflowTriggerOut]
    schedule: WorkflowSchedule | None
    created_by: uuid.UUID | None
    tags: list[str]
    is_template: bool
    template_category: str | None
    created_at: datetime
    updated_at: datetime
    last_executed_at: datetime | None


class ValidationIssue(CamelModel):
    code: str = Field(description="precise rule, e.g. cycle_without_loop, agent_not_found")
    type: Literal["missing_connection", "invalid_config", "circular_dependency", "resource_limit"]
    message: str
    severity: Literal["error", "warning"]
    node_id: str | None = None
    edge_id: str | None = None


class ValidationReport(CamelModel):
    is_valid: bool
    valid: bool = Field(description="same as isValid")
    errors: list[ValidationIssue]
    warnings: list[ValidationIssue]
    suggestions: list[str]


class ExportMetadata(CamelModel):
    exported_at: datetime
    exported_by: uuid.UUID
    platform: str


class ExportedWorkflow(StrictInput):
    """The workflow inside an export document (no ids of this deployment, no secrets)."""

    name: Name
    description: Description | None = None
    version: Annotated[str, Field(max_length=20)] = "1.0.0"
    nodes: Nodes = Field(default_factory=list)
    edges: Edges = Field(default_factory=list)
    configuration: WorkflowConfiguration = Field(default_factory=WorkflowConfiguration)
    triggers: Annotated[list[ExportedTrigger], Field(max_length=50)] = Field(default_factory=list)
    schedule: ScheduleInput | None = None
    tags: Tags = Field(default_factory=list)
    template_category: Category | None = None


class DependencyRef(CamelModel):
    id: uuid.UUID
    name: str
    kind: Literal["agent", "tool"]
    detail: dict[str, Any] = Field(default_factory=dict, description="agent provider/model or tool type/version")


class Dependencies(CamelModel):
    agents: list[DependencyRef]
    tools: list[DependencyRef]


class ExportDocument(CamelModel):
    format: Literal["troupe.workflow"] = "troupe.workflow"
    version: Literal["1"] = "1"
    metadata: ExportMetadata
    workflow: ExportedWorkflow
    dependencies: Dependencies


class WorkflowImportDocument(StrictInput):
    """An export document as ``POST /api/workflows/{id}/export`` answers it; ``metadata`` and
    ``dependencies`` describe the source and are not imported (the agents and tools it names must
    exist here)."""

    format: Literal["troupe.workflow"]
    version: Literal["1", 1]
    workflow: ExportedWorkflow
    metadata: dict[str, Any] | None = None
    dependencies: dict[str, Any] | None = None


class WorkflowImportRequest(StrictInput):
    data: WorkflowImportDocument = Field(description="an export document (format troupe.workflow, version 1)")
    overwrite: bool = Field(False, description="required when the workflow already has nodes")
    create_dependencies: Literal[False] = Field(False, description="true is not supported: create agents and "
                                                                    "tools first")


class WorkflowPage(PageParams):
    """List parameters; ``sort`` names one of ``service.SORTS`` (the document lists them)."""

    sort: Literal["name", "createdAt", "updatedAt", "status", "lastExecutedAt"] | None = None
