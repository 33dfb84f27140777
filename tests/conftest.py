"""One Ray instance and one Serve application per test session, on a database
of their own (created here, dropped at the end), reached over real HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from troupe.infra import devstack

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / ".troupe" / "test"

# Before anything imports troupe.config: this session's own settings.
RUN_ID = devstack.configure(kind="test", data_root=TEST_DATA)
os.environ.setdefault("TROUPE_ACTOR_IDLE_TIMEOUT", "20s")
os.environ.setdefault("CORS_ORIGIN", "http://localhost:3000")
os.environ.setdefault("TROUPE_MAX_BODY_BYTES", "262144")
# The test deployment admits loopback for local webhook/tool targets (tests/test_engine_outbound.py);
# production keeps the empty default.
os.environ.setdefault("TROUPE_OUTBOUND_ALLOWLIST", '["127.0.0.1"]')
# Serve's front door (HAProxy, on loopback here) is the replicas' peer and passes X-Forwarded-For on
# as the client sent it: the suite's client plays the load balancer that sets it, so that each flow
# has its own address (tests/auth_helpers.py fresh_ip). tests/test_security_platform.py checks peers
# that are not trusted.
os.environ.setdefault("TRUSTED_PROXIES", '["127.0.0.1/32"]')
# Test-only node behaviour (injected faults) is a plugin of the suite's, loaded by every worker.
os.environ.setdefault("TROUPE_NODE_PLUGINS", "tests.utils.fault_nodes")

pytest_plugins = ["tests.utils.fixtures"]


# Tests that bring up servers of their own (a private Postgres/Redis/Ray, `ray start` nodes, a
# `python -m troupe run`) never touch the session's stack: `make test` runs them in a second
# xdist worker beside the one that holds the stack (`-n 2 --dist loadgroup`), which halves the
# wall time on 2 cores. Everything else shares the one stack, so it stays in one worker.
SELF_CONTAINED = (
    "tests/test_outages.py::",
    "tests/test_engine_durability.py::test_postgres_stopped_with_runs_in_flight_every_run_completes_each_node_once",
    "tests/test_multinode_deploy.py::",
    "tests/test_clean_stop.py::",
    "tests/test_backup_storage.py::",
    "tests/test_cluster_config.py::",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        own = item.nodeid.startswith(SELF_CONTAINED) and "stack" not in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.xdist_group("self-contained" if own else "stack"))


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, str]]:
    with devstack.stack(kind="test", run_id=RUN_ID, data_root=TEST_DATA,
                        num_cpus=int(os.environ.get("TROUPE_TEST_RAY_CPUS", "4"))) as running:
        yield running


@pytest.fixture(scope="session")
def base_url(stack: dict[str, str]) -> str:
    return stack["base_url"]


@pytest.fixture(scope="session")
async def client(base_url: str) -> AsyncIterator:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        yield http
