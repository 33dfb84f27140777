"""The spec's health report (``GET /api/settings/health``): ``ServiceStatus`` per
service and the ``HealthCheck[]`` list, with Troupe's ``down`` and ``details``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from troupe.platform.schemas import CamelModel

ServiceName = Literal["database", "redis", "queue", "storage", "ai", "email"]


class ServiceStatus(CamelModel):
    status: Literal["up", "down", "degraded"]
    response_time: float | None = Field(None, description="Milliseconds the probe took (system:read only)")
    last_check: datetime = Field(description="When the service was last probed")
    error: str | None = Field(None, description="Why the probe failed (system:read only)")
    details: dict | None = Field(None, description="What the probe found (system:read only)")


class HealthServices(CamelModel):
    database: ServiceStatus = Field(description="PostgreSQL (critical)")
    redis: ServiceStatus = Field(description="Redis (critical)")
    queue: ServiceStatus = Field(description="The Ray cluster that runs tasks (critical)")
    storage: ServiceStatus = Field(description="The fsspec file storage backend")
    ai: ServiceStatus = Field(description="Model providers configured for the deployment (not called)")
    email: ServiceStatus = Field(description="The SMTP server, or the development outbox")


class HealthCheck(CamelModel):
    name: ServiceName
    status: Literal["pass", "fail", "warn"]
    message: str | None = None
    duration: float = Field(description="Milliseconds")
    timestamp: datetime


class HealthReport(CamelModel):
    status: Literal["healthy", "degraded", "unhealthy"] = Field(
        description="unhealthy: a critical service (database, redis, queue) is down (HTTP 503); "
                    "degraded: another service is down or degraded")
    version: str
    uptime: float = Field(description="Seconds since this API replica started")
    timestamp: datetime
    services: HealthServices
    # One entry per probe, with its duration and findings: only for system:read.
    checks: list[HealthCheck]
    # The services found down (empty when all are up): what an operator reads first.
    down: list[ServiceName] = []
