"""Settings from the environment (the spec's variables plus Troupe's own).

Durations accept plain seconds or a suffix: ``500ms``, ``30s``, ``15m``, ``24h``, ``7d``.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import secrets
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object) -> timedelta:
    """``24h`` -> 1 day; a bare number is seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 24h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_millis(value: object) -> timedelta:
    """The spec gives WS_* and RATE_LIMIT_WINDOW_MS as bare milliseconds."""
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
        return timedelta(milliseconds=float(value))
    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Millis = Annotated[timedelta, BeforeValidator(parse_millis)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    env: Literal["development", "production", "test"] = Field(
        "development", validation_alias=AliasChoices("TROUPE_ENV", "NODE_ENV"))
    data_dir: Path = Field(Path(".troupe"), validation_alias="TROUPE_DATA_DIR")

    # Storage backends: unset means the embedded servers under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    # Per process; callers beyond it wait (up to redis_pool_timeout) for a free
    # connection instead of failing, so a burst of sockets cannot exhaust Redis.
    redis_max_connections: int = 200
    # Outages must fail fast (issue 9 part 5): an API request answers 503 within 2 s,
    # so no single Redis or Postgres wait may take longer than about a second.
    # Redis is in-memory and answers in well under a millisecond: 1 s without a
    # reply means it is down or hung (a paused server still accepts TCP connections).
    redis_connect_timeout: Duration = timedelta(seconds=1)
    redis_socket_timeout: Duration = timedelta(seconds=1)
    redis_pool_timeout: Duration = timedelta(seconds=1)
    # Budget of the Redis calls every request makes before its route (the rate
    # limiter, the settings-version check): each has a safe answer without Redis,
    # so they must not spend the request's 2 s on a hung server.
    redis_fast_timeout: Duration = timedelta(milliseconds=300)
    # Prefix of every Redis key and channel, so deployments (and test runs) can share a server.
    redis_prefix: str = Field("troupe", validation_alias="TROUPE_REDIS_PREFIX")
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # Per company actor: its concurrent runs share these connections (2 + 4 cut a
    # 50-run company's throughput by a third). Size with max_connections in mind:
    # busy companies x (pool + overflow) on top of the API replicas' pools.
    db_company_pool_size: int = 8
    db_company_max_overflow: int = 4
    # A refused or unreachable server is an answer within this (libpq connect_timeout, whole seconds).
    db_connect_timeout: Duration = timedelta(seconds=2)
    # An API request waits at most this long for a pooled connection, then answers 503.
    db_pool_timeout: Duration = timedelta(seconds=2)
    # Company actors' runs queue for connections by design (backpressure), so they wait longer.
    db_company_pool_timeout: Duration = timedelta(seconds=10)
    # The API's longest wait for Postgres on an open connection (a server that hangs with the
    # connection open sends no RST, so nothing else ends the wait). Far above any statement
    # of a request, so only a hang reaches it; 0 turns it off.
    db_read_timeout: Duration = timedelta(seconds=5)
    # TCP keepalives and tcp_user_timeout: a connection to a host that vanished from the
    # network (no RST) is declared dead in about this long instead of the kernel's ~2 h.
    db_tcp_timeout: Duration = timedelta(seconds=10)
    # Health probes (Postgres, Redis, Ray) run concurrently, each bounded by this.
    health_probe_timeout: Duration = Field(timedelta(milliseconds=1500),
                                           validation_alias="TROUPE_HEALTH_PROBE_TIMEOUT")
    # Retry-After (seconds) on a 503 answered because Postgres or Redis is down.
    outage_retry_after: int = Field(5, validation_alias="TROUPE_OUTAGE_RETRY_AFTER")

    # Auth
    jwt_secret: str | None = None
    jwt_expires_in: Duration = timedelta(hours=24)
    refresh_token_expires_in: Duration = timedelta(days=7)
    bcrypt_rounds: int = Field(12, ge=12, le=16)
    login_max_attempts: int = 5
    login_lockout: Duration = timedelta(minutes=15)
    reset_token_expires_in: Duration = timedelta(hours=1)
    verify_token_expires_in: Duration = timedelta(days=2)
    invitation_expires_in: Duration = timedelta(days=7)
    admin_email: str | None = Field(None, validation_alias="TROUPE_ADMIN_EMAIL")
    admin_password: str | None = Field(None, validation_alias="TROUPE_ADMIN_PASSWORD")
    # AES-256-GCM key for secrets in configurations (base64 of 32 bytes).
    secrets_key: str | None = Field(None, validation_alias="TROUPE_SECRETS_KEY")

    # Service
    port: int = 8000
    host: str = "127.0.0.1"
    api_base_url: str | None = None
    frontend_url: str | None = None
    log_level: str = "info"
    metrics_enabled: bool = True
    # Prometheus export port of the Ray metrics agent started by `python -m troupe run`.
    metrics_port: int = Field(8080, validation_alias="TROUPE_METRICS_PORT")
    serve_replicas: int = Field(1, validation_alias="TROUPE_SERVE_REPLICAS")
    max_body_bytes: int = Field(1_048_576, validation_alias="TROUPE_MAX_BODY_BYTES")

    # Rate limits (general API, plus the tighter auth limits)
    rate_limit_window_ms: Millis = timedelta(minutes=15)
    rate_limit_max_requests: int = 10000  # per client IP per window; high enough for one-IP test runs
    rate_limit_skip_successful_requests: bool = False
    auth_rate_limit_window: Duration = Field(timedelta(minutes=1), validation_alias="TROUPE_AUTH_RATE_WINDOW")
    auth_rate_limit_per_ip: int = Field(30, validation_alias="TROUPE_AUTH_RATE_PER_IP")
    auth_rate_limit_per_account: int = Field(10, validation_alias="TROUPE_AUTH_RATE_PER_ACCOUNT")

    # Security
    cors_origin: str = "*"
    helmet_enabled: bool = True
    # Reverse proxies (CIDRs) whose X-Forwarded-For is believed; the client IP is then the
    # right-most hop that is not one of them. Empty: the header is ignored (socket peer only).
    trusted_proxies: list[str] = Field(default_factory=list,
                                       validation_alias=AliasChoices("TRUSTED_PROXIES", "TROUPE_TRUSTED_PROXIES"))
    # Outbound guard: hosts/CIDRs that tools and webhooks may reach despite being private.
    outbound_allowlist: list[str] = Field(default_factory=list, validation_alias="TROUPE_OUTBOUND_ALLOWLIST")
    outbound_timeout: Duration = timedelta(seconds=15)
    outbound_max_bytes: int = 5_000_000

    # WebSocket
    ws_heartbeat_interval: Millis = timedelta(seconds=30)
    ws_connection_timeout: Millis = timedelta(seconds=60)
    ws_max_message_bytes: int = 65_536
    ws_max_connections_per_user: int = 20
    ws_messages_per_second: int = 20
    ws_send_queue_size: int = 1000
    ws_replay_retention: Duration = timedelta(hours=1)

    # Providers
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    google_ai_api_key: str | None = None
    google_ai_base_url: str | None = None
    local_llm_base_url: str | None = None
    # Extra base URLs (per provider) that may receive the deployment's key when an agent's
    # configuration names them as baseUrl, e.g. {"openai": ["https://llm-proxy.corp/v1"]}.
    # Any other per-agent baseUrl needs the agent's own apiKey (troupe.providers.registry).
    provider_base_urls: dict[str, list[str]] = Field(default_factory=dict,
                                                     validation_alias="TROUPE_PROVIDER_BASE_URLS")

    # Files
    storage_type: Literal["local", "s3"] = "local"
    storage_root: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_s3_bucket: str | None = None
    aws_s3_region: str | None = None
    max_upload_bytes: int = 50 * 1024 * 1024
    storage_quota_bytes: int = 10 * 1024**3  # per user; 0 = unlimited

    # Mail: without SMTP_HOST, mail goes to the development outbox under data_dir.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_secure: bool = False
    smtp_user: str | None = None
    smtp_pass: str | None = None
    email_from: str = "noreply@troupe.local"

    # Feature switches
    marketplace_enabled: bool = True
    collaboration_enabled: bool = True
    analytics_enabled: bool = True
    audit_log_enabled: bool = True

    # Runtime
    actor_idle_timeout: Duration = Field(timedelta(minutes=5), validation_alias="TROUPE_ACTOR_IDLE_TIMEOUT")
    max_resident_agents: int = Field(200, validation_alias="TROUPE_MAX_RESIDENT_AGENTS")
    # Blank agent actors kept started, so activating an agent does not wait for a new process.
    agent_pool_size: int = Field(8, ge=0, validation_alias="TROUPE_AGENT_POOL_SIZE")
    node_task_resources: dict[str, float] = Field(default_factory=dict, validation_alias="TROUPE_NODE_TASK_RESOURCES")
    # Ray's default keeps a task on the submitting node while that node has room; SPREAD deals node
    # tasks out over every node (many small nodes, or a cluster whose every node should take work).
    node_task_spread: bool = Field(False, validation_alias="TROUPE_NODE_TASK_SPREAD")

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR") from exc
        return [entry.strip() for entry in value]

    @field_validator("provider_base_urls")
    @classmethod
    def _provider_base_urls(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # Only providers that have a deployment key: an entry for any other would do nothing.
        keyed = ("openai", "anthropic", "google")
        out: dict[str, list[str]] = {}
        for name, urls in value.items():
            if name.strip().lower() not in keyed:
                raise ValueError(f"TROUPE_PROVIDER_BASE_URLS: {name!r} is not one of {', '.join(keyed)}")
            for url in urls:
                if not re.match(r"^https?://[^/\s]+", url):
                    raise ValueError(f"TROUPE_PROVIDER_BASE_URLS: {url!r} is not an http(s) URL")
            out[name.strip().lower()] = list(urls)
        return out

    @model_validator(mode="after")
    def _secrets(self) -> Settings:
        if self.env == "production":
            if not self.jwt_secret or len(self.jwt_secret) < 32:
                raise ValueError("JWT_SECRET of at least 32 characters is required in production")
            if not self.secrets_key:
                raise ValueError("TROUPE_SECRETS_KEY (base64 of 32 bytes) is required in production")
        return self

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    def resolved_jwt_secret(self) -> str:
        return self.jwt_secret or _persistent_secret(self.data_dir / "jwt_secret", 48)

    def resolved_secrets_key(self) -> bytes:
        raw = self.secrets_key or _persistent_secret(self.data_dir / "secrets_key", 32)
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        if len(key) != 32:
            raise ValueError("TROUPE_SECRETS_KEY must be base64 of exactly 32 bytes")
        return key


def _persistent_secret(path: Path, nbytes: int) -> str:
    """Development secrets are generated once and kept in the data directory, so
    tokens and encrypted values survive restarts."""
    path = path.resolve()
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = base64.urlsafe_b64encode(secrets.token_bytes(nbytes)).decode().rstrip("=")
    # O_EXCL: when two processes race, one wins and both read its value.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
