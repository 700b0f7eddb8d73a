"""`GET /metrics`: the partition's request counters, latency histograms and availability in
Prometheus' text exposition format (version 0.0.4), written by hand to need no dependency.

`MetricsPolicy` wraps the whole app and records every HTTP request as its operation
(`"<METHOD> <route path template>"`, or `"other"` when no route matches), its status and its
latency. Recording is a few dict and list updates and one bisect: no locks, because one event
loop serves the partition. Availability follows Managed HSM's Availability metric: the share of
requests in a window that did not fail with a server error (5xx), from per-second buckets in a
ring; probes (`/healthz`, `/readyz`, `/metrics`) are counted as requests but left out of it.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmhsm.region.replicator import Lag

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
WINDOWS: tuple[tuple[str, int], ...] = (("1m", 60), ("1h", 3600))
PROBES = frozenset({"GET /healthz", "GET /readyz", "GET /metrics"})
_RING = max(seconds for _, seconds in WINDOWS)


class _Histogram:
    """Per-bucket counts (not cumulative: one increment per observation), sum and count."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class RequestMetrics:
    """What one partition has served, and hooks for the state it reports alongside.

    `clock` (monotonic seconds) places requests in the availability ring; tests inject one.
    `storage_up` says whether the partition's last storage call succeeded and `cache_revision`
    is the last storage revision its cache applied, `scheduler_leading` whether this partition's
    scheduler holds the pool's lease, `replication_lag` an extended region's lag behind its
    primary; a gauge whose hook is None (or answers None) is left out."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        storage_up: Callable[[], bool] | None = None,
        cache_revision: Callable[[], int] | None = None,
        scheduler_leading: Callable[[], bool] | None = None,
        replication_lag: Callable[[], Lag | None] | None = None,
    ) -> None:
        self.clock = clock
        self.storage_up = storage_up
        self.cache_revision = cache_revision
        self.scheduler_leading = scheduler_leading
        self.replication_lag = replication_lag  # an extended region's; None when unknown
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, _Histogram] = {}
        self._second = [-1] * _RING
        self._total = [0] * _RING
        self._failed = [0] * _RING

    def record(self, operation: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        key = (operation, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(operation)
        if histogram is None:
            histogram = self.latency[operation] = _Histogram()
        histogram.observe(seconds)
        if operation in PROBES:
            return
        now = int(self.clock())
        slot = now % _RING
        if self._second[slot] != now:
            self._second[slot], self._total[slot], self._failed[slot] = now, 0, 0
        self._total[slot] += 1
        if status >= 500:
            self._failed[slot] += 1

    def availability(self, window: int) -> float:
        """Share of the last `window` seconds' requests (at most an hour's) that got no 5xx;
        1.0 when there were none."""
        now = int(self.clock())
        oldest = now - min(window, _RING) + 1
        total = failed = 0
        for second, count, bad in zip(self._second, self._total, self._failed, strict=True):
            if oldest <= second <= now:
                total += count
                failed += bad
        return 1.0 if total == 0 else (total - failed) / total

    def exposition(self, partition: int) -> str:
        """Every metric in Prometheus' text format, ending with a newline."""
        lines: list[str] = []
        _family(lines, "openmhsm_requests_total", "counter", "HTTP requests by operation.")
        for (operation, status), count in sorted(self.requests.items()):
            lines.append(
                _sample("openmhsm_requests_total", count, operation=operation, status=str(status))
            )
        _family(
            lines,
            "openmhsm_request_duration_seconds",
            "histogram",
            "Time from request to the end of the response, by operation.",
        )
        for operation, histogram in sorted(self.latency.items()):
            lines.extend(_histogram_samples(operation, histogram))
        _family(
            lines,
            "openmhsm_availability_ratio",
            "gauge",
            "Share of requests in the window that did not fail with a 5xx.",
        )
        for name, seconds in WINDOWS:
            lines.append(
                _sample("openmhsm_availability_ratio", self.availability(seconds), window=name)
            )
        _family(lines, "openmhsm_partition_info", "gauge", "The partition serving this page.")
        lines.append(_sample("openmhsm_partition_info", 1, partition=str(partition)))
        if self.storage_up is not None:
            _family(
                lines,
                "openmhsm_storage_up",
                "gauge",
                "1 if the partition's last storage call succeeded.",
            )
            lines.append(_sample("openmhsm_storage_up", int(self.storage_up())))
        if self.cache_revision is not None:
            _family(
                lines,
                "openmhsm_cache_revision",
                "gauge",
                "The storage revision the partition's cache has applied.",
            )
            lines.append(_sample("openmhsm_cache_revision", self.cache_revision()))
        if self.scheduler_leading is not None:
            _family(
                lines,
                "openmhsm_scheduler_leader",
                "gauge",
                "1 on the partition whose scheduler rotates and purges keys for the pool.",
            )
            lines.append(_sample("openmhsm_scheduler_leader", int(self.scheduler_leading())))
        lag = self.replication_lag() if self.replication_lag is not None else None
        if lag is not None:
            _replication_lag(lines, lag)
        return "\n".join(lines) + "\n"


