"""Request and response bodies of the company routes (the spec's Company model)."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Discriminator, Field, StringConstraints, model_validator
from pydantic import Tag as PydanticTag

from troupe.engine.graph_models import Edges, NodeData, Nodes, WorkflowNode
from troupe.engine.validate import Limits
from troupe.platform.agents.schemas import AgentConfiguration, AgentConfigurationRead, AgentRead, AgentType
from troupe.platform.schemas import (
    CamelModel,
    PageLimit,
    PageParams,
    RoundTripInput,
    StrictInput,
    UtcDateTime,
    deep_merge,
)
from troupe.platform.tools.schemas import ToolOut
from troupe.platform.tools.secrets import MASK
from troupe.platform.workflows.schemas import WorkflowConfiguration, WorkflowOut
from troupe.providers.catalog import ProviderName

CompanyType = Literal["software", "research", "content", "consulting", "ecommerce", "finance", "healthcare",
                      "education", "other"]
Industry = Literal["technology", "finance", "healthcare", "education", "retail", "manufacturing", "consulting",
                   "media", "other"]
CompanyStatus = Literal["active", "idle", "error", "maintenance", "paused"]
MemberRole = Literal["member", "viewer"]
TaskStatus = Literal["pending", "running", "completed", "failed", "cancelled", "paused"]
LogLevel = Literal["debug", "info", "warn", "error"]

Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
LIST_EMBED_LIMIT = 10  # agents and tools embedded in each row of a company list


def _http_url(value: str) -> str:
    if not value.lower().startswith(("http://", "https://")) or len(value) < 10 or " " in value:
        raise ValueError("must be an http(s) URL")
    return value


def _ip_or_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or CIDR range") from exc
    return value


# The pattern says in the OpenAPI what _http_url checks.
HttpUrlStr = Annotated[str, StringConstraints(min_length=10, max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^ ]+$"),
                       AfterValidator(_http_url)]
IpRange = Annotated[str, StringConstraints(max_length=64), AfterValidator(_ip_or_cidr)]


# --------------------------------------------------------------------------- settings


class CompanyRetryPolicy(StrictInput):
    max_retries: int = Field(3, ge=0, le=20)
    backoff_strategy: Literal["linear", "exponential"] = "exponential"
    initial_delay: int = Field(1000, ge=0, le=3_600_000, description="milliseconds")
    max_delay: int = Field(30_000, ge=0, le=86_400_000, description="milliseconds")

    @model_validator(mode="after")
    def _ordered(self) -> CompanyRetryPolicy:
        if self.max_delay < self.initial_delay:
            raise ValueError("maxDelay must be >= initialDelay")
        return self


class SecuritySettings(StrictInput):
    ip_whitelist: list[IpRange] = Field(default_factory=list, max_length=100)
    require_mfa: bool = Field(False, alias="requireMFA")
    session_timeout: int = Field(3600, ge=60, le=604_800, description="seconds")


class BillingIn(RoundTripInput):
    read_models = ("Billing",)  # currentUsage comes back from a GET

    plan: Literal["free", "pro", "enterprise"] = "free"
    monthly_limit: float = Field(100.0, ge=0, le=10_000_000)


class CompanySettingsIn(StrictInput):
    """The spec's CompanySettings with its defaults. On create the body is merged
    over these defaults; on update over the stored settings (field by field)."""

    auto_start: bool = False
    max_agents: int = Field(10, ge=1, le=1000)
    max_tools: int = Field(20, ge=1, le=1000)
    max_concurrency: int = Field(5, ge=1, le=1000)
    notify_on_completion: bool = True
    api_rate_limit: int = Field(1000, ge=1, le=1_000_000, description="requests per hour")
    memory_size: float = Field(1, ge=0, le=1024, description="GB")
    visibility: Literal["private", "team", "public"] = "private"
    webhook_url: HttpUrlStr | None = None
    slack_channel: str | None = Field(None, max_length=100)
    email_notifications: bool = True
    sms_notifications: bool = False
    retry_policy: CompanyRetryPolicy = Field(default_factory=CompanyRetryPolicy)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    billing: BillingIn = Field(default_factory=BillingIn)


class Billing(BillingIn):
    current_usage: float = 0.0  # server-owned


class CompanySettings(CompanySettingsIn):
    billing: Billing = Field(default_factory=Billing)


def default_settings() -> dict[str, Any]:
    return CompanySettings().model_dump(mode="json", by_alias=True)


def effective_settings(stored: dict[str, Any] | None) -> dict[str, Any]:
    """Stored settings over the defaults (older rows may lack newer keys)."""
    return deep_merge(default_settings(), stored or {})


# --------------------------------------------------------------------------- workflow drafts


class WorkflowDraft(StrictInput):
    nodes: Nodes = Field(default_factory=list)
    edges: Edges = Field(default_factory=list)


# --------------------------------------------------------------------------- company bodies


class CompanyCreate(StrictInput):
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    type: CompanyType
    industry: Industry
    agents: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    tools: list[uuid.UUID] = Field(default_factory=list, max_length=1000)
    workflow: WorkflowDraft | None = None
    settings: CompanySettingsIn | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    logo: HttpUrlStr | None = None
    website: HttpUrlStr | None = None


class TeamMemberIn(StrictInput):
    user_id: uuid.UUID
    role: MemberRole = "member"


class CompanyUpdate(RoundTripInput):
    """Partial update. Members: ``teamMembers`` replaces the whole list;
    ``addMembers`` / ``removeMembers`` change it incrementally (not both styles at once).
    A ``teamMembers`` entry may be a bare user id, as a GET answers it: that member
    keeps their role (a new one joins as member). The whole GET answer may be sent
    back: its server-owned fields are ignored."""

    # _one_style, declared: teamMembers with a non-empty addMembers or removeMembers is refused.
    model_config = ConfigDict(json_schema_extra={"not": {"anyOf": [
        {"required": ["teamMembers", other], "properties": {"teamMembers": {"type": "array"},
                                                            other: {"type": "array", "minItems": 1}}}
        for other in ("addMembers", "removeMembers")]}})

    read_models = ("CompanyRead", "CompanyDetail")

    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    type: CompanyType | None = None
    industry: Industry | None = None
    settings: CompanySettingsIn | None = None
    tags: list[Tag] | None = Field(None, max_length=20)
    logo: HttpUrlStr | None = None
    website: HttpUrlStr | None = None
    team_members: list[TeamMemberIn | uuid.UUID] | None = Field(None, max_length=500)
    add_members: list[TeamMemberIn] | None = Field(None, max_length=500)
    remove_members: list[uuid.UUID] | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _one_style(self) -> CompanyUpdate:
        if self.team_members is not None and (self.add_members or self.remove_members):
            raise ValueError("use either teamMembers or addMembers/removeMembers, not both")
        return self


class DuplicateRequest(StrictInput):
    name: str = Field(min_length=1, max_length=255)
    include_data: bool = Field(False, description="Also copy team members and their roles")


# --------------------------------------------------------------------------- export document


class ExportCompany(StrictInput):
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    type: CompanyType
    industry: Industry
    settings: CompanySettingsIn = Field(default_factory=CompanySettingsIn)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    logo: HttpUrlStr | None = None
    website: HttpUrlStr | None = None


class ExportAgent(StrictInput):
    id: str = Field(min_length=1, max_length=100, description="Reference inside the document")
    name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=5000)
    type: AgentType
    model: str = Field(min_length=1, max_length=100)
    provider: ProviderName
    capabilities: list[Tag] = Field(default_factory=list, max_length=50)
    configuration: AgentConfiguration = Field(default_factory=AgentConfiguration)
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class ExportToolLink(StrictInput):
    id: uuid.UUID
    name: str | None = Field(None, max_length=255)
    version: str | None = Field(None, max_length=20)


class DocumentNodeData(NodeData):
    """In a company document ``agentId`` may name one of the document's own agents
    (``ExportAgent.id``, any reference), remapped to the new agent on import."""

    agent_id: str | None = Field(None, max_length=100)  # type: ignore[assignment]


class DocumentNode(WorkflowNode):
    data: DocumentNodeData


class ExportWorkflow(StrictInput):
    id: str | None = Field(None, max_length=100)
    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    version: str = Field("1.0.0", max_length=20)
    nodes: Annotated[list[DocumentNode], Field(max_length=Limits.max_nodes)] = Field(default_factory=list)
    edges: Edges = Field(default_factory=list)
    configuration: WorkflowConfiguration = Field(
        default_factory=WorkflowConfiguration, description="secrets are never in a document (empty here)")
    triggers: list[dict[str, Any]] = Field(default_factory=list, max_length=50)
    schedule: dict[str, Any] | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=20)


def _require_unique_agent_ids(agents: list[Any]) -> None:
    """Workflows refer to a document's agents by these ids, so two must never share one."""
    ids = [a.id for a in agents]
    if len(ids) != len(set(ids)):
        raise ValueError("agent ids must be unique within the document")


