"""Troupe's own Prometheus metrics.

They are Ray metrics (``ray.util.metrics``): every process (ingress replicas,
actors, node tasks) records into them and each node's Ray metrics agent serves
the cluster's series on its Prometheus export port, next to Ray's and Serve's
own metrics. One scrape config covers the whole cluster, however many replicas
there are (see README, "Monitoring").
"""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_LATENCY_BOUNDARIES_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]


@cache
def _metric(kind: str, name: str, description: str, tag_keys: tuple[str, ...]) -> Any:
    from ray.util import metrics

    if kind == "counter":
        return metrics.Counter(name, description, tag_keys=tag_keys)
    if kind == "gauge":
        return metrics.Gauge(name, description, tag_keys=tag_keys)
    return metrics.Histogram(name, description, boundaries=_LATENCY_BOUNDARIES_MS, tag_keys=tag_keys)


def _ray_ready() -> bool:
    import ray

    return ray.is_initialized()


def inc(name: str, description: str, tags: dict[str, str], value: float = 1.0) -> None:
    if _ray_ready():
        _metric("counter", name, description, tuple(sorted(tags))).inc(value, tags=tags)


def observe_ms(name: str, description: str, tags: dict[str, str], value_ms: float) -> None:
    if _ray_ready():
        _metric("histogram", name, description, tuple(sorted(tags))).observe(value_ms, tags=tags)


def set_gauge(name: str, description: str, tags: dict[str, str], value: float) -> None:
    if _ray_ready():
        _metric("gauge", name, description, tuple(sorted(tags))).set(value, tags=tags)


class HttpMetricsMiddleware:
    """Requests and latency per route template (not per raw path, to bound cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            tags = {"method": scope.get("method", ""), "route": getattr(route, "path", "unmatched"),
                    "status": str(status["code"])}
            try:
                inc("troupe_http_requests_total", "HTTP requests served by the API", tags)
                observe_ms("troupe_http_request_duration_ms", "HTTP request latency (ms)",
                           {"method": tags["method"], "route": tags["route"]},
                           (time.perf_counter() - started) * 1000)
            except Exception:  # metrics must never break a request
                log.debug("metrics recording failed", exc_info=True)