class MetricsPolicy:
    """Records every HTTP request in `metrics`. Put it outside routing: it reads the route
    Starlette leaves in the scope once the request is done. A request answered before routing
    (401, 403, 400) is matched against `routes`, when given, so it counts under its operation."""

    def __init__(
        self, app: ASGIApp, metrics: RequestMetrics, routes: Sequence[BaseRoute] = ()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees when the app raises before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            operation = operation_of(scope, self.routes)
            self.metrics.record(operation, status, time.perf_counter() - started)


def operation_of(scope: Scope, routes: Iterable[BaseRoute] = ()) -> str:
    """`"<METHOD> <path template>"` of the route that served the request, or `"other"` (no
    route, or a method the route does not allow: unbounded label values are not kept)."""
    route = scope.get("route")
    if route is None:
        route = next((r for r in routes if r.matches(scope)[0] is Match.FULL), None)
    method = scope["method"]
    if not isinstance(route, Route) or (route.methods is not None and method not in route.methods):
        return OTHER
    return f"{method} {route.path}"


def metrics_routes(metrics: RequestMetrics, partition_id: int) -> list[BaseRoute]:
    async def show(request: Request) -> Response:
        return Response(metrics.exposition(partition_id), media_type=CONTENT_TYPE)

    return [Route("/metrics", show, methods=["GET"])]


def _replication_lag(lines: list[str], lag: Lag) -> None:
    _family(
        lines,
        "openmhsm_replication_lag_seconds",
        "gauge",
        "How long the oldest change of the primary not yet applied here has been known.",
    )
    lines.append(_sample("openmhsm_replication_lag_seconds", lag.seconds))
    _family(
        lines,
        "openmhsm_replication_lag_revisions",
        "gauge",
        "Primary storage revisions seen but not yet applied here.",
    )
    lines.append(_sample("openmhsm_replication_lag_revisions", lag.revisions))


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _histogram_samples(operation: str, histogram: _Histogram) -> list[str]:
    name = "openmhsm_request_duration_seconds"
    out = []
    cumulative = 0
    for bound, count in zip((*LATENCY_BUCKETS, math.inf), histogram.counts, strict=True):
        cumulative += count
        out.append(
            _sample(f"{name}_bucket", cumulative, operation=operation, le=_number(float(bound)))
        )
    out.append(_sample(f"{name}_sum", histogram.total, operation=operation))
    out.append(_sample(f"{name}_count", cumulative, operation=operation))
    return out


def _sample(name: str, value: float, **labels: str) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    body = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
    return f"{name}{{{body}}} {_number(value)}"


def _number(value: float) -> str:
    """Go's float formatting as Prometheus clients write it: `3`, `0.5`, `1.0`, `+Inf`."""
    if isinstance(value, int):
        return str(value)
    return "+Inf" if value == math.inf else repr(value)


def _escape(text: str) -> str:
    return text.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