class CompanyDocument(StrictInput):
    """``POST /companies/:id/export`` output and ``/import`` input: versioned, secrets removed."""

    format: Literal["troupe.company"]
    version: Literal[1]
    exported_at: str | None = Field(None, max_length=40)
    company: ExportCompany
    agents: list[ExportAgent] = Field(default_factory=list, max_length=1000)
    tools: list[ExportToolLink] = Field(default_factory=list, max_length=1000)
    workflows: list[ExportWorkflow] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _unique_refs(self) -> CompanyDocument:
        _require_unique_agent_ids(self.agents)
        return self


class SpecAgentConfiguration(AgentConfiguration):  # AgentConfiguration is a RoundTripInput
    """An agent's configuration as a GET answers it: a masked ``apiKey`` is dropped (the key
    itself is never in a document), ``fewShotExamples`` is ignored."""

    read_models = (AgentConfigurationRead,)

    @model_validator(mode="before")
    @classmethod
    def _drop_masked_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("apiKey") == MASK:
            return {k: v for k, v in data.items() if k != "apiKey"}
        return data


class SpecAgent(RoundTripInput, ExportAgent):
    """The spec's Agent in an import document; its server-owned fields are ignored."""

    read_models = ("AgentRead",)

    description: str = Field("", max_length=5000)
    configuration: SpecAgentConfiguration = Field(default_factory=SpecAgentConfiguration)

    @model_validator(mode="before")
    @classmethod
    def _null_description(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("description", "") is None:
            return {**data, "description": ""}
        return data


class SpecTool(RoundTripInput, ExportToolLink):
    """The spec's Tool in an import document: linked by ``id`` (the tool must exist and be
    visible to you); the rest of the object is ignored."""

    read_models = ("CompanyToolRead",)


class SpecWorkflow(RoundTripInput, ExportWorkflow):
    read_models = ("WorkflowOut",)


class SpecCompany(RoundTripInput):
    """The spec's ``Partial<Company>``: missing fields keep the company's values."""

    read_models = ("CompanyDetail",)

    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    type: CompanyType | None = None
    industry: Industry | None = None
    settings: CompanySettingsIn | None = None
    tags: list[Tag] | None = Field(None, max_length=20)
    logo: HttpUrlStr | None = None
    website: HttpUrlStr | None = None


class SpecCompanyDocument(StrictInput):
    """The spec's import document ``{company, agents?, tools?, workflows?}`` (e.g. objects as
    the GET routes answer them). Imported through the same path as a ``troupe.company`` document."""

    company: SpecCompany = Field(default_factory=SpecCompany)
    agents: list[SpecAgent] = Field(default_factory=list, max_length=1000)
    tools: list[SpecTool] = Field(default_factory=list, max_length=1000)
    workflows: list[SpecWorkflow] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _unique_refs(self) -> SpecCompanyDocument:
        _require_unique_agent_ids(self.agents)
        return self


def _document_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "troupe" if "format" in value else "spec"
    return "troupe" if isinstance(value, CompanyDocument) else "spec"


class CompanyImportRequest(StrictInput):
    data: Annotated[Annotated[CompanyDocument, PydanticTag("troupe")]
                    | Annotated[SpecCompanyDocument, PydanticTag("spec")],
                    Discriminator(_document_kind)] = Field(
        description="A versioned troupe.company document (what export answers), or the spec's "
                    "{company, agents, tools, workflows} (told apart by the presence of format)")
    overwrite: bool = Field(False, description="Replace the company's configuration, agents, tool links "
                                               "and workflows instead of adding to them")


class ImportResult(CamelModel):
    company_id: uuid.UUID
    overwritten: bool
    agents: dict[str, uuid.UUID] = Field(description="document agent id -> new agent id")
    workflows: list[uuid.UUID]
    tools_installed: list[uuid.UUID]


# --------------------------------------------------------------------------- responses


class MemberRead(CamelModel):
    user_id: uuid.UUID
    username: str | None
    role: Literal["owner", "member", "viewer"]


class CompanyToolRead(ToolOut):
    """The spec's Tool (secrets masked) as installed in the company, with its usage."""

    installed_at: datetime | None


class WorkflowSummary(CamelModel):
    id: uuid.UUID
    name: str
    version: str | None
    status: str | None
    node_count: int
    edge_count: int
    updated_at: datetime | None
    last_executed_at: datetime | None


class ResourceUsage(CamelModel):
    cpu: float | None = Field(description="Always null: runs share actor and worker processes, so no "
                                          "per-company CPU figure is recorded")
    memory: float | None = Field(description="Always null, as cpu")
    storage: int = Field(description="bytes of files stored for the company")
    bandwidth: int | None = Field(description="Always null: outbound traffic is not metered per company")
    tokens: int = Field(description="model tokens used (addition to the spec)")


class CostBreakdown(CamelModel):
    compute: float | None = Field(description="Always null: Troupe has no compute price")
    storage: float | None = Field(description="Always null: Troupe has no storage price")
    api: float = Field(description="provider cost recorded on node executions")
    other: float = Field(description="task cost not attributed to a node execution (addition)")


class CompanyCosts(CamelModel):
    monthly: float = Field(description="cost of tasks created since the start of the current month (UTC)")
    total: float
    breakdown: CostBreakdown


class Performance(CamelModel):
    uptime: float | None = Field(description="Always null: a company's status history is not recorded")
    response_time: float = Field(description="average node execution time, ms")
    throughput: float = Field(description="tasks finished per hour over the last 24 hours")


class CompanyMetrics(CamelModel):
    """The spec's CompanyMetrics, from the company's tasks and node executions.
    ``successRate`` is a percentage (0-100) of finished (completed + failed) tasks."""

    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    pending_tasks: int
    running_tasks: int = Field(description="addition to the spec")
    average_execution_time: float = Field(description="ms, completed tasks")
    success_rate: float = Field(description="percent (0-100) of finished tasks that completed")
    last_execution_at: datetime | None
    resource_usage: ResourceUsage
    costs: CompanyCosts
    performance: Performance


class CompanyRead(CamelModel):
    """The spec's Company. In lists ``agents`` and ``tools`` hold at most ``LIST_EMBED_LIMIT``
    entries each (the first attached / installed); ``agentCount`` / ``toolCount`` are the totals
    and the single company answer has them all. ``workflow`` is the most recently updated active
    (else any) workflow, null when the company has none."""

    id: uuid.UUID
    name: str
    description: str | None
    type: CompanyType
    industry: Industry
    status: CompanyStatus
    owner_id: uuid.UUID | None
    team_members: list[uuid.UUID]
    agents: list[AgentRead]
    tools: list[CompanyToolRead]
    workflow: WorkflowOut | None
    settings: CompanySettings
    tags: list[str]
    logo: str | None
    website: str | None
    agent_count: int = 0
    tool_count: int = 0
    my_role: Literal["admin", "owner", "member", "viewer"] | None = None
    metrics: CompanyMetrics
    created_at: datetime | None
    updated_at: datetime | None
    last_activity_at: datetime | None


class CompanyDetail(CompanyRead):
    members: list[MemberRead]
    workflows: list[WorkflowSummary] = Field(description="every workflow of the company, newest first")


class NeedsReentry(CamelModel):
    """One copied object whose secrets were not copied: ``fields`` are the paths
    (``nodes[1].data.config.headers.Authorization``, ``configuration.secrets.TOKEN``)
    that were cleared and must be entered again before the object can use them."""

    kind: Literal["agent", "workflow", "toolInstall"]
    id: uuid.UUID
    name: str
    fields: list[str]


class DuplicatedCompany(CompanyDetail):
    """``POST /api/companies/{id}/duplicate``: the copy, and what it lacks. A copy
    never carries the source's sealed values or secret-named settings."""

    needs_reentry: list[NeedsReentry] = Field(default_factory=list)


class TrendPoint(CamelModel):
    date: str
    tasks: int
    completed: int
    failed: int
    success_rate: float = Field(description="percent (0-100)")
    average_duration: float = Field(description="ms, completed tasks")
    cost: float
    tokens: int


class CompanyMetricsReport(CompanyMetrics):
    """``GET /api/companies/:id/metrics``: the spec's CompanyMetrics over the tasks created in
    [startDate, endDate) (all tasks up to endDate without startDate), plus a trend in ``period``
    buckets (over [startDate, endDate), or the period's default span ending at endDate)."""

    company_id: uuid.UUID
    period: Literal["hour", "day", "week", "month"]
    start_date: datetime | None
    end_date: datetime
    cancelled_tasks: int
    executions: int = Field(description="node executions of these tasks")
    failed_executions: int
    trend: list[TrendPoint]


class TaskRead(CamelModel):
    """The spec's Task model."""

    id: uuid.UUID
    name: str
    description: str | None
    type: str
    status: str | None
    priority: str | None
    company_id: uuid.UUID | None
    workflow_id: uuid.UUID | None
    agent_id: uuid.UUID | None
    input: Any = None
    output: Any = None
    error: Any = None
    progress: int | None
    current_step: str | None
    total_steps: int | None
    started_at: datetime | None
    completed_at: datetime | None
    execution_time: int | None
    estimated_completion: datetime | None
    created_by: uuid.UUID | None
    assigned_to: uuid.UUID | None
    tags: list[str]
    metadata: dict[str, Any] = Field(validation_alias="meta")
    created_at: datetime | None
    updated_at: datetime | None


# --------------------------------------------------------------------------- query parameters


class CompanyListParams(PageParams):
    sort: Literal["name", "createdAt", "updatedAt", "type", "industry", "status", "lastActivityAt"] = "createdAt"
    type: CompanyType | None = None
    status: CompanyStatus | None = None
    owner_id: uuid.UUID | None = None
    industry: Industry | None = None
    tags: list[Tag] | None = Field(None, max_length=20)


class MetricsParams(CamelModel):
    period: Literal["hour", "day", "week", "month"] = "day"
    start_date: UtcDateTime | None = None
    end_date: UtcDateTime | None = None


class LogParams(CamelModel):
    page: int = Field(1, ge=1, le=100_000)
    limit: PageLimit = 50
    level: LogLevel | None = None
    start_date: UtcDateTime | None = None
    end_date: UtcDateTime | None = None
    search: str | None = Field(None, max_length=200)


class TaskListParams(CamelModel):
    page: int = Field(1, ge=1, le=100_000)
    limit: PageLimit = 20
    sort: Literal["createdAt", "updatedAt", "priority", "status", "name", "startedAt", "completedAt"] = "createdAt"
    order: Literal["asc", "desc"] = "desc"
    status: TaskStatus | None = None
    priority: Literal["low", "medium", "high", "urgent"] | None = None
    type: Literal["workflow", "single_agent", "batch", "scheduled"] | None = None
