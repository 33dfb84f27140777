"""The same 100-node DAGs in Prefect 3 (run in its own venv: `.venv-prefect`).

Prints one JSON line: {"chain_s": ..., "fanout_s": ...}. Runs against Prefect's
ephemeral local API, nothing leaves the machine."""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_HOME", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".troupe", "prefect"))

from prefect import flow, task  # noqa: E402

N = int(os.environ.get("BENCH_NODES", "100"))


@task
def noop(x: int) -> int:
    return x + 1


@flow
def chain() -> int:
    value = 0
    for _ in range(N):
        value = noop(value)
    return value


@flow
def fanout() -> list[int]:
    futures = [noop.submit(i) for i in range(N)]
    return [f.result() for f in futures]


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    chain()  # warm-up: starts the ephemeral API
    print(json.dumps({"chain_s": timed(chain), "fanout_s": timed(fanout)}))
