"""Client-side routing across a pool's regions (DESIGN §8): each request goes to the most preferred
healthy region, and when a region is dead or failing the same request goes at once to the next
one, so the caller sees no failure.

    router = RegionRouter([Region(url_a, ca_a), Region(url_b, ca_b)])  # nearest first
    KeyClient(url_a, credential, per_retry_policies=[RegionRoutingPolicy(router)])

`connect()` does this for every client it builds, and for the credential's token requests, when
the pool has more than one region. One router serves all the pipelines of an application, so a
region that failed one client is skipped by the others; each pipeline needs its own policy
(azure-core links a policy into one pipeline).

The policy sits after authentication (azure-core's per-retry position): the request it redirects
already carries its token, which every region of the pool accepts. It redirects only requests to
one of the regions' origins, keeps path and query, and verifies TLS with the region's CA.

A request is sent to the next region after
- a connection error before anything was sent (`ServiceRequestError`: refused, TLS, DNS): always;
- an error after the request may have reached a server (`ServiceResponseError`), or a 502, 503 or
  504 answer: only if sending it twice is harmless (`may_send_again`, or any token request). A
  write that may have been applied is not sent to another region: its caller sees what it would
  see with one region.
Either way the region is marked down. At most every `down_for` seconds afterwards, the next
request first probes it (`GET /healthz`, no credentials, `probe_timeout`) and routes to it again
once it answers 200. Only regions preferred over the one in use are probed; when every region is
down, requests are still sent, in order of preference.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import AzureError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import (
    AsyncHTTPPolicy,
    ContentDecodePolicy,
    CustomHookPolicy,
    DistributedTracingPolicy,
    HeadersPolicy,
    HttpLoggingPolicy,
    HTTPPolicy,
    NetworkTraceLoggingPolicy,
    ProxyPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest

from openmhsm.client.retry import may_send_again

DOWN_FOR = 5.0  # seconds a failed region is skipped before it is probed again
PROBE_TIMEOUT = 1.0  # seconds a health probe may take (connect, then read)
FAILOVER_STATUSES = frozenset({502, 503, 504})
HEALTH_PATH = "/healthz"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_CALLER_VERIFY = "openmhsm.routing.connection_verify"  # the caller's own, before any redirect
_UNSET = object()


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


@dataclass(frozen=True, slots=True)
class Region:
    """One region of a pool: its base URL, and the CA bundle its server certificate chains to
    (None: whatever the client verifies with anyway)."""

    url: str
    ca_cert: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"a region is an http(s) URL, not {self.url!r}")
        if parts.path.strip("/") or parts.query:
            raise ValueError(f"a region URL has no path or query: {self.url!r}")

    @property
    def origin(self) -> tuple[str, str, int]:
        return _origin(self.url)

    def rebase(self, url: str) -> str:
        """`url` with this region's scheme, host and port."""
        target, parts = urlsplit(self.url), urlsplit(url)
        return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))

    @classmethod
    def of(cls, entry: str | Region | Mapping[str, Any]) -> Region:
        """A Region from itself, a URL, or a `{"url", "ca_cert"}` mapping (as in pool.json).
        Raises ValueError for anything else."""
        if isinstance(entry, Region):
            return entry
        if isinstance(entry, str):
            return cls(entry.rstrip("/"))
        if isinstance(entry, Mapping) and isinstance(entry.get("url"), str):
            ca = entry.get("ca_cert")
            return cls(str(entry["url"]).rstrip("/"), str(ca) if ca else None)
        raise ValueError(f"a region is a URL or {{'url', 'ca_cert'}}, not {entry!r}")


