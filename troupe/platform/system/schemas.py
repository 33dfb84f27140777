"""System settings sections (the spec's shape plus maintenance mode and rate limits)
and the backup/restore bodies. Every field here takes effect (see
``troupe.runtime_settings``); the spec's ``integrations`` section, MFA, IP
whitelist, password max age, notification templates and the sms/push/slack
switches are refused by name (``_refused``) because nothing in Troupe could
honour them.

Each section has a full model (defaults = a fresh install) and a partial model
for PUT, built from it with every field optional and unknown fields refused."""

from __future__ import annotations

import copy
import zoneinfo
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, EmailStr, Field, HttpUrl, create_model
from pydantic.json_schema import SkipJsonSchema

from troupe.platform.schemas import CamelModel, RoundTripInput, StrictInput, omittable


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def _known_timezone(value: str) -> str:
    if value not in _timezones():
        raise ValueError("unknown IANA time zone")
    return value


IanaTimezone = Annotated[str, AfterValidator(_known_timezone)]


class General(CamelModel):
    """Used in outgoing mail: sender name, footer, and the base of links (reset, verify, invitations);
    the administrator's address for service alerts; a new account's time zone and language."""

    site_name: str = Field("Troupe", min_length=1, max_length=100)
    site_url: HttpUrl | None = Field(None, description="Base of links in mail; default FRONTEND_URL")
    admin_email: EmailStr | None = Field(None, description="Mailed when health finds a service down; "
                                                           "default TROUPE_ADMIN_EMAIL")
    support_email: EmailStr | None = None
    timezone: IanaTimezone = Field("UTC", max_length=64,
                                   description="IANA time zone a new account's profile starts with",
                                   json_schema_extra={"enum": sorted(_timezones())})
    language: str = Field("en", min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$",
                          description="Language a new account's profile starts with")


class PasswordPolicy(CamelModel):
    min_length: int = Field(8, ge=8, le=128)
    require_uppercase: bool = True
    require_lowercase: bool = True
    require_numbers: bool = True
    require_symbols: bool = True


class Security(CamelModel):
    password_policy: PasswordPolicy = Field(default_factory=PasswordPolicy)
    session_timeout: int = Field(1440, ge=5, le=43200,
                                 description="Minutes; new access tokens live min(this, JWT_EXPIRES_IN)")
    max_login_attempts: int = Field(5, ge=1, le=100)
    lockout_duration: int = Field(15, ge=1, le=1440, description="Minutes")


class Notifications(CamelModel):
    """System-wide channel switches; a user's own preferences apply within them."""

    email_enabled: bool = True
    webhook_enabled: bool = True


class Limits(CamelModel):
    max_users_per_company: int = Field(50, ge=1, le=100_000)
    max_agents_per_company: int = Field(100, ge=1, le=100_000)
    max_tools_per_company: int = Field(100, ge=1, le=100_000)
    max_concurrent_tasks: int = Field(10, ge=1, le=10_000)
    max_file_size: int = Field(50 * 1024 * 1024, ge=1024, le=10 * 1024**3, description="Bytes")
    max_storage_per_user: int = Field(1024**3, ge=0, le=10 * 1024**4, description="Bytes; 0 = unlimited")


class Features(CamelModel):
    marketplace_enabled: bool = True
    collaboration_enabled: bool = True
    analytics_enabled: bool = True
    audit_log_enabled: bool = True


class Maintenance(CamelModel):
    enabled: bool = False
    message: str = Field("", max_length=500)


class RateLimits(CamelModel):
    window_ms: int = Field(900_000, ge=1000, le=86_400_000)
    max_requests: int = Field(10_000, ge=1, le=10_000_000)


class SystemSettings(CamelModel):
    general: General = Field(default_factory=General)
    security: Security = Field(default_factory=Security)
    notifications: Notifications = Field(default_factory=Notifications)
    limits: Limits = Field(default_factory=Limits)
    features: Features = Field(default_factory=Features)
    maintenance: Maintenance = Field(default_factory=Maintenance)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    updated_at: datetime | None = None


