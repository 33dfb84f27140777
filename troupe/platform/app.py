"""The FastAPI application: middleware, error handlers and every domain router."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from troupe import __version__
from troupe.config import get_settings
from troupe.infra.metrics import HttpMetricsMiddleware
from troupe.platform import handlers, openapi
from troupe.platform.deps import no_nul_characters, single_valued_query
from troupe.platform.maintenance import MaintenanceMiddleware
from troupe.platform.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from troupe.platform.ratelimit import ApiRateLimitMiddleware
from troupe.timeutil import log_handler

log = logging.getLogger("troupe")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    from troupe.db.session import dispose_engine
    from troupe.infra.redis import close_redis

    for hook in app.state.startup_hooks:
        await hook()
    try:
        yield
    finally:
        for hook in reversed(app.state.shutdown_hooks):
            await hook()
        await close_redis()
        await dispose_engine()


def create_app(*, behind_serve: bool = False) -> FastAPI:
    settings = get_settings()
    # Our own handler when nothing configured logging yet (under Serve, Ray's handlers stay).
    logging.basicConfig(level=settings.log_level.upper(), handlers=[log_handler()])
    app = FastAPI(
        title="Troupe API",
        version=__version__,
        description="Run companies of AI agents. Every response uses the envelope "
                    "`{success, data, error, pagination, meta}`.",
        lifespan=lifespan,
        dependencies=[Depends(single_valued_query), Depends(no_nul_characters)],
    )
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    handlers.install(app)
    # Added before CORS so that CORS (outer) also decorates a 429.
    app.add_middleware(ApiRateLimitMiddleware)  # limits from the system settings (runtime_settings)
    app.add_middleware(MaintenanceMiddleware)

    origins = [o.strip() for o in settings.cors_origin.split(",") if o.strip()]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        # Tokens travel in the Authorization header, never in cookies, so CSRF
        # cannot ride on ambient credentials; credentials stay off for "*".
        allow_credentials="*" not in origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-Share-Password", "Range"],
        expose_headers=["X-Request-ID", "Retry-After"],
    )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes,
                       exempt_prefixes=("/api/files/upload",))
    if settings.metrics_enabled:
        app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestContextMiddleware, security_headers=settings.helmet_enabled,
                       echo_request_id=not behind_serve)

    _include_routers(app)
    openapi.install(app)  # error statuses declared with the envelope's model
    return app


# Each domain package under troupe/platform/ exposes `router` in its router.py.
DOMAINS: list[str] = [
    "health",
    "system",
    "logs",
    "metrics",
    "dashboard",
    "companies",
    "agents",
    "auth",
    "users",
    "realtime",
    "notifications",
    "tools",
    "workflows",
    "tasks",
    "execution",
    "files",
]


def _include_routers(app: FastAPI) -> None:
    for name in DOMAINS:
        module = importlib.import_module(f"troupe.platform.{name}.router")
        app.include_router(module.router)
        if hasattr(module, "startup_hook"):
            app.state.startup_hooks.append(module.startup_hook)
