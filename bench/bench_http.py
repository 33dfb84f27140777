"""Ingress overhead: the same FastAPI app served by plain uvicorn vs through Ray Serve.

Both answer the same request (an unknown route, which still runs every
middleware and builds the error envelope) so the ratio isolates Serve's proxy
and replica hop."""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import httpx

from bench.stack import plain_uvicorn

REQUESTS = int(os.environ.get("BENCH_HTTP_REQUESTS", "2000"))
CONCURRENCY = 16


async def _load(url: str) -> dict[str, float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(50):  # warm-up
            await client.get(url)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(REQUESTS):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                started = time.perf_counter()
                response = await client.get(url)
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 404, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rps": REQUESTS / elapsed, "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1]}


def run(stack: dict[str, str]) -> dict[str, dict[str, float]]:
    serve_stats = asyncio.run(_load(stack["base_url"] + "/api/bench-missing"))
    with plain_uvicorn(stack) as (url, _):
        plain_stats = asyncio.run(_load(url + "/api/bench-missing"))
    return {"serve": serve_stats, "uvicorn": plain_stats}


def report(results: dict[str, dict[str, float]]) -> list[str]:
    serve, plain = results["serve"], results["uvicorn"]
    return [
        f"HTTP ingress ({REQUESTS} requests, {CONCURRENCY} concurrent)",
        f"  plain uvicorn : {plain['rps']:8.0f} req/s  p50 {plain['p50_ms']:6.2f} ms  p99 {plain['p99_ms']:6.2f} ms",
        f"  through Serve : {serve['rps']:8.0f} req/s  p50 {serve['p50_ms']:6.2f} ms  p99 {serve['p99_ms']:6.2f} ms",
        f"  ratio Serve/uvicorn: throughput {serve['rps'] / plain['rps']:.2f}x, "
        f"p50 latency {serve['p50_ms'] / plain['p50_ms']:.2f}x",
    ]
