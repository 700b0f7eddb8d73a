"""A small HTTP load generator: client processes, each an asyncio loop of keep-alive workers."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    client_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _worker(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    stop: float,
    out: list[float],
    errors: list[int],
) -> None:
    while time.perf_counter() < stop:
        start = time.perf_counter()
        response = await client.post(path, json=body)
        if response.status_code == 200:
            out.append(time.perf_counter() - start)
        else:
            errors.append(response.status_code)


async def _run(
    url: str, ca: str, token: str, path: str, body: dict[str, Any], concurrency: int, seconds: float
) -> tuple[list[float], int]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, verify=ca, headers=headers, limits=limits, timeout=30
    ) as client:
        await client.post(path, json=body)  # warm the connection and the key cache
        stop = time.perf_counter() + seconds
        latencies: list[float] = []
        errors: list[int] = []
        await asyncio.gather(
            *(_worker(client, path, body, stop, latencies, errors) for _ in range(concurrency))
        )
        return latencies, len(errors)


def _process(
    args: tuple[str, str, str, str, dict[str, Any], int, float],
) -> tuple[list[float], int, float]:
    started = time.process_time()
    latencies, errors = asyncio.run(_run(*args))
    return latencies, errors, time.process_time() - started


def run_load(
    url: str,
    ca: str,
    token: str,
    path: str,
    body: dict[str, Any],
    *,
    processes: int = 2,
    concurrency: int = 16,
    seconds: float = 5.0,
) -> LoadResult:
    """POST `body` to `path` from `processes` x `concurrency` keep-alive workers for `seconds`."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        results = pool.map(
            _process, [(url, ca, token, path, body, concurrency, seconds)] * processes
        )
    latencies = [lat for r in results for lat in r[0]]
    return LoadResult(
        len(latencies), sum(r[1] for r in results), seconds, latencies, sum(r[2] for r in results)
    )


@dataclass(frozen=True)
class Measured:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu_seconds: float
    generator: str


def measure(
    url: str, ca: str, token: str, path: str, body: dict[str, Any], seconds: float
) -> Measured:
    """Throughput and latency of one POST under load: `wrk` when installed (cheap), else the
    Python generator above (which takes much of the CPU it measures)."""
    from benchmarks import wrk_load

    if wrk_load.available():
        w = wrk_load.run_wrk(url, token, path, body, seconds=seconds)
        return Measured(w.rate, w.p50_ms, w.p99_ms, w.errors, w.client_cpu_seconds, "wrk")
    r = run_load(url, ca, token, path, body, seconds=seconds)
    return Measured(
        r.rate,
        r.percentile(50) * 1000,
        r.percentile(99) * 1000,
        r.errors,
        r.client_cpu_seconds,
        "python",
    )
