"""`openmhsm.client.routing`: which region a request goes to, and when it goes to the next one.

No sockets: the regions are a fake `requests` adapter (the seam azure-core's RequestsTransport
sends through), so azure-core's own error mapping, the Key Vault challenge and azure-identity's
token requests all run for real. A region is `up` (a tiny Key Vault and token issuer), `refused`
(nothing was sent), `aborted` (the connection died after the request went out) or a status.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline import AsyncPipeline, Pipeline
from azure.core.pipeline.transport import AsyncHttpTransport, RequestsTransport
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyClient
from cryptography.hazmat.primitives.asymmetric import ec
from urllib3.exceptions import ProtocolError

from openmhsm.auth.challenge import resource_for_host
from openmhsm.client import (
    AsyncRegionRoutingPolicy,
    Region,
    RegionRouter,
    RegionRoutingPolicy,
    connect,
    regions_of,
)

A = "https://127.0.0.1:18443"
B = "https://127.0.0.1:18444"
OTHER = "https://127.0.0.1:19999"
TENANT = "00000000-0000-0000-0000-000000000001"
DOWN_FOR = 5.0
PUBLIC_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    verify: Any
    timeout: Any

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


@dataclass
class FakeRegions(requests.adapters.BaseAdapter):
    state: dict[str, str | int] = field(default_factory=dict)  # origin → "up" (default), ...
    sent: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
        verify: Any = True, cert: Any = None, proxies: Any = None,
    ) -> requests.Response:  # fmt: skip
        sent = Sent(str(request.method), str(request.url), dict(request.headers), verify, timeout)
        self.sent.append(sent)
        state = self.state.get(sent.origin, "up")
        if state == "refused":
            raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
        if state == "aborted":
            raise requests.exceptions.ConnectionError(ProtocolError("Connection aborted."))
        if isinstance(state, int):
            return respond(request, state, {"error": {"code": "ServiceUnavailable"}})
        return answer(request, sent)

    def close(self) -> None:
        return None

    def to(self, origin: str) -> list[Sent]:
        return [s for s in self.sent if s.origin == origin]

    def calls(self) -> list[tuple[str, str, str]]:
        """(origin, method, path) of each request that was not a health probe."""
        return [(s.origin, s.method, s.path) for s in self.sent if s.path != "/healthz"]


def respond(
    request: requests.PreparedRequest,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = "OK" if status == 200 else "Error"
    response.headers.update({"Content-Type": "application/json", **(headers or {})})
    content = json.dumps(body).encode()
    response.raw = urllib3.HTTPResponse(io.BytesIO(content), status=status, preload_content=False)
    response._content = content
    response._content_consumed = True
    response.url = str(request.url)
    response.request = request
    return response


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def answer(request: requests.PreparedRequest, sent: Sent) -> requests.Response:
    """A region that is up: health, the token issuer, and a key `k` that signs."""
    netloc = urlsplit(sent.url).netloc
    path = sent.path
    if path == "/healthz":
        return respond(request, 200, {"status": "ok"})
    if path.endswith("/.well-known/openid-configuration"):
        base = f"https://{netloc}/{TENANT}"
        return respond(
            request,
            200,
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
            },
        )
    if path.endswith("/oauth2/v2.0/token"):
        token = f"token-from-{netloc}"
        return respond(
            request, 200, {"token_type": "Bearer", "expires_in": 3600, "access_token": token}
        )
    if "Authorization" not in sent.headers:
        challenge = (
            f'Bearer authorization="https://{netloc}/{TENANT}", '
            f'resource="{resource_for_host(netloc)}"'
        )
        return respond(request, 401, {}, {"WWW-Authenticate": challenge})
    kid = f"https://{netloc}/keys/k/v1"
    if path.endswith("/sign"):
        return respond(request, 200, {"kid": kid, "value": b64(b"\x01" * 64)})
    if request.method == "GET" and path.startswith("/keys/k"):
        point = PUBLIC_KEY.public_numbers()
        jwk = {"kid": kid, "kty": "EC", "crv": "P-256", "key_ops": ["sign", "verify"]}
        jwk |= {"x": b64(point.x.to_bytes(32, "big")), "y": b64(point.y.to_bytes(32, "big"))}
        attributes = {"enabled": True, "created": 1700000000, "updated": 1700000000}
        return respond(request, 200, {"key": jwk, "attributes": attributes})
    return respond(request, 200, {})


@pytest.fixture
def regions(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRegions]:
    """Every requests session sends to the fake regions, and no socket is opened."""
    fake = FakeRegions()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(requests.Session, "get_adapter", lambda session, url: fake)
    yield fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def router(clock: Clock) -> RegionRouter:
    return RegionRouter([Region(A, "ca-a.pem"), Region(B, "ca-b.pem")], clock=clock)


def send(router: RegionRouter, method: str, url: str, *, resend_any: bool = False) -> int:
    pipeline = Pipeline(RequestsTransport(), [RegionRoutingPolicy(router, resend_any=resend_any)])
    request = HttpRequest(method, url, json={}, headers={"Authorization": "Bearer t"})
    with pipeline:
        return pipeline.run(request).http_response.status_code


def test_requests_go_to_the_preferred_region_with_its_ca(
    regions: FakeRegions, router: RegionRouter
) -> None:
    assert send(router, "GET", f"{A}/keys/k?api-version=7.5") == 200
    assert [(s.url, s.verify) for s in regions.sent] == [
        (f"{A}/keys/k?api-version=7.5", "ca-a.pem")
    ]


def test_a_request_to_another_region_is_redirected_to_the_preferred_one(
    regions: FakeRegions, router: RegionRouter
) -> None:
    send(router, "GET", f"{B}/keys/k/v1?api-version=7.5")  # a key id the other region returned
    assert [(s.url, s.verify) for s in regions.sent] == [
        (f"{A}/keys/k/v1?api-version=7.5", "ca-a.pem")
    ]


def test_requests_to_other_hosts_are_left_alone(regions: FakeRegions, router: RegionRouter) -> None:
    regions.state[A] = "refused"
    send(router, "GET", f"{OTHER}/x")
    assert [s.url for s in regions.sent] == [f"{OTHER}/x"]
    assert regions.sent[0].verify not in ("ca-a.pem", "ca-b.pem")
    assert not router.is_down(router.regions[0])


def test_a_refused_region_fails_over_at_once_and_is_skipped_for_a_while(
    regions: FakeRegions, router: RegionRouter, clock: Clock
) -> None:
    regions.state[A] = "refused"
    assert send(router, "GET", f"{A}/keys/k") == 200
    assert regions.calls() == [(A, "GET", "/keys/k"), (B, "GET", "/keys/k")]
    assert regions.sent[-1].verify == "ca-b.pem"
    regions.sent.clear()
    clock.now += DOWN_FOR - 0.1
    send(router, "GET", f"{A}/keys/k")
    assert [s.origin for s in regions.sent] == [B]  # not even probed yet


def test_the_preferred_region_is_probed_and_used_again_once_healthy(
    regions: FakeRegions, router: RegionRouter, clock: Clock
) -> None:
    regions.state[A] = "refused"
    send(router, "GET", f"{A}/keys/k")
    regions.sent.clear()
    regions.state[A] = "up"
    clock.now += DOWN_FOR
    send(router, "GET", f"{A}/keys/k")
    probe, request = regions.sent
    assert (probe.method, probe.url, probe.verify) == ("GET", f"{A}/healthz", "ca-a.pem")
    assert "Authorization" not in probe.headers
    assert probe.timeout == (router.probe_timeout, router.probe_timeout)
    assert (request.origin, request.path) == (A, "/keys/k")


def test_a_failed_probe_keeps_the_region_down_until_the_next_probe(
    regions: FakeRegions, router: RegionRouter, clock: Clock
) -> None:
    regions.state[A] = "refused"
    send(router, "GET", f"{A}/keys/k")
    clock.now += DOWN_FOR
    regions.sent.clear()
    send(router, "GET", f"{A}/keys/k")
    assert [(s.origin, s.path) for s in regions.sent] == [(A, "/healthz"), (B, "/keys/k")]
    regions.sent.clear()
    clock.now += DOWN_FOR / 2
    send(router, "GET", f"{A}/keys/k")  # no second probe within `down_for`
    assert [(s.origin, s.path) for s in regions.sent] == [(B, "/keys/k")]


@pytest.mark.parametrize("status", [502, 503, 504])
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/keys/k"), ("POST", "/keys/k/v1/sign"), ("PUT", "/keys/k")]
)
def test_gateway_statuses_fail_over_requests_safe_to_send_twice(
    regions: FakeRegions, router: RegionRouter, status: int, method: str, path: str
) -> None:
    regions.state[A] = status
    assert send(router, method, f"{A}{path}") == 200
    assert regions.calls() == [(A, method, path), (B, method, path)]
    assert router.is_down(router.regions[0])


def test_an_aborted_idempotent_post_fails_over(regions: FakeRegions, router: RegionRouter) -> None:
    regions.state[A] = "aborted"
    assert send(router, "POST", f"{A}/keys/k//decrypt") == 200
    assert regions.calls() == [(A, "POST", "/keys/k//decrypt"), (B, "POST", "/keys/k//decrypt")]


def test_a_post_that_may_have_been_applied_is_not_sent_to_another_region(
    regions: FakeRegions, router: RegionRouter
) -> None:
    regions.state[A] = "aborted"
    with pytest.raises(ServiceResponseError):
        send(router, "POST", f"{A}/keys/restore")
    assert regions.calls() == [(A, "POST", "/keys/restore")]
    assert router.is_down(router.regions[0])  # the next request goes to B

    regions.state[B] = 503
    assert send(router, "POST", f"{A}/keys/restore") == 503
    assert regions.calls()[1:] == [(B, "POST", "/keys/restore")]


def test_a_post_that_was_never_sent_fails_over(regions: FakeRegions, router: RegionRouter) -> None:
    regions.state[A] = "refused"
    assert send(router, "POST", f"{A}/keys/restore") == 200
    assert regions.calls() == [(A, "POST", "/keys/restore"), (B, "POST", "/keys/restore")]


def test_token_requests_may_always_be_sent_again(
    regions: FakeRegions, router: RegionRouter
) -> None:
    regions.state[A] = "aborted"
    path = f"/{TENANT}/oauth2/v2.0/token"
    assert send(router, "POST", f"{A}{path}", resend_any=True) == 200
    assert regions.calls() == [(A, "POST", path), (B, "POST", path)]


def test_with_every_region_down_the_last_error_is_raised_and_all_are_tried_again(
    regions: FakeRegions, router: RegionRouter
) -> None:
    regions.state[A] = regions.state[B] = "refused"
    with pytest.raises(ServiceRequestError):
        send(router, "GET", f"{A}/keys/k")
    regions.sent.clear()
    regions.state[B] = "up"
    assert send(router, "GET", f"{A}/keys/k") == 200  # both down: still sent, by preference
    assert regions.calls() == [(A, "GET", "/keys/k"), (B, "GET", "/keys/k")]
    assert not router.is_down(router.regions[1])


def test_measure_nearest_puts_a_silent_region_last(regions: FakeRegions, clock: Clock) -> None:
    regions.state[A] = "refused"
    router = RegionRouter([A, B], measure_nearest=True, clock=clock)
    send(router, "GET", f"{A}/keys/k")
    assert [r.url for r in router.regions] == [B, A]
    assert regions.calls() == [(B, "GET", "/keys/k")]
    assert {s.origin for s in regions.sent if s.path == "/healthz"} == {A, B}


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("the-token", 2**31)


def test_the_sdk_fails_over_with_its_token_after_the_challenge(
    regions: FakeRegions, router: RegionRouter
) -> None:
    regions.state[A] = "refused"
    policy = RegionRoutingPolicy(router)
    with KeyClient(A, FakeCredential(), per_retry_policies=[policy]) as keys:  # type: ignore[arg-type]
        assert keys.get_key("k").name == "k"
    challenged, authorized = regions.to(B)
    assert "Authorization" not in challenged.headers
    assert authorized.headers["Authorization"] == "Bearer the-token"


def pool_doc(tmp_path: Path, regions: list[Any]) -> dict[str, Any]:
    return {
        "name": "local",
        "url": A,
        "ca_cert": str(tmp_path / "ca-a.pem"),
        "tenant_id": TENANT,
        "authority": A,
        "admin": {"client_id": "admin-id", "client_secret": "s3cret"},
        "regions": regions,
    }


def test_connect_routes_tokens_keys_and_crypto(regions: FakeRegions, tmp_path: Path) -> None:
    doc = pool_doc(tmp_path, [A, {"url": B, "ca_cert": "ca-b.pem"}])
    regions.state[A] = "refused"
    with connect(doc) as clients:
        key = clients.key_client.get_key("k")
        clients.crypto(key).sign("ES256", b"\x00" * 32)
        clients.key_operation("k", "sign", {"alg": "ES256", "value": b64(b"\x00" * 32)})
    served = [(s.method, s.path) for s in regions.to(B)]
    assert ("POST", f"/{TENANT}/oauth2/v2.0/token") in served  # the credential failed over too
    assert served.count(("POST", "/keys/k/v1/sign")) == 1
    assert served.count(("POST", "/keys/k//sign")) == 1
    assert {s.verify for s in regions.to(B)} == {"ca-b.pem"}
    assert len(regions.to(A)) == 1  # refused once, then skipped by every client (one router)


def test_connect_without_regions_does_not_route(regions: FakeRegions, tmp_path: Path) -> None:
    doc = pool_doc(tmp_path, [])
    assert connect(doc).router is None
    assert connect({**doc, "regions": [A]}).router is None
    assert connect(doc, regions=[A, B]).router is not None


def test_regions_of_reads_pool_json(tmp_path: Path) -> None:
    doc = pool_doc(tmp_path, [f"{B}/", A])
    own = Region(A, str(tmp_path / "ca-a.pem"))
    assert regions_of(doc) == [own, Region(B)]  # the pool read is the nearest
    assert regions_of(doc, [B, A]) == [Region(B), own]  # an explicit order is kept
    assert regions_of(doc, [A]) == [own]
    assert regions_of({**doc, "regions": None}) == [own]
    ca = {"url": B, "ca_cert": "ca-b.pem"}
    assert regions_of({**doc, "regions": [A, ca]})[1] == Region(B, "ca-b.pem")


@pytest.mark.parametrize(
    "bad",
    [[B], "https://127.0.0.1:18443", [A, 42], [A, {"ca_cert": "x"}], [A, "ftp://x"], [A, A]],
)
def test_regions_of_rejects_malformed_lists(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError):
        RegionRouter(regions_of(pool_doc(tmp_path, bad)))


def test_a_region_is_an_origin() -> None:
    with pytest.raises(ValueError, match="no path"):
        Region(f"{A}/keys")
    assert Region(A).rebase("https://h:1/keys/k?api-version=1") == f"{A}/keys/k?api-version=1"
    assert Region("https://h").origin == Region("https://H:443/").origin


class FakeAsyncResponse:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class FakeAsyncTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    def __init__(self, state: dict[str, str | int]) -> None:
        self.state = state
        self.sent: list[tuple[str, str]] = []

    async def send(self, request: Any, **kwargs: Any) -> Any:
        parts = urlsplit(request.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        self.sent.append((origin, parts.path))
        state = self.state.get(origin, 200)
        if state == "refused":
            raise ServiceRequestError("connection refused")
        return FakeAsyncResponse(int(state))

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aexit__(self, *args: object) -> None:
        return None


def test_the_async_policy_follows_the_same_rules(router: RegionRouter, clock: Clock) -> None:
    transport = FakeAsyncTransport({A: "refused"})

    async def run(url: str) -> int:
        pipeline = AsyncPipeline(transport, [AsyncRegionRoutingPolicy(router)])
        response = await pipeline.run(HttpRequest("GET", url))
        return int(response.http_response.status_code)

    assert asyncio.run(run(f"{A}/keys/k")) == 200
    transport.state[A] = 200
    clock.now += DOWN_FOR
    assert asyncio.run(run(f"{A}/keys/k")) == 200
    assert transport.sent == [(A, "/keys/k"), (B, "/keys/k"), (A, "/healthz"), (A, "/keys/k")]
