"""The 401 challenge, checked against the Key Vault SDK's own parser and resource check."""

from __future__ import annotations

import pytest
from azure.keyvault.keys._shared.challenge_auth_policy import _validate_challenge_resource
from azure.keyvault.keys._shared.http_challenge import HttpChallenge

from openmhsm import errors
from openmhsm.auth.challenge import (
    authority_for_host,
    bearer_token,
    challenge_header,
    normalize_host,
    resource_for_host,
)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


@pytest.mark.parametrize(
    ("host", "resource"),
    [
        ("hsm1.example.com:8443", "https://example.com:8443"),
        ("HSM1.Example.COM:8443", "https://example.com:8443"),
        ("hsm1.example.com", "https://example.com"),
        ("hsm1.example.com:443", "https://example.com"),
        ("127.0.0.1:8443", "https://0.0.1:8443"),
        ("a.b.c.d.example:1", "https://b.c.d.example:1"),
        ("localhost:8443", "https://localhost:8443"),
        ("localhost", "https://localhost"),
        ("[::1]:8443", "https://[::1]:8443"),
        ("[::1]", "https://[::1]"),
        ("[::ffff:127.0.0.1]:8443", "https://[::ffff:127.0.0.1]:8443"),
    ],
)
def test_resource_for_host(host: str, resource: str) -> None:
    assert resource_for_host(host) == resource


@pytest.mark.parametrize(
    "host",
    [
        "",
        "a,b.example",
        "a=b.example",
        'a".example',
        "a b.example",
        "hsm.example:0",
        "hsm.example:65536",
        "hsm.example:",
        "hsm.example:12a",
        "[::1",
        "[zz::1]:8443",
        "[::1]:",
        "-hsm.example",
        "hsm..example",
        "hsm.example.",
        "user@hsm.example",
        "hsm.example/path",
        "x" * 300,
    ],
)
def test_invalid_host_is_bad_request(host: str) -> None:
    with pytest.raises(errors.BadRequest) as caught:
        resource_for_host(host)
    assert host not in caught.value.message or not host


def test_normalize_and_authority() -> None:
    assert normalize_host(" HSM.Example:8443 ") == "hsm.example:8443"
    assert authority_for_host("Hsm.Example:8443") == "https://hsm.example:8443"


def _sdk_parse(url: str, header: str) -> HttpChallenge:
    challenge = HttpChallenge(url, header)
    assert challenge.is_bearer_challenge()
    return challenge


@pytest.mark.parametrize(
    "host",
    ["hsm1.example.com:8443", "127.0.0.1:8443", "hsm1.example.com", "pool.a.b.example:18443"],
)
def test_sdk_accepts_challenge(host: str) -> None:
    url = f"https://{host}/keys/k1/create?api-version=2025-07-01"
    header = challenge_header(host, authority_for_host(host), TENANT)
    challenge = _sdk_parse(url, header)
    assert challenge.get_authorization_server() == f"https://{host}/{TENANT}"
    assert challenge.tenant_id == TENANT
    assert challenge.get_resource() == resource_for_host(host)
    scope = challenge.get_scope() or challenge.get_resource() + "/.default"
    _validate_challenge_resource(scope, url)  # raises ValueError on rejection


def test_sdk_accepts_default_port_written_out() -> None:
    header = challenge_header("hsm1.example.com:443", "https://hsm1.example.com", TENANT)
    scope = _sdk_parse("https://hsm1.example.com:443/keys", header).get_resource() + "/.default"
    _validate_challenge_resource(scope, "https://hsm1.example.com:443/keys")
    _validate_challenge_resource(scope, "https://hsm1.example.com/keys")


@pytest.mark.parametrize("host", ["localhost:8443", "[::1]:8443", "[::ffff:127.0.0.1]:8443"])
def test_sdk_rejects_single_label_and_ipv6_as_documented(host: str) -> None:
    url = f"https://{host}/keys"
    header = challenge_header(host, authority_for_host(host), TENANT)
    scope = _sdk_parse(url, header).get_resource() + "/.default"
    with pytest.raises(ValueError):
        _validate_challenge_resource(scope, url)


def test_challenge_header_shape() -> None:
    header = challenge_header("hsm.example.test:8443", "https://login.example.test/", TENANT)
    assert header == (
        f'Bearer authorization="https://login.example.test/{TENANT}", '
        'resource="https://example.test:8443"'
    )
    params = header.split(" ", 1)[1].split(",")
    assert all(len(item.split("=")) == 2 for item in params)


@pytest.mark.parametrize(
    ("authority", "tenant"),
    [
        ("https://a.example,x", TENANT),
        ("https://a=b", TENANT),
        ("https://a", "t=1"),
        ("https://a", ""),
    ],
)
def test_challenge_header_rejects_unparseable_values(authority: str, tenant: str) -> None:
    with pytest.raises(ValueError):
        challenge_header("hsm.example:1", authority, tenant)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Basic abc", None),
        ("Bearer a b", None),
        ("Bearerabc", None),
        ("PoP abc", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token
