from __future__ import annotations

from typing import Literal

from troupe.platform.schemas import CamelModel


class DependencyHealth(CamelModel):
    status: Literal["up", "down"]
    latency_ms: float | None = None
    error: str | None = None
    details: dict | None = None


class HealthReport(CamelModel):
    status: Literal["healthy", "unhealthy"]
    version: str
    uptime_seconds: float
    # Status and latency for everyone; details and errors only with system:read.
    checks: dict[str, DependencyHealth]
    # The dependencies found down (empty when healthy): what an operator reads first.
    down: list[str] = []
