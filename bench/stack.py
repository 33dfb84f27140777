"""The throwaway stack a benchmark run uses (see troupe.infra.devstack)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from troupe.infra import devstack
from troupe.infra.devstack import free_port

__all__ = ["free_port", "troupe_stack"]

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def troupe_stack(*, replicas: int = 1, num_cpus: int | None = None) -> Iterator[dict[str, str]]:
    """Yields ``{"base_url": ..., **env}``; drops the database and stops Ray afterwards."""
    data = ROOT / ".troupe" / "bench"
    run_id = devstack.configure(kind="bench", data_root=data)
    # Benchmarks drive one IP hard: the API and auth rate limits must not be what is measured.
    os.environ.setdefault("RATE_LIMIT_MAX_REQUESTS", "1000000")
    os.environ.setdefault("TROUPE_AUTH_RATE_PER_IP", "100000")
    with devstack.stack(kind="bench", run_id=run_id, data_root=data, replicas=replicas,
                        num_cpus=num_cpus) as running:
        yield running
