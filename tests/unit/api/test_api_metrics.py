"""`GET /metrics` and the policy behind it: what is counted under which operation, the latency
histogram, the availability windows, and an exposition a Prometheus scraper can parse."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route, Router
from starlette.types import Message, Receive, Scope, Send

from openmhsm.api.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    MetricsPolicy,
    RequestMetrics,
    operation_of,
)

API = "api-version=2025-07-01"
SIGN = "POST /keys/{name}/{version}/sign"
CREATE = "POST /keys/{name}/create"
DIGEST = base64.urlsafe_b64encode(hashlib.sha256(b"m").digest()).rstrip(b"=").decode()

# One sample line of the text format 0.0.4: name, optional {labels}, value.
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """A strict little parser: every sample belongs to a family declared by `# TYPE` before it;
    returns the samples by (name, labels) and the declared type of each family."""
    assert text.endswith("\n")
    samples: Samples = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram"} and name not in types
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, line
        name, body, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no # TYPE"
        labels = []
        if body:
            assert "".join(m.group(0) for m in LABEL.finditer(body)) == body, body
            labels = [(k, unescape(v)) for k, v in LABEL.findall(body)]
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(value)
    return samples, types


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def url(path: str) -> str:
    return f"{path}?{API}"


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- RequestMetrics alone ---------------------------------------------------------------------


def test_counts_by_operation_and_status() -> None:
    metrics = RequestMetrics()
    for status in (200, 200, 401):
        metrics.record(SIGN, status, 0.001)
    metrics.record("other", 404, 0.0001)
    samples, types = parse(metrics.exposition(partition=2))
    assert types["openmhsm_requests_total"] == "counter"
    assert value(samples, "openmhsm_requests_total", operation=SIGN, status="200") == 2
    assert value(samples, "openmhsm_requests_total", operation=SIGN, status="401") == 1
    assert value(samples, "openmhsm_requests_total", operation="other", status="404") == 1
    assert value(samples, "openmhsm_partition_info", partition="2") == 1


def test_histogram_buckets_are_cumulative_with_le_inclusive() -> None:
    metrics = RequestMetrics()
    for seconds in (0.0005, 0.0006, 0.3, 20.0):
        metrics.record(SIGN, 200, seconds)
    samples, types = parse(metrics.exposition(partition=0))
    name = "openmhsm_request_duration_seconds"
    assert types[name] == "histogram"
    assert LATENCY_BUCKETS[0] == 0.0005 and LATENCY_BUCKETS[-1] == 10.0

    def bucket(le: str) -> float:
        return value(samples, f"{name}_bucket", operation=SIGN, le=le)

    assert bucket("0.0005") == 1  # a value on a bound counts in that bucket (le = "<=")
    assert bucket("0.001") == 2
    assert bucket("0.25") == 2
    assert bucket("0.5") == 3
    assert bucket("10.0") == 3
    assert bucket("+Inf") == 4
    cumulative = [bucket(repr(b)) for b in LATENCY_BUCKETS]
    assert cumulative == sorted(cumulative)
    assert value(samples, f"{name}_count", operation=SIGN) == 4
    assert math.isclose(value(samples, f"{name}_sum", operation=SIGN), 20.3011)


def test_availability_windows_follow_the_clock() -> None:
    clock = Clock()
    metrics = RequestMetrics(clock=clock)
    assert metrics.availability(60) == metrics.availability(3600) == 1.0  # no requests yet
    for status in (200, 201, 404, 503):  # client errors are not failures; 5xx are
        metrics.record(SIGN, status, 0.01)
    assert metrics.availability(60) == metrics.availability(3600) == 0.75
    clock.t += 30
    metrics.record(SIGN, 500, 0.01)
    assert metrics.availability(60) == metrics.availability(3600) == 0.6
    clock.t += 31  # the first second left the minute, the second one did not
    assert metrics.availability(60) == 0.0
    assert metrics.availability(3600) == 0.6
    clock.t += 60
    assert metrics.availability(60) == 1.0
    assert metrics.availability(3600) == 0.6
    clock.t = 1000.0 + 3600  # the first second's ring slot is reused: old counts are gone
    metrics.record(SIGN, 200, 0.01)
    assert metrics.availability(3600) == 0.5  # the 500 at +30 s and this 200
    samples, types = parse(metrics.exposition(partition=0))
    assert types["openmhsm_availability_ratio"] == "gauge"
    assert value(samples, "openmhsm_availability_ratio", window="1m") == 1.0
    assert value(samples, "openmhsm_availability_ratio", window="1h") == 0.5


def test_probes_are_counted_but_not_part_of_availability() -> None:
    metrics = RequestMetrics(clock=Clock())
    metrics.record(SIGN, 503, 0.01)
    for _ in range(9):
        metrics.record("GET /readyz", 200, 0.001)
    assert metrics.availability(60) == 0.0
    samples, _ = parse(metrics.exposition(partition=0))
    assert value(samples, "openmhsm_requests_total", operation="GET /readyz", status="200") == 9


def test_hooks_give_storage_and_cache_gauges() -> None:
    bare, _ = parse(RequestMetrics().exposition(partition=0))
    assert not any(name in ("openmhsm_storage_up", "openmhsm_cache_revision") for name, _ in bare)
    up = [True]
    metrics = RequestMetrics(storage_up=lambda: up[0], cache_revision=lambda: 41)
    samples, types = parse(metrics.exposition(partition=0))
    assert types["openmhsm_storage_up"] == types["openmhsm_cache_revision"] == "gauge"
    assert value(samples, "openmhsm_storage_up") == 1
    assert value(samples, "openmhsm_cache_revision") == 41
    up[0] = False
    samples, _ = parse(metrics.exposition(partition=0))
    assert value(samples, "openmhsm_storage_up") == 0


def test_label_values_are_escaped() -> None:
    metrics = RequestMetrics()
    odd = 'GET /a"b\\c\nd'
    metrics.record(odd, 200, 0.01)
    samples, _ = parse(metrics.exposition(partition=0))
    assert value(samples, "openmhsm_requests_total", operation=odd, status="200") == 1


# --- MetricsPolicy as plain ASGI -------------------------------------------------------------


async def _boom(request: Any) -> Any:
    raise RuntimeError("boom")


async def _ok(request: Any) -> Any:
    return PlainTextResponse("ok")


def call(app: Callable[[Scope, Receive, Send], Any], method: str, path: str) -> int | None:
    """Drive one HTTP request through an ASGI app in a new loop; the status it answered."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }
    asyncio.run(app(scope, receive, send))
    return next((m["status"] for m in sent if m["type"] == "http.response.start"), None)


