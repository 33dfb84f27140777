"""A throwaway Troupe deployment on a database of its own: used by the test
suite, the benchmarks and the multi-node scenario, so that each run starts Ray
and Serve the same way and never collides with another run.

The Postgres server is ``DATABASE_URL`` when set (a database is created on it
and dropped afterwards), otherwise the embedded one under ``data_root``; Redis
is ``REDIS_URL`` or the embedded one, with a per-run key prefix.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def admin_exec(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def configure(*, kind: str, data_root: Path, run_id: str | None = None) -> str:
    """Per-run settings; call before anything reads ``troupe.config``. Returns the run id."""
    run_id = run_id or uuid.uuid4().hex[:10]
    os.environ.setdefault("TROUPE_ENV", "test")
    os.environ["TROUPE_DATA_DIR"] = str(data_root / f"{kind}-{run_id}")
    os.environ["TROUPE_REDIS_PREFIX"] = f"troupe-{kind}-{run_id}"
    return run_id


@contextmanager
def scratch_backends(*, kind: str, run_id: str, data_root: Path) -> Iterator[dict[str, str]]:
    """Create this run's database (and pick Redis), migrate, and yield the env that
    every Ray process must share; drop the database at the end."""
    from troupe.infra import embedded

    data_root.mkdir(parents=True, exist_ok=True)
    server = os.environ.get("DATABASE_URL") or embedded.start_postgres(data_root)
    db_name = f"troupe_{kind}_{run_id}"
    admin_exec(server, f'CREATE DATABASE "{db_name}"')
    os.environ["DATABASE_URL"] = with_database(server, db_name)
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = embedded.start_redis(data_root)
    try:
        from troupe.config import get_settings
        from troupe.infra.bootstrap import prepare

        get_settings.cache_clear()
        yield prepare()
    finally:
        admin_exec(server, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@contextmanager
def serve_stack(env: dict[str, str], *, replicas: int = 1, ray_init: Callable[[], Any] | None = None,
                **ray_options: Any) -> Iterator[str]:
    """Ray (a new local instance unless ``ray_init`` connects elsewhere) and the Serve
    ingress on a free port; yields the base URL."""
    import ray
    from ray import serve

    from troupe.platform.ingress import apply_serve_env, build

    apply_serve_env({
        # No external load balancer to wait for: a draining replica may go at once.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        # HAProxy's side ports are fixed by default; runs sharing a machine must not collide.
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
    })
    if ray_init is None:
        ray.init(namespace="troupe", include_dashboard=False, runtime_env={"env_vars": env},
                 log_to_driver=False, **ray_options)
    else:
        ray_init()
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
        serve.run(build(env, replicas=replicas), name="troupe", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        with suppress(Exception):  # Serve may not have started
            serve.shutdown()
        ray.shutdown()


@contextmanager
def stack(*, kind: str, run_id: str, data_root: Path, replicas: int = 1,
          **ray_options: Any) -> Iterator[dict[str, str]]:
    """Backends + Ray + Serve: yields ``{"base_url": ..., **env}``."""
    with scratch_backends(kind=kind, run_id=run_id, data_root=data_root) as env, \
            serve_stack(env, replicas=replicas, **ray_options) as base_url:
        yield {"base_url": base_url, **env}
