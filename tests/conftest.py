"""One Ray instance and one Serve application per test session, on a database
of their own (created here, dropped at the end), reached over real HTTP."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

RUN_ID = uuid.uuid4().hex[:10]
ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / ".troupe" / "test"

# Before anything imports troupe.config: this session's own settings.
os.environ.setdefault("TROUPE_ENV", "test")
os.environ["TROUPE_DATA_DIR"] = str(TEST_DATA / f"run-{RUN_ID}")
os.environ["TROUPE_REDIS_PREFIX"] = f"troupe-test-{RUN_ID}"
os.environ.setdefault("TROUPE_ACTOR_IDLE_TIMEOUT", "20s")
os.environ.setdefault("CORS_ORIGIN", "http://localhost:3000")
os.environ.setdefault("TROUPE_MAX_BODY_BYTES", "262144")
# The test deployment admits loopback for local webhook/tool targets (tests/test_engine_outbound.py);
# production keeps the empty default.
os.environ.setdefault("TROUPE_OUTBOUND_ALLOWLIST", '["127.0.0.1"]')

pytest_plugins = ["tests.utils.fixtures"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_url() -> str:
    """The Postgres server to create this run's database on."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    from troupe.infra import embedded

    TEST_DATA.mkdir(parents=True, exist_ok=True)
    return embedded.start_postgres(TEST_DATA)


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin_exec(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, str]]:
    import ray
    from ray import serve

    server = _server_url()
    db_name = f"troupe_test_{RUN_ID}"
    _admin_exec(server, f'CREATE DATABASE "{db_name}"')
    os.environ["DATABASE_URL"] = _with_database(server, db_name)
    if not os.environ.get("REDIS_URL"):
        from troupe.infra import embedded

        os.environ["REDIS_URL"] = embedded.start_redis(TEST_DATA)
    from troupe.config import get_settings
    from troupe.infra.bootstrap import prepare
    from troupe.platform.ingress import build

    get_settings.cache_clear()
    env = prepare()
    port = _free_port()
    ray.init(namespace="troupe", include_dashboard=False, runtime_env={"env_vars": env},
             num_cpus=int(os.environ.get("TROUPE_TEST_RAY_CPUS", "4")), log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build(env), name="troupe", route_prefix="/")
    try:
        yield {"base_url": f"http://127.0.0.1:{port}", **env}
    finally:
        serve.shutdown()
        ray.shutdown()
        _admin_exec(server, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def base_url(stack: dict[str, str]) -> str:
    return stack["base_url"]


@pytest.fixture(scope="session")
async def client(base_url: str) -> AsyncIterator:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        yield http
