"""The region gate: an extended region serves reads and crypto from its replica and sends every
write, and every poll of a long-running operation, on to its primary, whose answer comes back as
it was; the primary marks answers to forwarded requests with the revision it wrote.

Two unit stacks do not share a security domain, so the relay below lets the primary's client add
its own token; a real pair of regions shares the token key (tests/integration)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Sequence
from typing import Any

import pytest
from unit_stack import ApiHarness

from openmhsm.api.app import build_app
from openmhsm.api.region_forward import goes_to_primary, is_read
from openmhsm.region.forwarder import FORWARDED_HEADER, NOT_FORWARDED, REVISION_HEADER, Answer

API = "api-version=2025-07-01"
PRIMARY = "https://primary.example:8443"
DIGEST = base64.urlsafe_b64encode(hashlib.sha256(b"m").digest()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("method", "path", "read"),
    [
        ("GET", "/keys/k/", True),
        ("HEAD", "/keys", True),
        ("POST", "/keys/k/v1/sign", True),
        ("POST", "/keys/k//decrypt", True),
        ("POST", "/keys/k/v1/unwrapkey", True),
        ("POST", "/keys/k/v1/release", True),
        ("POST", "/rng", True),
        ("POST", "/keys/sign/create", False),
        ("POST", "/keys/k/rotate", False),
        ("PUT", "/keys/sign", False),
        ("PATCH", "/keys/k/", False),
        ("DELETE", "/keys/k", False),
        ("POST", "/securitydomain/download", False),
        ("POST", "/backup", False),
    ],
)
def test_what_counts_as_a_read(method: str, path: str, read: bool) -> None:
    assert is_read(method, path) is read
    assert goes_to_primary(method, path) is not read


@pytest.mark.parametrize(
    "path",
    ["/backup/j1/pending", "/restore/j1/pending", "/openmhsm/jobs", "/securitydomain/upload"],
)
def test_polls_of_the_primarys_operations_go_there_too(path: str) -> None:
    assert goes_to_primary("GET", path)


class Relay:
    """Sends what the gate forwards to the primary harness (in its own event loop)."""

    def __init__(self, primary: ApiHarness) -> None:
        self.primary = primary
        self.sent: list[tuple[str, str, dict[str, str]]] = []

    async def send(
        self, primary_url: str, method: str, target: str, headers: Sequence[tuple[str, str]],
        body: bytes,
    ) -> Answer:  # fmt: skip
        assert primary_url == PRIMARY
        kept = {k: v for k, v in headers if k.lower() not in {*NOT_FORWARDED, "authorization"}}
        kept[FORWARDED_HEADER] = "1"
        self.sent.append((method, target, kept))
        response = await asyncio.to_thread(
            self.primary.client.request, method, target, headers=kept, content=body
        )
        return Answer(response.status_code, list(response.headers.multi_items()), response.content)


def extended(api: ApiHarness, relay: Relay | None) -> ApiHarness:
    """`api` served as an extended region of PRIMARY."""
    api.stack.ctx.forwards_to = lambda: PRIMARY
    api.stack.ctx.forwarder = relay
    api.client.app.app = build_app(api.stack.ctx)  # type: ignore[attr-defined]
    return api


def test_writes_go_to_the_primary_and_its_answer_comes_back(make_api: Any) -> None:
    primary, region = make_api(), make_api()
    relay = Relay(primary)
    extended(region, relay)
    created = region.client.post(f"/keys/k1/create?{API}", json={"kty": "EC-HSM"})
    assert created.status_code == 200, created.text
    assert created.json()["key"]["kid"].startswith("https://")
    assert primary.client.get(f"/keys/k1/?{API}").status_code == 200  # made in the primary
    assert region.client.get(f"/keys/k1/?{API}").status_code == 404  # not replicated here
    method, target, headers = relay.sent[0]
    assert (method, target) == ("POST", f"/keys/k1/create?{API}")
    assert headers["content-type"] == "application/json"
    refused = region.client.post(f"/keys/k1/create?{API}", json={"kty": "nonsense"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "BadParameter"


def test_the_primary_marks_answers_to_forwarded_requests_with_its_last_write(api: Any) -> None:
    plain = api.client.post(f"/keys/k/create?{API}", json={"kty": "EC-HSM"})
    assert REVISION_HEADER not in plain.headers
    forwarded = api.client.post(
        f"/keys/k2/create?{API}", json={"kty": "EC-HSM"}, headers={FORWARDED_HEADER: "1"}
    )
    assert int(forwarded.headers[REVISION_HEADER]) == api.stack.view.last_write > 0


def test_reads_and_crypto_are_served_from_the_replica(make_api: Any) -> None:
    primary, region = make_api(), make_api()
    region.client.post(f"/keys/k/create?{API}", json={"kty": "EC-HSM", "crv": "P-256"})
    relay = Relay(primary)
    extended(region, relay)
    assert region.client.get(f"/keys/k/?{API}").status_code == 200
    signed = region.client.post(f"/keys/k//sign?{API}", json={"alg": "ES256", "value": DIGEST})
    assert signed.status_code == 200, signed.text
    assert relay.sent == []


def test_without_a_forwarder_writes_are_refused_with_read_only_region(api: Any) -> None:
    extended(api, None)
    refused = api.client.post(f"/keys/after/create?{API}", json={"kty": "EC-HSM"})
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["innererror"]["code"] == "ReadOnlyRegion" and PRIMARY in error["message"]


def test_a_stranger_is_challenged_before_the_gate(make_api: Any) -> None:
    primary, region = make_api(), make_api()
    relay = Relay(primary)
    extended(region, relay)
    response = region.send_anonymous("POST", f"/keys/k/create?{API}", json={"kty": "EC-HSM"})
    assert response.status_code == 401 and relay.sent == []


def test_a_body_too_large_is_refused_before_forwarding(make_api: Any) -> None:
    primary, region = make_api(), make_api()
    relay = Relay(primary)
    extended(region, relay)
    response = region.client.post(f"/keys/k/create?{API}", content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413 and relay.sent == []