class RegionRouter:
    """Which regions are up, shared by every pipeline of an application (thread-safe).

    `regions` in order of preference, nearest first; with `measure_nearest`, the first request
    probes them all once and orders them by round trip instead. Raises ValueError for no region
    or two with one origin.
    """

    def __init__(
        self,
        regions: Iterable[str | Region | Mapping[str, Any]],
        *,
        down_for: float = DOWN_FOR,
        probe_timeout: float = PROBE_TIMEOUT,
        measure_nearest: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._regions = tuple(Region.of(r) for r in regions)
        if not self._regions:
            raise ValueError("a router needs at least one region")
        if len({r.origin for r in self._regions}) != len(self._regions):
            raise ValueError("two regions have the same scheme, host and port")
        self.down_for = down_for
        self.probe_timeout = probe_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._down_until: dict[Region, float] = {}  # down regions: when they may be probed
        self._unmeasured = measure_nearest

    @property
    def regions(self) -> tuple[Region, ...]:
        """All regions, most preferred first."""
        return self._regions

    def region_of(self, url: str) -> Region | None:
        """The region serving `url`'s origin, if any (other requests are not routed)."""
        origin = _origin(url)
        return next((r for r in self._regions if r.origin == origin), None)

    def is_down(self, region: Region) -> bool:
        return region in self._down_until

    def candidates(self) -> list[Region]:
        """Where to send a request, in turn: the regions up, then those down, by preference."""
        with self._lock:
            up = [r for r in self._regions if r not in self._down_until]
            return up + [r for r in self._regions if r in self._down_until]

    def due_probes(self) -> list[Region]:
        """The down regions preferred over the first region up whose probe time has come; each
        is not due again for `down_for` seconds (so one caller probes it, not all of them)."""
        now = self._clock()
        due: list[Region] = []
        with self._lock:
            for region in self._regions:
                until = self._down_until.get(region)
                if until is None:
                    break
                if now >= until:
                    self._down_until[region] = now + self.down_for
                    due.append(region)
        return due

    def mark_down(self, region: Region) -> None:
        with self._lock:
            self._down_until[region] = self._clock() + self.down_for

    def mark_up(self, region: Region) -> None:
        if region in self._down_until:
            with self._lock:
                self._down_until.pop(region, None)

    def claim_measurement(self) -> bool:
        """True once, for the caller that is to measure the regions (`measure_nearest`)."""
        with self._lock:
            claimed, self._unmeasured = self._unmeasured, False
            return claimed

    def rank(self, round_trips: Mapping[Region, float | None]) -> None:
        """Order the regions by measured round trip; those that did not answer (None) go last,
        marked down."""
        with self._lock:
            answered = sorted(
                (r for r in self._regions if round_trips.get(r) is not None),
                key=lambda r: round_trips[r] or 0.0,
            )
            silent = [r for r in self._regions if round_trips.get(r) is None]
            self._regions = (*answered, *silent)
            for region in silent:
                self._down_until[region] = self._clock() + self.down_for


def _aim(request: PipelineRequest[Any], region: Region) -> None:
    """Point `request` at `region`, verifying TLS with its CA (else with the caller's setting)."""
    request.http_request.url = region.rebase(request.http_request.url)
    context, options = request.context, request.context.options
    if _CALLER_VERIFY not in context:
        context[_CALLER_VERIFY] = options.get("connection_verify", _UNSET)
    verify = region.ca_cert if region.ca_cert is not None else context[_CALLER_VERIFY]
    if verify is _UNSET:
        options.pop("connection_verify", None)
    else:
        options["connection_verify"] = verify


def _probe_request(router: RegionRouter, region: Region) -> tuple[HttpRequest, dict[str, Any]]:
    options: dict[str, Any] = {
        "connection_timeout": router.probe_timeout,
        "read_timeout": router.probe_timeout,
    }
    if region.ca_cert is not None:
        options["connection_verify"] = region.ca_cert
    return HttpRequest("GET", region.url + HEALTH_PATH), options


class _Failover:
    """What to do after one region failed a request: mark it down, then go on or give up."""

    def __init__(
        self, router: RegionRouter, request: PipelineRequest[Any], resend_any: bool
    ) -> None:
        http = request.http_request
        self.router = router
        self.resendable = resend_any or may_send_again(http.method, http.url)

    def after_error(self, region: Region, error: AzureError, last: bool) -> bool:
        """True to send to the next region, False to raise `error`."""
        if not isinstance(error, ServiceRequestError | ServiceResponseError):
            return False
        self.router.mark_down(region)
        return not last and (isinstance(error, ServiceRequestError) or self.resendable)

    def after_response(self, region: Region, status: int, last: bool) -> bool:
        """True to send to the next region, False to return the response."""
        if status not in FAILOVER_STATUSES:
            self.router.mark_up(region)
            return False
        self.router.mark_down(region)
        return not last and self.resendable


class RegionRoutingPolicy(HTTPPolicy[Any, Any]):
    """Sends each request to the most preferred healthy region of `router` and fails over to the
    next (module docstring). Install it in the per-retry position (`per_retry_policies=[...]`):
    after authentication. `resend_any=True` is for token requests, which are harmless to send
    twice; other POSTs are sent again only if they are idempotent."""

    def __init__(self, router: RegionRouter, *, resend_any: bool = False) -> None:
        super().__init__()
        self.router = router
        self.resend_any = resend_any

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if self.router.region_of(request.http_request.url) is None:
            return self.next.send(request)
        self._refresh(request.context.transport)
        failover = _Failover(self.router, request, self.resend_any)
        candidates = self.router.candidates()
        for n, region in enumerate(candidates):
            last = n == len(candidates) - 1
            _aim(request, region)
            try:
                response = self.next.send(request)
            except AzureError as error:
                if failover.after_error(region, error, last):
                    continue
                raise
            if not failover.after_response(region, response.http_response.status_code, last):
                return response
        raise AssertionError("unreachable: the last candidate returns or raises")

    def _refresh(self, transport: Any) -> None:
        """Measure the regions once if asked to, and probe the preferred ones that are due."""
        if transport is None:
            return
        if self.router.claim_measurement():
            self.router.rank({r: self._round_trip(transport, r) for r in self.router.regions})
        for region in self.router.due_probes():
            if self._round_trip(transport, region) is not None:
                self.router.mark_up(region)

    def _round_trip(self, transport: Any, region: Region) -> float | None:
        """Seconds `GET /healthz` took, or None if it failed or did not answer 200."""
        request, options = _probe_request(self.router, region)
        started = time.monotonic()
        try:
            response = transport.send(request, **options)
        except AzureError:
            return None
        return time.monotonic() - started if response.status_code == 200 else None


class AsyncRegionRoutingPolicy(AsyncHTTPPolicy[Any, Any]):
    """`RegionRoutingPolicy` for the SDKs' `aio` clients (same router, same rules)."""

    def __init__(self, router: RegionRouter, *, resend_any: bool = False) -> None:
        super().__init__()
        self.router = router
        self.resend_any = resend_any

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if self.router.region_of(request.http_request.url) is None:
            return await self.next.send(request)
        await self._refresh(request.context.transport)
        failover = _Failover(self.router, request, self.resend_any)
        candidates = self.router.candidates()
        for n, region in enumerate(candidates):
            last = n == len(candidates) - 1
            _aim(request, region)
            try:
                response = await self.next.send(request)
            except AzureError as error:
                if failover.after_error(region, error, last):
                    continue
                raise
            if not failover.after_response(region, response.http_response.status_code, last):
                return response
        raise AssertionError("unreachable: the last candidate returns or raises")

    async def _refresh(self, transport: Any) -> None:
        if transport is None:
            return
        if self.router.claim_measurement():
            trips = {r: await self._round_trip(transport, r) for r in self.router.regions}
            self.router.rank(trips)
        for region in self.router.due_probes():
            if await self._round_trip(transport, region) is not None:
                self.router.mark_up(region)

    async def _round_trip(self, transport: Any, region: Region) -> float | None:
        request, options = _probe_request(self.router, region)
        started = time.monotonic()
        try:
            response = await transport.send(request, **options)
        except AzureError:
            return None
        return time.monotonic() - started if response.status_code == 200 else None


def credential_policies(router: RegionRouter) -> list[Any]:
    """The pipeline of an azure-identity credential (its `policies=` argument) with token
    requests routed: azure-identity's own list, with the routing policy after the retry policy."""
    return [
        RequestIdPolicy(),
        HeadersPolicy(),
        UserAgentPolicy(),
        ProxyPolicy(),
        ContentDecodePolicy(),
        RetryPolicy(),
        RegionRoutingPolicy(router, resend_any=True),
        CustomHookPolicy(),
        NetworkTraceLoggingPolicy(),
        DistributedTracingPolicy(),
        HttpLoggingPolicy(),
    ]


def routing_policies(router: RegionRouter | None) -> Sequence[RegionRoutingPolicy]:
    """The `per_retry_policies` of one client: a new routing policy, or none without a router."""
    return [] if router is None else [RegionRoutingPolicy(router)]
