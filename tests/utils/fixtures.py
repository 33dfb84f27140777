"""Ready users of every role with tokens, and envelope helpers."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

_counter = itertools.count()
PASSWORD = "Str0ng!Passw0rd"


@dataclass
class TestUser:
    __test__ = False  # not a test class

    id: str
    email: str
    username: str
    role: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# One bcrypt hash per password for the whole session: at the production cost (12 rounds,
# about 0.35 s of CPU here) hashing for each of several hundred test users cost minutes.
_password_hashes: dict[str, str] = {}


async def password_hash(password: str) -> str:
    from troupe.security import hash_password

    if password not in _password_hashes:
        _password_hashes[password] = await hash_password(password)
    return _password_hashes[password]


async def create_user(role: str = "user", *, password: str = PASSWORD, verified: bool = True) -> TestUser:
    """Insert a user straight into the database and mint a token the way login does."""
    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.security import access_claims, create_access_token

    n = next(_counter)
    tag = uuid.uuid4().hex[:8]
    email, username = f"{role}{n}-{tag}@example.com", f"{role}{n}_{tag}"
    async with session_scope() as session:
        user = models.User(email=email, username=username, password_hash=await password_hash(password),
                           first_name=role.title(), last_name=f"Tester{n}", role=role, status="active",
                           email_verified=verified, profile={}, preferences={})
        session.add(user)
        await session.flush()
        user_id = str(user.id)
    token, _ = create_access_token(access_claims(user_id=user_id, email=email, username=username, role=role,
                                                 companies=[], token_version=0))
    return TestUser(user_id, email, username, role, password, token)


@pytest.fixture
async def user_factory(stack):
    return create_user


@pytest.fixture
async def user(stack) -> TestUser:
    return await create_user("user")


@pytest.fixture
async def other_user(stack) -> TestUser:
    return await create_user("user")


@pytest.fixture
async def viewer(stack) -> TestUser:
    return await create_user("viewer")


@pytest.fixture
async def admin(stack) -> TestUser:
    return await create_user("admin")


@pytest.fixture
async def super_admin(stack) -> TestUser:
    return await create_user("super_admin")


@pytest.fixture(scope="session")
def outage_scenario_report() -> dict[str, Any]:
    """Postgres and Redis really stopped under a stack of the scenario's own
    (tests/outage_scenario.py): one process and one Ray + Serve start for the API's
    outage answers (tests/test_outages.py) and runs in flight (tests/test_engine_durability.py)."""
    from tests.utils.private_backends import run_scenario

    run = run_scenario("tests.outage_scenario", timeout=600)
    assert run.returncode == 0, run.stderr
    return run.report


@pytest.fixture
def settings(monkeypatch):
    """``settings(name=value, ...)`` changes this process's settings for one test."""
    from troupe.config import get_settings

    current = get_settings()

    def set_(**values: Any) -> None:
        for name, value in values.items():
            monkeypatch.setattr(current, name, value)

    return set_


def assert_ok(response, status: int = 200) -> Any:
    """The success envelope; returns ``data``."""
    body = response.json()
    assert response.status_code == status, body
    assert body["success"] is True, body
    assert body["meta"]["requestId"] == response.headers["x-request-id"]
    return body["data"]


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    """The error envelope with the spec's code; returns ``error``."""
    body = response.json()
    assert response.status_code == status, body
    assert body["success"] is False, body
    assert body["error"]["code"] == code, body
    if field is not None:
        assert body["error"]["field"] == field, body
    assert body["meta"]["requestId"]
    return body["error"]
