"""The same 100-node DAGs in Prefect 3 (run in its own venv: `.venv-prefect`).

Each shape runs REPEATS (3) times in a row and the last one is reported: Prefect
measured warm (its third repetition; the first also starts the ephemeral API).
Prints one JSON line: {"chain_s": ..., "fanout_s": ..., "chain_all": [...],
"fanout_all": [...]}. Runs against Prefect's ephemeral local API, nothing leaves
the machine."""

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
REPEATS = max(1, int(os.environ.get("BENCH_PREFECT_REPEATS", "3")))


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
def fanout() -> int:
    source = noop.submit(0)
    futures = [noop.submit(source) for _ in range(N - 2)]  # input -> N-2 parallel -> output, as in Troupe
    return noop(len([f.result() for f in futures]))


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    result: dict[str, object] = {}
    for name, fn in (("chain", chain), ("fanout", fanout)):
        runs = [timed(fn) for _ in range(REPEATS)]
        result[f"{name}_all"] = runs
        result[f"{name}_s"] = runs[-1]
    print(json.dumps(result))
