"""Outage scenario, run in its own process by tests/test_outages.py
(``python -m tests.outage_scenario``): a Troupe stack (Ray + Serve) on a private
Postgres and a private Redis (tests/utils/private_backends.py), so that pausing
and stopping them touches no other test run.

1. Redis paused (SIGSTOP) for REDIS_PAUSE_SECONDS, then resumed (SIGCONT).
2. Postgres stopped (``pg_ctl stop -m fast``) for POSTGRES_STOP_SECONDS, then started
   again on the same port.

During each outage it sends the same few API requests over and over, through
Serve over HTTP, and records for each its status, error code, Retry-After and
how long it took; after each, how long until requests answer 200 again.
3. Runs in flight across another Postgres stop (tests/engine_outage_scenario.py).

Prints one JSON line (what tests/test_outages.py and tests/test_engine_durability.py
assert on); asserts nothing itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import httpx

from tests.utils.private_backends import ScenarioStack, print_report, scenario_stack

# The same account logs in again and again: keep the brute-force limits out of the way
# (they answer 429 long before the outage would be seen).
os.environ["TROUPE_AUTH_RATE_PER_IP"] = "100000"
os.environ["TROUPE_AUTH_RATE_PER_ACCOUNT"] = "100000"

REDIS_PAUSE_SECONDS = 10.0
POSTGRES_STOP_SECONDS = 6.0
RECOVERY_LIMIT_SECONDS = 30.0
# A hang shows up as a long elapsed time rather than a client-side error.
CLIENT_TIMEOUT = 30.0


async def _sample(http: httpx.AsyncClient, name: str, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        return {"name": name, "status": None, "error": type(exc).__name__,
                "elapsed": round(time.monotonic() - started, 3)}
    elapsed = round(time.monotonic() - started, 3)
    try:
        body = response.json()
    except ValueError:
        body = {}
    sample: dict[str, Any] = {"name": name, "status": response.status_code, "elapsed": elapsed,
                              "code": (body.get("error") or {}).get("code"),
                              "retryAfter": response.headers.get("retry-after"),
                              "requestId": (body.get("meta") or {}).get("requestId")}
    if name == "health":
        data = body.get("data") or {}
        sample["down"] = data.get("down")
        sample["services"] = {k: v.get("status") for k, v in (data.get("services") or {}).items()}
    return sample


def _requests(token: str, email: str, password: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    auth = {"Authorization": f"Bearer {token}"}
    return [
        ("me", "GET", "/api/users/me", {"headers": auth}),
        ("companies", "GET", "/api/companies", {"headers": auth}),
        ("createCompany", "POST", "/api/companies",
         {"headers": auth, "json": {"name": "Outage Co", "type": "research", "industry": "education"}}),
        ("login", "POST", "/api/auth/login", {"json": {"email": email, "password": password}}),
        ("health", "GET", "/api/settings/health", {}),
    ]


async def _during(http: httpx.AsyncClient, requests, seconds: float) -> list[dict[str, Any]]:
    """Rounds of every request at once (a replica meets an outage with many requests in
    flight, not one), again and again, for ``seconds``."""
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    round_ = 0
    while time.monotonic() < deadline:
        found = await asyncio.gather(*(_sample(http, name, method, url, **kwargs)
                                       for name, method, url, kwargs in requests))
        samples.extend({**sample, "round": round_} for sample in found)
        round_ += 1
    return samples


async def _recover(http: httpx.AsyncClient, requests) -> dict[str, Any]:
    """Seconds until every request answers 2xx again, then one sample of each."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_LIMIT_SECONDS:
        statuses = [(await _sample(http, name, method, url, **kwargs))["status"]
                    for name, method, url, kwargs in requests]
        if all(s is not None and 200 <= s < 300 for s in statuses):
            break
        await asyncio.sleep(0.2)
    seconds = round(time.monotonic() - started, 3)
    return {"seconds": seconds, "after": [await _sample(http, name, method, url, **kwargs)
                                          for name, method, url, kwargs in requests]}


async def _scenario(stack: ScenarioStack) -> dict[str, Any]:
    from tests.utils.fixtures import create_user
    from troupe.db.session import dispose_engine

    user = await create_user("user")
    await dispose_engine()  # this process's pool would only hold dead connections after the stop
    requests = _requests(user.token, user.email, user.password)
    report: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=CLIENT_TIMEOUT) as http:
        report["before"] = [await _sample(http, name, method, url, **kwargs)
                            for name, method, url, kwargs in requests]

        stack.redis.pause()
        try:
            report["redisPaused"] = await _during(http, requests, REDIS_PAUSE_SECONDS)
        finally:
            stack.redis.resume()
        report["redisRecovery"] = await _recover(http, requests)

        stack.postgres.stop()
        try:
            report["postgresStopped"] = await _during(http, requests, POSTGRES_STOP_SECONDS)
        finally:
            stack.postgres.start()
        report["postgresRecovery"] = await _recover(http, requests)
    return report


async def _both(stack: ScenarioStack) -> dict[str, Any]:
    from tests import engine_outage_scenario

    report = await _scenario(stack)
    # Then runs in flight across a second Postgres stop (tests/test_engine_durability.py), on the
    # same stack: starting Ray and Serve is most of a scenario's cost.
    report["engine"] = await engine_outage_scenario._scenario(stack)
    return report


def main() -> int:
    with scenario_stack("outage") as stack:
        report = asyncio.run(_both(stack))
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
