"""Start a throwaway Troupe stack (Ray + Serve + its own database) for a benchmark run."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin_exec(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def troupe_stack(*, replicas: int = 1, num_cpus: int | None = None) -> Iterator[dict[str, str]]:
    """Yields ``{"base_url": ..., **env}``; drops the database and stops Ray afterwards."""
    run_id = uuid.uuid4().hex[:10]
    data = ROOT / ".troupe" / "bench"
    os.environ.setdefault("TROUPE_ENV", "test")
    os.environ["TROUPE_DATA_DIR"] = str(data / f"run-{run_id}")
    os.environ["TROUPE_REDIS_PREFIX"] = f"troupe-bench-{run_id}"
    os.environ.setdefault("RATE_LIMIT_MAX_REQUESTS", "1000000")
    os.environ.setdefault("TROUPE_AUTH_RATE_PER_IP", "100000")
    from troupe.infra import embedded

    data.mkdir(parents=True, exist_ok=True)
    server = os.environ.get("DATABASE_URL") or embedded.start_postgres(data)
    db_name = f"troupe_bench_{run_id}"
    _admin_exec(server, f'CREATE DATABASE "{db_name}"')
    os.environ["DATABASE_URL"] = _with_database(server, db_name)
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = embedded.start_redis(data)

    import ray
    from ray import serve

    from troupe.config import get_settings
    from troupe.infra.bootstrap import prepare
    from troupe.platform.ingress import build

    get_settings.cache_clear()
    env = prepare()
    port = free_port()
    ray.init(namespace="troupe", include_dashboard=False, runtime_env={"env_vars": env},
             num_cpus=num_cpus, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build(env, replicas=replicas), name="troupe", route_prefix="/")
    try:
        yield {"base_url": f"http://127.0.0.1:{port}", **env}
    finally:
        serve.shutdown()
        ray.shutdown()
        _admin_exec(server, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
