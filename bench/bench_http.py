"""Ingress overhead: the same FastAPI app served by plain uvicorn vs through Ray Serve.

Both answer the same authenticated, database-backed request: ``GET /api/companies/:id``
with a Bearer token of a seeded user who owns the seeded company (token check
against Redis and Postgres, the company, its agents, tools, workflows, members
and live metrics read from Postgres). Every response must be 200 with the same
``data`` as the reference response; anything else is counted as an error.

uvicorn runs at the Serve replica's niceness (Ray starts its workers niced, 15 by
default), so CPU contention on the machine weighs the same on both sides.
The two sides are measured in ABBA order (Serve, uvicorn, uvicorn, Serve for two
rounds) so drift in the machine's load falls on both; latencies and request
counts are pooled over the rounds.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from typing import Any

import httpx

from bench.stack import plain_uvicorn, serve_replica_niceness

REQUESTS = int(os.environ.get("BENCH_HTTP_REQUESTS", "1000"))  # per timed load (4 loads per side)
ROUNDS = int(os.environ.get("BENCH_HTTP_ROUNDS", "2"))
CONCURRENCY = int(os.environ.get("BENCH_HTTP_CONCURRENCY", "16"))
WARMUP = 100
TARGET = 1.5  # Serve may be at most 1.5x plain uvicorn (p50 latency up, throughput down)


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else float("nan")


async def _seed() -> tuple[str, dict[str, str]]:
    """A user owning a company with one workflow, straight into Postgres; returns (company id, headers)."""
    from bench.bench_engine import chain_graph
    from bench.stack import seed_company, seed_user, seed_workflow
    from troupe.db.session import dispose_engine

    try:
        owner, headers = await seed_user("bench-http")
        company = await seed_company(owner, "http", 5)
        await seed_workflow(owner, company, "bench http workflow", *chain_graph(2), "sequential")
    finally:
        await dispose_engine()  # this event loop ends here
    return str(company), headers


async def _reference(url: str, headers: dict[str, str], company: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}: {response.text[:300]}")
    data = response.json()["data"]
    if data.get("id") != company:
        raise RuntimeError(f"GET {url} returned company {data.get('id')}, expected {company}")
    return data


async def _load(url: str, headers: dict[str, str], expected: dict[str, Any]) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, headers=headers, limits=limits) as client:
        async def one() -> None:
            started = time.perf_counter()
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
            elif response.json().get("data") != expected:
                errors.append(f"200 with another body: {response.text[:200]}")

        for _ in range(WARMUP // CONCURRENCY + 1):  # warm-up: connections, caches, the replica's pool
            await asyncio.gather(*(one() for _ in range(CONCURRENCY)))
        latencies.clear()
        errors.clear()
        remaining = [REQUESTS]

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await one()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return {"requests": REQUESTS, "seconds": elapsed, "latencies": latencies, "errors": errors}


def _pool(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(ms for r in rounds for ms in r["latencies"])
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    errors = [e for r in rounds for e in r["errors"]]
    return {"requests": requests, "rps": requests / seconds if seconds else 0.0, "p50_ms": _pct(latencies, 0.5),
            "p99_ms": _pct(latencies, 0.99), "errors": len(errors), "first_error": errors[0] if errors else None,
            "rounds_rps": [r["requests"] / r["seconds"] for r in rounds]}


def run(stack: dict[str, str]) -> dict[str, Any]:
    company, headers = asyncio.run(_seed())
    path = f"/api/companies/{company}"
    serve_url = stack["base_url"] + path
    expected = asyncio.run(_reference(serve_url, headers, company))
    sides: dict[str, list[dict[str, Any]]] = {"serve": [], "uvicorn": []}
    # Ray runs the replica (and HAProxy) niced; the baseline gets the same CPU priority, or every
    # other process on the machine (the load generator included) would take CPU from Serve first.
    nice = serve_replica_niceness()
    with plain_uvicorn(stack, nice=nice) as (base, _):
        plain_url = base + path
        if asyncio.run(_reference(plain_url, headers, company)) != expected:
            raise RuntimeError("plain uvicorn and Serve answer the same GET with different data")
        for _ in range(ROUNDS):
            for side in ("serve", "uvicorn", "uvicorn", "serve"):
                url = serve_url if side == "serve" else plain_url
                result = asyncio.run(_load(url, headers, expected))
                sides[side].append(result)
                print(f"  http: {side:7s} {result['requests']} requests in {result['seconds']:.1f} s, "
                      f"{len(result['errors'])} errors", flush=True)
    load = os.getloadavg()[0]
    front = "HAProxy front door" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "Serve's proxy actor"
    return {"path": "GET /api/companies/:id", "company": str(uuid.UUID(company)), "nice": nice, "front": front, "load": load,
            "serve": _pool(sides["serve"]), "uvicorn": _pool(sides["uvicorn"])}


def _verdict(ratio: float, errors: int) -> str:
    if errors:
        return f"NOT MET ({ratio:.2f}x, but {errors} error responses: the figures are not valid)"
    if ratio <= TARGET:
        return f"MET ({ratio:.2f}x)"
    return f"NOT MET ({ratio:.2f}x, {(ratio / TARGET - 1) * 100:.0f} % over the {TARGET}x target)"


def report(results: dict[str, Any]) -> list[str]:
    serve, plain = results["serve"], results["uvicorn"]
    errors = serve["errors"] + plain["errors"]

    def row(label: str, r: dict[str, Any]) -> str:
        per_round = ", ".join(f"{x:.0f}" for x in r["rounds_rps"])
        return (f"  {label}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                f"errors {r['errors']}/{r['requests']}  (per round {per_round} req/s)")

    lines = [
        f"HTTP ingress: {results['path']} with a Bearer token (auth + Postgres reads), "
        f"{ROUNDS * 2} x {REQUESTS} requests per side in ABBA order, {CONCURRENCY} concurrent; "
        "every response checked: 200 and the reference body",
        f"  one Serve replica ({results['front']}) vs one uvicorn worker, both at niceness {results['nice']} "
        f"(Ray's worker niceness); machine load average at the end {results.get('load', float('nan')):.1f} on "
        f"{os.cpu_count()} CPUs",
        row("plain uvicorn", plain),
        row("through Serve", serve),
    ]
    for label in ("serve", "uvicorn"):
        if results[label]["first_error"]:
            lines.append(f"  first error ({label}): {results[label]['first_error']}")
    p50_ratio = serve["p50_ms"] / plain["p50_ms"] if plain["p50_ms"] else float("inf")
    rps_ratio = plain["rps"] / serve["rps"] if serve["rps"] else float("inf")
    lines += [
        f"  target p50 latency Serve/uvicorn <= {TARGET}x: {_verdict(p50_ratio, errors)}",
        f"  target throughput uvicorn/Serve <= {TARGET}x (Serve at least {1 / TARGET:.0%} of uvicorn's req/s): "
        f"{_verdict(rps_ratio, errors)}",
    ]
    return lines
