"""The spec's Tool model as request and response schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, GetJsonSchemaHandler, field_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from troupe.engine.validate import is_valid_url
from troupe.models_base import NOT_NUL, VISIBLE, WHITESPACE
from troupe.platform.schemas import CamelModel, PageParams, RoundTripInput, StrictInput, omittable

ToolType = Literal["api", "database", "file", "code", "webhook", "scraper", "calculator", "translator", "custom"]
ToolCategory = Literal["productivity", "data", "communication", "analysis", "automation", "integration", "utility"]
ToolStatus = Literal["active", "inactive", "deprecated", "error", "maintenance"]
HttpMethod = Literal["GET", "POST", "PUT", "DELETE", "PATCH"]
AuthType = Literal["none", "api_key", "bearer", "basic", "oauth2"]
PricingModel = Literal["free", "usage", "subscription", "one_time"]

Name = Annotated[str, Field(min_length=1, max_length=255)]
ShortText = Annotated[str, Field(max_length=255)]
LongText = Annotated[str, Field(max_length=20_000)]
Tag = Annotated[str, Field(min_length=1, max_length=50)]
Tags = Annotated[list[Tag], Field(max_length=50)]
HeaderName = Annotated[str, Field(min_length=1, max_length=100)]
HeaderValue = Annotated[str, Field(max_length=4096)]
JsonObject = dict[str, Any]


class JsonSchemaObject(StrictInput):
    """A JSON Schema document: the keys named here are checked, any other JSON
    Schema keyword is kept (the whole object is checked with ``jsonschema``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    type: Literal["object"] = "object"
    properties: JsonObject = Field(default_factory=dict)
    examples: Annotated[list[Any], Field(max_length=50)] = Field(default_factory=list)


class ToolInputSchema(JsonSchemaObject):
    required: Annotated[list[Annotated[str, Field(max_length=255)]], Field(max_length=500)] = Field(
        default_factory=list)


class ToolSchema(StrictInput):
    input: ToolInputSchema = Field(default_factory=ToolInputSchema)
    output: JsonSchemaObject = Field(default_factory=JsonSchemaObject)


class ToolAuthentication(StrictInput):
    type: AuthType = "none"
    # Stored sealed (AES-256-GCM); answered as "********". Send "********" back to keep a value.
    credentials: Annotated[dict[HeaderName, HeaderValue], Field(max_length=20)] | None = None


class ToolRateLimit(StrictInput):
    requests: int = Field(60, ge=1, le=1_000_000)
    window: int = Field(60, ge=1, le=86_400, description="seconds")


class ToolValidation(StrictInput):
    input_schema: JsonObject | None = None
    output_schema: JsonObject | None = None


class ToolCaching(StrictInput):
    enabled: bool = False
    ttl: int = Field(300, ge=0, le=604_800, description="seconds")
    strategy: Literal["memory", "redis", "database"] = "memory"


class ToolMonitoring(StrictInput):
    enabled: bool = False
    alert_threshold: float = Field(0.5, ge=0, le=100, description="error rate (0..1) or percent that alerts")
    health_check: Annotated[str, Field(max_length=2048)] = ""


class WebhookSettings(StrictInput):
    """``webhook`` tools: every call is signed with HMAC-SHA256 (troupe.engine.tools.http)."""

    # Stored sealed, answered "********" (which keeps the stored one); otherwise 16+ characters
    # once stripped, as _long_enough checks.
    secret: Annotated[str, Field(min_length=1, max_length=4096, json_schema_extra={
        "pattern": f"^{WHITESPACE}*(\\*{{8}}|{VISIBLE}{NOT_NUL}{{14,}}{VISIBLE}){WHITESPACE}*$"})]
    signature_header: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$")] = \
        "X-Troupe-Signature"

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value != "********" and len(value) < 16:
            raise ValueError("the signing secret needs at least 16 characters")
        return value


class DatabaseSettings(StrictInput):
    """``database`` tools (PostgreSQL only; troupe.engine.tools.database)."""

    # postgresql://user:password@host:5432/db; stored sealed, answered "********".
    # The pattern says in the document what _postgres_only checks (stored sealed, answered "********").
    connection_string: Annotated[str, Field(min_length=1, max_length=4096, json_schema_extra={
        "pattern": f"^{WHITESPACE}*(\\*{{8}}|[Pp][Oo][Ss][Tt][Gg][Rr][Ee][Ss]([Qq][Ll])?://{NOT_NUL}*)$"})]
    query: Annotated[str, Field(min_length=1, max_length=20_000)] | None = None
    read_only: bool = True
    statement_timeout_ms: int = Field(5000, ge=1, le=300_000)
    max_rows: int = Field(1000, ge=1, le=100_000)

    @field_validator("connection_string")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if value != "********" and not value.lower().startswith(("postgresql://", "postgres://")):
            raise ValueError("only PostgreSQL is supported: use a postgresql:// URL")
        return value


class FileSettings(StrictInput):
    """``file`` tools: the company's storage area (troupe.engine.tools.files)."""

    root: Annotated[str, Field(max_length=500, pattern=r"^[A-Za-z0-9_./-]*$")] = ""
    read_only: bool = False
    max_bytes: int = Field(1024 * 1024, ge=1, le=50 * 1024 * 1024)

    @field_validator("root")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("root must be a relative folder without '..'")
        return value


class SandboxLimits(StrictInput):
    """``code`` tools' process limits; the wall-clock limit is ``configuration.timeout``."""

    cpu_seconds: int = Field(5, ge=1, le=60)
    memory_mb: int = Field(256, ge=64, le=4096)
    max_output_bytes: int = Field(1024 * 1024, ge=1024, le=16 * 1024 * 1024)


class ScraperSettings(StrictInput):
    selector: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    max_links: int = Field(100, ge=0, le=10_000)
    max_text_chars: int = Field(100_000, ge=100, le=5_000_000)


class TranslatorSettings(StrictInput):
    provider: Literal["openai", "anthropic", "google", "local", "simulated"] = "simulated"
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    target_language: Annotated[str, Field(min_length=2, max_length=50)] | None = None
    source_language: Annotated[str, Field(min_length=2, max_length=50)] | None = None
    # Stored sealed, answered "********".
    api_key: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    base_url: Annotated[str, Field(max_length=2048)] | None = None

    @field_validator("base_url")
    @classmethod
    def _base_url_is_url(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_url(value):
            raise ValueError("baseUrl must be an http(s) URL")
        return value


class PluginSettings(StrictInput):
    """``custom`` tools: an installed plugin of the ``troupe.tools`` entry point group."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    # Passed to the plugin; values under secret-looking names are stored sealed.
    settings: Annotated[dict[HeaderName, Any], Field(max_length=100)] = Field(default_factory=dict)


# Which type-specific section each tool type accepts (and which it needs).
TYPE_SECTIONS: dict[str, tuple[str, ...]] = {
    "api": (), "webhook": ("webhook",), "database": ("database",), "file": ("file",),
    "code": ("code", "sandbox"), "scraper": ("scraper",), "calculator": (), "translator": ("translator",),
    "custom": ("plugin",),
}
REQUIRED_SECTIONS: dict[str, tuple[str, ...]] = {
    "webhook": ("webhook",), "database": ("database",), "code": ("code",),
    "custom": ("plugin",),
}
ALL_SECTIONS = ("webhook", "database", "file", "code", "sandbox", "scraper", "translator", "plugin")


class ToolConfiguration(StrictInput):
    # The pattern says in the document what _endpoint_is_url checks (an http(s) URL with a host).
    endpoint: Annotated[str, Field(max_length=2048, json_schema_extra={
        "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,4})?([/?#][^\s]*)?$"})] \
        | None = None
    method: HttpMethod | None = None
    # Headers whose name looks secret (Authorization, X-Api-Key, *token*, *secret*, *key*, Cookie)
    # are stored sealed and answered masked.
    headers: Annotated[dict[HeaderName, HeaderValue], Field(max_length=50)] | None = None
    authentication: ToolAuthentication = Field(default_factory=ToolAuthentication)
    timeout: int = Field(30, ge=1, le=300, description="seconds")
    retries: int = Field(0, ge=0, le=10)
    rate_limit: ToolRateLimit = Field(default_factory=ToolRateLimit)
    validation: ToolValidation = Field(default_factory=ToolValidation)
    caching: ToolCaching = Field(default_factory=ToolCaching)
    monitoring: ToolMonitoring = Field(default_factory=ToolMonitoring)
    # Type-specific settings (troupe.engine.tools); a section of another type is refused.
    webhook: WebhookSettings | None = None
    database: DatabaseSettings | None = None
    file: FileSettings | None = None
    code: Annotated[str, Field(min_length=1, max_length=100_000)] | None = None
    sandbox: SandboxLimits | None = None
    scraper: ScraperSettings | None = None
    translator: TranslatorSettings | None = None
    plugin: PluginSettings | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_url(value):
            raise ValueError("endpoint must be an http(s) URL")
        return value


def check_type_configuration(type_: str, configuration: ToolConfiguration) -> list[tuple[str, str]]:
    """(field, problem) for every type-specific section that ``type_`` does not accept or needs."""
    problems: list[tuple[str, str]] = []
    allowed = TYPE_SECTIONS.get(type_, ())
    for name in ALL_SECTIONS:
        if getattr(configuration, name) is not None and name not in allowed:
            problems.append((f"configuration.{name}", f"a {type_} tool does not use configuration.{name}"))
    for name in REQUIRED_SECTIONS.get(type_, ()):
        if getattr(configuration, name) is None:
            problems.append((f"configuration.{name}", f"a {type_} tool needs configuration.{name}"))
    return problems


class ToolExample(StrictInput):
    title: ShortText
    description: LongText = ""
    input: Any = None
    output: Any = None
    code: LongText | None = None


class ChangelogEntry(StrictInput):
    version: Annotated[str, Field(max_length=20)]
    date: Annotated[str, Field(max_length=40)]
    changes: Annotated[list[Annotated[str, Field(max_length=1000)]], Field(max_length=100)] = Field(
        default_factory=list)
    breaking: bool = False


class FaqEntry(StrictInput):
    question: Annotated[str, Field(max_length=1000)]
    answer: LongText
    category: Annotated[str, Field(max_length=50)] = "general"


class ToolDocumentation(StrictInput):
    readme: Annotated[str, Field(max_length=100_000)] = ""
    examples: Annotated[list[ToolExample], Field(max_length=50)] = Field(default_factory=list)
    changelog: Annotated[list[ChangelogEntry], Field(max_length=200)] = Field(default_factory=list)
    faq: Annotated[list[FaqEntry], Field(max_length=100)] = Field(default_factory=list)


class PricingLimits(StrictInput):
    free: int = Field(0, ge=0, le=1_000_000_000)
    paid: int = Field(0, ge=0, le=1_000_000_000)


class ToolPricing(StrictInput):
    model: PricingModel = "free"
    price: float = Field(0, ge=0, le=1_000_000)
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    unit: Annotated[str, Field(max_length=50)] | None = None
    limits: PricingLimits = Field(default_factory=PricingLimits)


def type_configuration_schema() -> dict[str, Any]:
    """``check_type_configuration`` as JSON Schema: per ``type``, the sections it needs
    (present, not null) and the sections it does not use (absent or null)."""
    rules = []
    for type_ in TYPE_SECTIONS:
        sections: dict[str, Any] = {name: {"type": "null"} for name in ALL_SECTIONS
                                    if name not in TYPE_SECTIONS[type_]}
        needed = REQUIRED_SECTIONS.get(type_, ())
        sections.update({name: {"not": {"type": "null"}} for name in needed})
        then: dict[str, Any] = {"properties": sections}
        if needed:
            then["required"] = list(needed)
        rules.append({"if": {"properties": {"type": {"const": type_}}, "required": ["type"]},
                      "then": {"properties": {"configuration": then}}})
    return {"allOf": rules}


class ToolCreate(StrictInput):
    """``configuration``'s type-specific sections follow ``type`` (the schema's ``allOf``)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        handler.resolve_ref_schema(schema).update(type_configuration_schema())
        return schema

    name: Name
    description: Annotated[str, Field(min_length=1, max_length=5000)]
    type: ToolType
    category: ToolCategory
    configuration: ToolConfiguration
    schema_: ToolSchema = Field(alias="schema")
    documentation: ToolDocumentation | None = None
    pricing: ToolPricing | None = None
    tags: Tags = Field(default_factory=list)
    is_public: bool = False


class ToolUpdate(RoundTripInput):
    """Partial: fields left out keep their value. ``configuration``/``schema``
    replace the stored objects whole (secrets sent as "********" are kept). The
    whole GET answer may be sent back: its server-owned fields are ignored."""

    read_models = ("ToolOut",)

    name: Name = omittable()
    description: Annotated[str, Field(min_length=1, max_length=5000)] = omittable()
    type: ToolType = omittable()
    category: ToolCategory = omittable()
    status: ToolStatus = omittable()
    configuration: ToolConfiguration | None = None
    schema_: ToolSchema | None = Field(None, alias="schema")
    documentation: ToolDocumentation | None = None
    pricing: ToolPricing | None = None
    tags: Tags = omittable()
    is_public: bool = omittable()


class ToolTrends(CamelModel):
    daily: list[int] = Field(description="calls per day, last 7 days, oldest first")
    weekly: list[int] = Field(description="calls per week, last 4 weeks, oldest first")
    monthly: list[int] = Field(description="calls per month, last 12 months, oldest first")


class ToolUsage(CamelModel):
    total_calls: int = 0
    successful_calls: int = 0
    failed_calls: int = 0
    average_response_time: float = Field(0, description="milliseconds")
    last_used_at: datetime | None = None
    error_rate: float = 0
    popular_agents: list[str] = Field(default_factory=list)
    trends: ToolTrends = Field(default_factory=lambda: ToolTrends(daily=[], weekly=[], monthly=[]))


class ToolOut(CamelModel):
    id: uuid.UUID
    name: str
    description: str | None
    type: str
    category: str
    version: str
    status: str
    configuration: ToolConfiguration
    schema_: ToolSchema = Field(alias="schema")
    usage: ToolUsage
    documentation: ToolDocumentation
    pricing: ToolPricing
    created_by: uuid.UUID | None
    tags: list[str]
    is_public: bool
    rating: float
    downloads: int
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None


class UsageBucket(CamelModel):
    start: datetime
    total_calls: int
    successful_calls: int
    failed_calls: int


class UsageGroup(CamelModel):
    key: str | None = Field(description="agent, company or user id; null for calls without one")
    total_calls: int
    successful_calls: int
    failed_calls: int
    error_rate: float
    average_response_time: float


class ToolUsageReport(ToolUsage):
    tool_id: uuid.UUID
    period: Literal["hour", "day", "week", "month"]
    group_by: Literal["agent", "company", "user"] | None = None
    since: datetime
    series: list[UsageBucket] = Field(description="one bucket per period unit over the window")
    groups: list[UsageGroup] = Field(default_factory=list)
    scope: Literal["all", "yours"] = Field(
        description="'all' for the creator and admins; otherwise only calls in your companies or by you")


class InstallRequest(StrictInput):
    company_id: uuid.UUID
    # Per-company settings for the tool; values under secret-looking names are sealed.
    configuration: Annotated[dict[HeaderName, Any], Field(max_length=100)] | None = None


class UninstallRequest(StrictInput):
    company_id: uuid.UUID


class Installation(CamelModel):
    id: uuid.UUID
    company_id: uuid.UUID
    tool_id: uuid.UUID
    configuration: dict[str, Any]
    installed_by: uuid.UUID | None
    installed_at: datetime
    downloads: int


class Uninstalled(CamelModel):
    company_id: uuid.UUID
    tool_id: uuid.UUID
    uninstalled: bool = True


class ToolPage(PageParams):
    """List parameters; ``sort`` names one of ``service.SORTS`` (the document lists them)."""

    sort: Literal["name", "createdAt", "updatedAt", "rating", "downloads", "type", "category", "status",
                  "lastUsedAt"] | None = None


class MarketplacePage(PageParams):
    sort: Literal["rating", "downloads", "newest"] | None = None
