"""The Serve deployment that hosts the FastAPI app (HTTP and WebSocket)."""

from __future__ import annotations

import os

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from troupe.platform.app import create_app

# Serve's documented throughput mode: user code on the replica's own event loop
# (no thread hop per request or WebSocket frame), buffered access logs, gRPC
# between deployments. Our handlers never block the loop, which that mode needs.
# Read by every Serve process at import, so it must be in the environment before
# Ray starts them: `troupe run` and the test/bench stacks call this before
# ray.init; cluster.yaml exports it for `ray start`.
SERVE_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def apply_serve_env() -> None:
    for key, value in SERVE_ENV.items():
        os.environ.setdefault(key, value)


def build_asgi_app() -> FastAPI:
    """Evaluated on each replica at start-up (the app itself is not pickled)."""
    return create_app(behind_serve=True)


@serve.deployment(name="ApiIngress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000,
                  health_check_period_s=10)
@serve.ingress(build_asgi_app)
class ApiIngress:
    """Stateless: all shared state lives in Postgres, Redis and the actors."""


def build(env: dict[str, str], *, replicas: int = 1) -> Application:
    return ApiIngress.options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": env}},
    ).bind()