def _partial(model: type[CamelModel], name: str, **overrides: Any) -> type[StrictInput]:
    fields: dict[str, Any] = {}
    # `field` (not `name`): the loop must not shadow the model's name given to create_model.
    for field, info in model.model_fields.items():
        # Keep the field's type, constraints (ranges, patterns) and camelCase alias, but make it
        # optional: left out keeps the stored value; null only where the full model takes null.
        optional = copy.copy(info)
        optional.default, optional.default_factory = None, None
        if optional.json_schema_extra is None:
            optional.json_schema_extra = omittable().json_schema_extra
        fields[field] = (info.annotation, optional)
    fields.update(overrides)
    return create_model(name, __base__=StrictInput, **fields)


def _refused(reason: str) -> tuple[Any, Any]:
    """A field of the spec's settings that Troupe cannot honour (a stored switch that does
    nothing would mislead): not in the OpenAPI, and refused naming the field and the reason."""
    def refuse(_: Any) -> Any:
        raise ValueError(f"not supported: {reason}")
    return SkipJsonSchema[Annotated[Any, AfterValidator(refuse)]], Field(None, exclude=True)


PasswordPolicyUpdate = _partial(PasswordPolicy, "PasswordPolicyUpdate", max_age=_refused(
    "passwords do not expire in Troupe (sessionTimeout bounds sessions; reset-password replaces a password)"))
GeneralUpdate = _partial(General, "GeneralUpdate")
SecurityUpdate = _partial(
    Security, "SecurityUpdate", password_policy=(PasswordPolicyUpdate, omittable()),
    mfa_required=_refused("Troupe has no multi-factor authentication"),
    ip_whitelist=_refused("restrict client addresses at your reverse proxy or load balancer"))
NotificationsUpdate = _partial(
    Notifications, "NotificationsUpdate",
    sms_enabled=_refused("Troupe sends no SMS"), push_enabled=_refused("Troupe sends no push notifications"),
    slack_enabled=_refused("Troupe has no Slack integration"),
    templates=_refused("mail texts are built in; there are no editable notification templates"))
LimitsUpdate = _partial(Limits, "LimitsUpdate")
FeaturesUpdate = _partial(Features, "FeaturesUpdate")
MaintenanceUpdate = _partial(Maintenance, "MaintenanceUpdate")
RateLimitsUpdate = _partial(RateLimits, "RateLimitsUpdate")


_NoIntegrations, _ = _refused("model providers take their keys from the environment or the agent's own apiKey; "
                              "Troupe has no AWS or Stripe integration")


class SettingsUpdate(RoundTripInput):
    """Sections left out keep their values; the whole GET answer may be sent back
    (``updatedAt`` is ignored)."""

    read_models = ("SystemSettings",)

    general: GeneralUpdate = omittable()  # type: ignore[valid-type]
    security: SecurityUpdate = omittable()  # type: ignore[valid-type]
    notifications: NotificationsUpdate = omittable()  # type: ignore[valid-type]
    limits: LimitsUpdate = omittable()  # type: ignore[valid-type]
    features: FeaturesUpdate = omittable()  # type: ignore[valid-type]
    maintenance: MaintenanceUpdate = omittable()  # type: ignore[valid-type]
    rate_limits: RateLimitsUpdate = omittable()  # type: ignore[valid-type]
    integrations: _NoIntegrations = Field(None, exclude=True)  # type: ignore[valid-type]


class BackupCreate(StrictInput):
    include_data: bool = Field(True, description="Must be true: a backup is the database's data")
    include_files: bool = Field(False, description="Uploaded files are not part of backups (must be false)")
    compression: bool = True
    encryption: bool = Field(False, description="AES-256-GCM with the server's secrets key")


class BackupOut(CamelModel):
    id: str
    size: int
    created_at: datetime
    compression: bool
    encryption: bool
    created_by: str | None = None
    schema_heads: list[str]
    tables: int


class RestoreRequest(StrictInput):
    backup_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")
    restore_data: bool = True
    restore_files: bool = Field(False, description="Uploaded files are not part of backups (must be false)")


class RestoreResult(CamelModel):
    backup_id: str
    restored_at: datetime
    tables: int