def test_policy_records_the_route_template_and_server_errors() -> None:
    metrics = RequestMetrics(clock=Clock())
    router = Router([Route("/items/{id}", _ok, methods=["GET"]), Route("/boom", _boom)])
    policy = MetricsPolicy(router, metrics)
    assert call(policy, "GET", "/items/7") == 200
    assert call(policy, "GET", "/nowhere") == 404
    assert call(policy, "DELETE", "/items/7") == 405  # a method the route refuses: "other"
    with pytest.raises(RuntimeError):
        call(policy, "GET", "/boom")  # the server answers 500 for what escapes the app
    assert metrics.requests == {
        ("GET /items/{id}", 200): 1,
        ("other", 404): 1,
        ("other", 405): 1,
        ("GET /boom", 500): 1,
    }
    assert metrics.availability(60) == 0.75


def test_operation_of_matches_routes_for_requests_answered_before_routing() -> None:
    routes = [Route("/keys/{name}", _ok, methods=["GET"])]
    scope = {"type": "http", "method": "GET", "path": "/keys/k1", "root_path": ""}
    assert operation_of(scope) == "other"
    assert operation_of(scope, routes) == "GET /keys/{name}"
    assert operation_of({**scope, "method": "PUT"}, routes) == "other"


# --- through the partition's app --------------------------------------------------------------


def scrape(api: Any) -> Samples:
    response = api.send_anonymous("GET", "/metrics")  # public: no token
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    samples, _ = parse(response.text)
    return samples


def test_metrics_is_public_and_counts_what_the_app_served(api: Any) -> None:
    created = api.client.post(url("/keys/m1/create"), json={"kty": "EC", "crv": "P-256"})
    assert created.status_code == 200, created.text
    for _ in range(3):
        signed = api.client.post(url("/keys/m1//sign"), json={})
        assert signed.status_code == 400  # no alg: answered by the handler, after routing
    body = {"alg": "ES256", "value": DIGEST}
    assert api.client.post(url("/keys/m1//sign"), json=body).status_code == 200
    assert api.send_anonymous("POST", url("/keys/m1//sign"), json=body).status_code == 401
    assert api.client.get(url("/no/such/path")).status_code == 404
    samples = scrape(api)
    total = "openmhsm_requests_total"
    assert value(samples, total, operation=CREATE, status="200") == 1
    assert value(samples, total, operation="POST /keys/{name}//sign", status="400") == 3
    assert value(samples, total, operation="POST /keys/{name}//sign", status="200") == 1
    # the 401 challenge is answered before routing and still counts under its operation
    assert value(samples, total, operation="POST /keys/{name}//sign", status="401") == 1
    assert value(samples, total, operation="other", status="404") == 1
    count = "openmhsm_request_duration_seconds_count"
    assert value(samples, count, operation="POST /keys/{name}//sign") == 5
    assert value(samples, "openmhsm_availability_ratio", window="1m") == 1.0
    assert value(samples, "openmhsm_partition_info", partition="0") == 1
    assert value(samples, "openmhsm_cache_revision") >= 1  # the create's commit
    again = scrape(api)
    assert value(again, total, operation="GET /metrics", status="200") == 1  # the first scrape


def test_cache_revision_follows_writes(api: Any) -> None:
    before = value(scrape(api), "openmhsm_cache_revision")
    api.client.post(url("/keys/m2/create"), json={"kty": "EC", "crv": "P-256"})
    assert value(scrape(api), "openmhsm_cache_revision") > before
