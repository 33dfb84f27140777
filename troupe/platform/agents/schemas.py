"""Request and response bodies of the agent routes (the spec's Agent model)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints

from troupe.platform.schemas import CamelModel, PageLimit, PageParams, RoundTripInput, StrictInput
from troupe.platform.tools.schemas import ToolPricing  # one pricing model, owned by the tools
from troupe.providers.catalog import ProviderName

AgentType = Literal["conversational", "analytical", "creative", "technical", "customer_service",
                    "data_processing", "custom"]
AgentStatus = Literal["active", "idle", "error", "training", "updating"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
ShortText = Annotated[str, StringConstraints(max_length=500)]
RECENT_REVIEWS = 5  # reviews embedded in an agent answer


# What agents.service.refuse_unevaluated refuses, declared: nothing evaluates these, so the
# only value taken is the default (the service names the field and says why).
_ONLY_DEFAULT = "Troupe has no {what}: only the default is accepted"


class SafetySettings(StrictInput):
    content_filter: bool = True
    toxicity_threshold: float = Field(0.8, ge=0, le=1, json_schema_extra={"const": 0.8},
                                      description=_ONLY_DEFAULT.format(what="toxicity classifier"))
    bias_detection: bool = Field(False, json_schema_extra={"const": False},
                                 description=_ONLY_DEFAULT.format(what="bias classifier"))
    personal_data_filter: bool = True


class KnowledgeBase(StrictInput):
    enabled: bool = False
    sources: list[Annotated[str, StringConstraints(min_length=1, max_length=2048)]] = Field(
        default_factory=list, max_length=50)
    update_frequency: Literal["realtime", "daily", "weekly"] = "daily"


def _no_connector(name: str) -> Any:
    return Field(False, json_schema_extra={"const": False},
                 description=_ONLY_DEFAULT.format(what=f"{name} connector"))


class Integrations(StrictInput):
    slack: bool = _no_connector("Slack")
    discord: bool = _no_connector("Discord")
    telegram: bool = _no_connector("Telegram")
    whatsapp: bool = _no_connector("WhatsApp")


class RateLimit(StrictInput):
    """Per-agent limits held cluster-wide (one minute sliding windows)."""

    requests_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    tokens_per_minute: int | None = Field(None, ge=100, le=100_000_000)


HttpUrl = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048,
                                           pattern=r"^https?://[^\s]+$")]


class AgentConfiguration(RoundTripInput):
    """The spec's AgentConfiguration with its defaults. Stored camelCase in
    ``agents.configuration``. Cross-field rules (maxTokens vs contextWindow vs the
    model's window, which provider takes baseUrl or endpoint) are checked by the
    service, which knows provider and model.

    ``apiKey`` is stored sealed and answered as ``********`` (send ``********`` back
    to keep it); ``baseUrl`` points openai/anthropic/google/local at another server,
    ``endpoint`` is the ``custom`` provider's URL. ``responseSchema`` (a JSON Schema)
    is what a ``structured`` answer must satisfy."""

    read_models = ("AgentConfigurationRead",)  # fewShotExamples (set by training) comes back from a GET

    system_prompt: str = Field("", max_length=20_000)
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(1024, gt=0, le=2_000_000)
    top_p: float = Field(1.0, ge=0, le=1)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    stop_sequences: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=16)
    tools: list[uuid.UUID] = Field(default_factory=list, max_length=50)
    memory_size: int = Field(10, ge=0, le=100_000)
    context_window: int = Field(8192, gt=0, le=2_000_000)
    response_format: Literal["text", "json", "structured"] = "text"
    safety: SafetySettings = Field(default_factory=SafetySettings)
    custom_instructions: list[Annotated[str, StringConstraints(max_length=2000)]] = Field(
        default_factory=list, max_length=50)
    knowledge_base: KnowledgeBase = Field(default_factory=KnowledgeBase)
    integrations: Integrations = Field(default_factory=Integrations)
    max_concurrency: int | None = Field(None, ge=1, le=1000)
    rate_limit: RateLimit | None = None
    api_key: str | None = Field(None, min_length=1, max_length=4096)
    base_url: HttpUrl | None = None
    endpoint: HttpUrl | None = None
    response_schema: dict[str, Any] | None = None


# Providers that take a per-agent base URL (another server speaking the same API).
BASE_URL_PROVIDERS = ("openai", "anthropic", "google", "local")


def _is_null(key: str) -> dict[str, Any]:
    return {"properties": {"configuration": {"properties": {key: {"type": "null"}}}}}


# The provider rules of agents.service.check_configuration, declared for a new agent (an update
# merges with the stored configuration, so there the service alone can judge).
_PROVIDER_RULES = {"allOf": [
    {"if": {"properties": {"provider": {"const": "custom"}}},
     "then": {"required": ["configuration"],
              "properties": {"configuration": {"required": ["endpoint"],
                                               "properties": {"endpoint": {"type": "string"}}}}},
     "else": _is_null("endpoint")},
    {"if": {"properties": {"provider": {"enum": list(BASE_URL_PROVIDERS)}}}, "else": _is_null("baseUrl")},
    {"if": {"properties": {"provider": {"const": "simulated"}}}, "then": _is_null("apiKey")},
]}


class AgentCreate(StrictInput):
    """``configuration.endpoint`` is the custom provider's (and required there), ``baseUrl``
    is for openai/anthropic/google/local, ``apiKey`` not for simulated (see the schema's ``allOf``)."""

    model_config = ConfigDict(json_schema_extra=_PROVIDER_RULES)

    name: str = Field(min_length=1, max_length=255)
    description: str = Field("", max_length=5000)
    type: AgentType
    model: str = Field(min_length=1, max_length=100)
    provider: ProviderName
    capabilities: list[Tag] = Field(default_factory=list, max_length=50)
    configuration: AgentConfiguration = Field(default_factory=AgentConfiguration)
    company_id: uuid.UUID | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    is_public: bool = False


class AgentUpdate(RoundTripInput):
    """Partial update. ``configuration`` is merged field by field over the stored one.
    ``isPublic`` goes through publish/unpublish; status belongs to the runtime. The
    whole GET answer may be sent back: its other fields are ignored."""

    read_models = ("AgentRead",)

    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    type: AgentType | None = None
    model: str | None = Field(None, min_length=1, max_length=100)
    provider: ProviderName | None = None
    capabilities: list[Tag] | None = Field(None, max_length=50)
    configuration: AgentConfiguration | None = None
    company_id: uuid.UUID | None = None
    tags: list[Tag] | None = Field(None, max_length=20)


class PublishRequest(StrictInput):
    category: str = Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_\- ]+$")
    pricing: ToolPricing | None = None
    documentation: str = Field(min_length=1, max_length=50_000)


class CloneRequest(StrictInput):
    name: str = Field(min_length=1, max_length=255)
    company_id: uuid.UUID | None = None


class ReviewCreate(StrictInput):
    rating: int = Field(ge=1, le=5)
    comment: str = Field("", max_length=5000)


class Marketplace(CamelModel):
    category: str
    pricing: ToolPricing | None = None
    documentation: str
    published_at: str | None = None
    published_by: str | None = None


class ReviewRead(CamelModel):
    id: uuid.UUID
    agent_id: uuid.UUID
    user_id: uuid.UUID | None
    username: str | None = None
    rating: int
    comment: str | None
    created_at: datetime | None


class ReviewResult(CamelModel):
    review: ReviewRead
    agent_rating: float
    review_count: int


class PerformanceMetric(CamelModel):
    """One bucket of a trend: node executions of the agent that started in it."""

    date: str = Field(description="bucket start, YYYY-MM-DD (UTC)")
    requests: int = Field(description="finished (completed + failed) node executions")
    response_time: float = Field(description="average execution time, ms")
    error_rate: float = Field(description="failed / finished, percent (0-100)")
    cost: float
    tokens: int


class PerformanceTrends(CamelModel):
    """Zero-filled, oldest first. Embedded in an agent: the last 7 days, 4 weeks and 12
    months; ``GET /api/agents/:id/performance``: 30 days, 12 weeks, 12 months."""

    daily: list[PerformanceMetric]
    weekly: list[PerformanceMetric]
    monthly: list[PerformanceMetric]


class AgentPerformance(CamelModel):
    """The spec's AgentPerformance, computed from the agent's recorded node executions
    (``task_executions``) and reviews. Rates are percentages (0-100)."""

    total_requests: int = Field(description="finished (completed + failed) node executions")
    successful_requests: int
    failed_requests: int
    average_response_time: float = Field(description="ms")
    average_tokens_used: float = Field(description="tokens per finished execution")
    last_used_at: datetime | None
    error_rate: float = Field(description="failed / finished, percent (0-100)")
    satisfaction_score: float | None = Field(description="average review rating (1-5); null without reviews")
    cost_per_request: float
    popularity_score: int = Field(description="distinct tasks that used the agent")
    total_tokens: int
    total_cost: float
    trends: PerformanceTrends


class SelectedTrends(CamelModel):
    """Only the trends asked for with ``metrics`` (all three by default); the others are null."""

    daily: list[PerformanceMetric] | None = None
    weekly: list[PerformanceMetric] | None = None
    monthly: list[PerformanceMetric] | None = None


class AgentPerformanceReport(AgentPerformance):
    """``GET /api/agents/:id/performance``: AgentPerformance over ``period`` (all time without one)."""

    period: Literal["hour", "day", "week", "month"] | None
    since: datetime | None
    trends: SelectedTrends  # type: ignore[assignment]


class AgentConfigurationRead(AgentConfiguration):
    """The stored configuration as answered: ``apiKey`` masked, ``fewShotExamples`` set by training."""

    model_config = ConfigDict(extra="ignore")

    few_shot_examples: list[dict[str, Any]] | None = None


class AgentRead(CamelModel):
    """The spec's Agent. ``reviews`` holds the most recent reviews (at most
    ``RECENT_REVIEWS``, newest first; ``reviewCount`` is the total, ``GET /api/agents/:id/reviews`` pages them)."""

    id: uuid.UUID
    name: str
    description: str
    type: AgentType
    model: str
    provider: ProviderName
    status: AgentStatus
    capabilities: list[str]
    configuration: AgentConfigurationRead
    performance: AgentPerformance
    company_id: uuid.UUID | None
    created_by: uuid.UUID | None
    tags: list[str]
    version: str
    is_public: bool
    rating: float
    reviews: list[ReviewRead]
    review_count: int = 0
    marketplace: Marketplace | None = None
    created_at: datetime | None
    updated_at: datetime | None
    last_used_at: datetime | None


class AgentListParams(PageParams):
    sort: Literal["name", "createdAt", "updatedAt", "rating", "type", "status", "provider"] = "createdAt"
    type: AgentType | None = None
    status: AgentStatus | None = None
    company_id: uuid.UUID | None = None
    tags: list[Tag] | None = Field(None, max_length=20)
    is_public: bool | None = None
    provider: ProviderName | None = None
    created_by: uuid.UUID | None = None


class PerformanceParams(CamelModel):
    period: Literal["hour", "day", "week", "month"] | None = None
    metrics: list[Literal["daily", "weekly", "monthly"]] | None = Field(None, max_length=3)


class ReviewListParams(CamelModel):
    page: int = Field(1, ge=1, le=100_000)
    limit: PageLimit = 20
    sort: Literal["createdAt", "rating"] = "createdAt"
    order: Literal["asc", "desc"] = "desc"
