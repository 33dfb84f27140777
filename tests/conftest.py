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
