"""Bring the backends up before Serve starts: embedded servers when no URL is
set, secrets resolved once, migrations applied. Returns the environment every
Ray process (replicas, actors, node tasks) must share."""

from __future__ import annotations

import asyncio
import logging
import os

from troupe.config import Settings, get_settings
from troupe.infra import embedded

log = logging.getLogger(__name__)

# Variables forwarded to every Ray worker so that all processes agree.
FORWARDED_PREFIXES = ("TROUPE_", "JWT_", "SMTP_", "EMAIL_", "RATE_LIMIT_", "WS_", "OPENAI_", "ANTHROPIC_",
                      "GOOGLE_AI_", "LOCAL_LLM_", "STORAGE_", "AWS_", "CORS_", "CSRF_", "HELMET_",
                      "MARKETPLACE_", "COLLABORATION_", "ANALYTICS_", "AUDIT_LOG_", "LOG_LEVEL",
                      "METRICS_ENABLED", "DATABASE_URL", "NODE_ENV", "API_BASE_URL",
                      "FRONTEND_URL", "CACHE_", "REFRESH_TOKEN_", "LOGIN_", "BCRYPT_", "RESET_TOKEN_",
                      "VERIFY_TOKEN_", "INVITATION_", "DB_", "REDIS_", "TRUSTED_PROXIES")


def prepare(*, migrate: bool = True) -> dict[str, str]:
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TROUPE_DATA_DIR"] = str(data_dir)
    if not settings.database_url:
        os.environ["DATABASE_URL"] = embedded.start_postgres(data_dir)
        log.info("embedded PostgreSQL under %s", data_dir / "pgdata")
    if not settings.redis_url:
        os.environ["REDIS_URL"] = embedded.start_redis(data_dir)
        log.info("embedded Redis under %s", data_dir / "redis")
    get_settings.cache_clear()
    settings = get_settings()
    # Resolve development secrets once here so every process uses the same ones.
    os.environ.setdefault("JWT_SECRET", settings.resolved_jwt_secret())
    if not settings.secrets_key:
        os.environ["TROUPE_SECRETS_KEY"] = _b64(settings.resolved_secrets_key())
    get_settings.cache_clear()
    settings = get_settings()
    if migrate:
        from troupe.db.migrate import upgrade

        upgrade(settings.database_url or "")
        if settings.admin_email and settings.admin_password:
            log.warning(asyncio.run(_ensure_admin(settings.admin_email, settings.admin_password)))
    return runtime_env_vars()


async def _ensure_admin(email: str, password: str) -> str:
    """TROUPE_ADMIN_EMAIL / TROUPE_ADMIN_PASSWORD: create or promote the super admin."""
    from troupe.db.session import dispose_engine
    from troupe.platform.users.service import ensure_admin

    try:
        return await ensure_admin(email=email, password=password)
    finally:
        await dispose_engine()


def runtime_env_vars() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}


def _b64(key: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def describe(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return f"database={settings.database_url!r} redis={settings.redis_url!r}"
