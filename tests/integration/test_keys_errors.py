"""Bad parameters on the keys data plane: malformed JSON, unknown key types, curves and sizes,
bad base64url, invalid names, out-of-range counts and page sizes, bad api-versions. Each is a 400
(or 404/405 for paths and methods) with Key Vault's error shape, never a 5xx."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from keys_support import API, assert_kv_error, b64int, b64u, send_json, unb64u

if TYPE_CHECKING:
    pass


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{", "truncated"),
        (b"{'kty': 'EC-HSM'}", "single quotes"),
        (b'{"kty": "EC-HSM",}', "trailing comma"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "array"),
        (b'"EC-HSM"', "string"),
        (b"42", "number"),
        (b"null", "null"),
        (b"", "empty"),
        (b"[" * 100_000 + b"]" * 100_000, "deeply nested"),
        (b'{"kty": "EC-HSM", "tags": {"\\ud800": "x"}}', "lone surrogate"),
    ],
)
def test_malformed_json_is_bad_parameter(http: httpx.Client, content: bytes, why: str) -> None:
    r = http.post(
        "/keys/malformed/create",
        params=API,
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert assert_kv_error(r, 400)["code"] == "BadParameter", why


@pytest.mark.parametrize(
    "body",
    [
        {"kty": "DSA"},
        {"kty": "rsa-hsm"},
        {"kty": None},
        {},
        {"kty": "EC-HSM", "crv": "P-192"},
        {"kty": "EC-HSM", "crv": "p-256"},
        {"kty": "EC-HSM", "key_size": 256},
        {"kty": "RSA-HSM", "key_size": 1024},
        {"kty": "RSA-HSM", "key_size": 2047},
        {"kty": "RSA-HSM", "key_size": "2048"},
        {"kty": "RSA-HSM", "key_size": 10**40},
        {"kty": "RSA-HSM", "public_exponent": 65538},
        {"kty": "RSA-HSM", "public_exponent": 10**400},
        {"kty": "RSA-HSM", "crv": "P-256"},
        {"kty": "oct-HSM", "key_size": 512},
        {"kty": "oct-HSM", "key_size": 64},
        {"kty": "EC-HSM", "key_ops": ["fly"]},
        {"kty": "EC-HSM", "key_ops": "sign"},
        {"kty": "EC-HSM", "attributes": {"nbf": "yesterday"}},
        {"kty": "EC-HSM", "attributes": {"exp": -1}},
        {"kty": "EC-HSM", "attributes": {"enabled": "yes"}},
        {"kty": "EC-HSM", "attributes": {"exportable": True}},
        {"kty": "EC-HSM", "tags": {"k": 1}},
        {"kty": "EC-HSM", "tags": {f"t{i}": "v" for i in range(16)}},
        {"kty": "EC-HSM", "tags": ["a"]},
    ],
    ids=lambda b: json.dumps(b)[:60],
)
def test_bad_create_parameters(http: httpx.Client, body: dict[str, Any]) -> None:
    r = send_json(http, "POST", "/keys/bad-create/create", body)
    assert_kv_error(r, 400)


def test_bad_import_parameters(http: httpx.Client) -> None:
    private = rsa.generate_private_key(65537, 2048).private_numbers()
    good = {
        "kty": "RSA",
        "n": b64int(private.public_numbers.n),
        "e": b64int(private.public_numbers.e),
        "d": b64int(private.d),
    }
    cases: list[Any] = [
        {},
        {"key": None},
        {"key": "jwk"},
        {"key": {"kty": "RSA"}},
        {"key": {**good, "n": "!!!not base64url!!!"}},
        {"key": {**good, "n": "AQAB+/=="}},
        {"key": {**good, "d": None}},
        {"key": {**good, "kty": "XYZ"}},
        {"key": {**good, "p": b64int(3), "q": b64int(5)}},
        {"key": {**good, "e": b64int(4)}},
        {
            "key": {
                "kty": "EC",
                "crv": "P-256",
                "x": b64u(bytes(32)),
                "y": b64u(bytes(32)),
                "d": b64u(bytes(32)),
            }
        },
        {"key": {"kty": "EC", "crv": "P-999", "d": b64u(bytes(32))}},
        {"key": {"kty": "oct", "k": b64u(bytes(20))}},
        {"key": {"kty": "oct"}},
        {"key": good, "Hsm": "yes"},
    ]
    for body in cases:
        assert_kv_error(send_json(http, "PUT", "/keys/bad-import", body), 400)


def test_bad_base64url_in_operations(http: httpx.Client) -> None:
    r = send_json(http, "POST", "/keys/b64-target/create", {"kty": "EC-HSM"})
    assert r.status_code == 200, r.text
    for value in ("+/+/", "a", "AAAA=", "AA=A", "AA AA", "é", 12, None, ["AA"]):
        r = send_json(http, "POST", "/keys/b64-target//sign", {"alg": "ES256", "value": value})
        assert_kv_error(r, 400)
    assert_kv_error(send_json(http, "POST", "/keys/restore", {"value": "$$$"}), 400)


@pytest.mark.parametrize("name", ["a_b", "a" * 128, "a.b", "caf%C3%A9", "a%20b", "%2e%2e"])
def test_invalid_key_names(http: httpx.Client, name: str) -> None:
    r = http.post(f"/keys/{name}/create", params=API, json={"kty": "EC-HSM"})
    assert assert_kv_error(r, 400)["code"] == "BadParameter"
    assert_kv_error(http.get(f"/keys/{name}/", params=API), 400)


def test_empty_key_name_is_rejected(http: httpx.Client) -> None:
    r = http.post("/keys//create", params=API, json={"kty": "EC-HSM"})
    assert_kv_error(r)
    assert r.status_code in (400, 404), r.text


def test_name_of_127_characters_is_valid(http: httpx.Client) -> None:
    name = "N" + "-" * 125 + "9"
    r = http.post(f"/keys/{name}/create", params=API, json={"kty": "EC-HSM"})
    assert r.status_code == 200, r.text
    assert r.json()["key"]["kid"].split("/")[4] == name


@pytest.mark.parametrize("count", [0, 129, -5, 2**63, 1.5, "16", True, None, [16]])
def test_rng_count_out_of_range(http: httpx.Client, count: Any) -> None:
    assert_kv_error(send_json(http, "POST", "/rng", {"count": count}), 400)


def test_rng_bounds(http: httpx.Client) -> None:
    for count in (1, 128):
        r = send_json(http, "POST", "/rng", {"count": count})
        assert r.status_code == 200 and len(unb64u(r.json()["value"])) == count


@pytest.mark.parametrize("path", ["/keys", "/deletedkeys", "/keys/paged/versions"])
def test_maxresults_range(http: httpx.Client, path: str) -> None:
    assert send_json(http, "POST", "/keys/paged/create", {"kty": "EC-HSM"}).status_code == 200
    for value in ("0", "26", "-1", "abc", "1.5", "", "99999999999999999999"):
        r = http.get(path, params={**API, "maxresults": value})
        assert_kv_error(r, 400)
    for value in ("1", "25"):
        assert http.get(path, params={**API, "maxresults": value}).status_code == 200
    for token in ("!!!", b64u(b"\xff\xfe"), "A" * 5000, "%00"):
        r = http.get(path, params={**API, "$skiptoken": token})
        assert r.status_code in (200, 400), r.text
        if r.status_code == 400:
            assert_kv_error(r)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"api-version": ""},
        {"api-version": "1.0"},
        {"api-version": "7.7"},
        {"api-version": "2025-07-01x"},
        {"api-version": "x" * 5000},
    ],
)
def test_bad_api_version(http: httpx.Client, params: dict[str, str]) -> None:
    r = http.get("/keys", params=params)
    assert_kv_error(r, 400)
    r = http.post("/keys/api-version/create", params=params, json={"kty": "EC-HSM"})
    assert_kv_error(r, 400)


@pytest.mark.parametrize("version", ["7.0", "7.4", "7.5", "7.6", "2016-10-01", "2025-07-01"])
def test_known_api_versions(http: httpx.Client, version: str) -> None:
    assert http.get("/keys", params={"api-version": version}).status_code == 200


def test_unknown_path_and_method(http: httpx.Client) -> None:
    assert_kv_error(http.get("/nothing-here", params=API), 404)
    assert_kv_error(http.get("/keys/a/b/c/d", params=API), 404)
    assert_kv_error(http.delete("/keys/x/create", params=API), 405)
    assert_kv_error(http.put("/rng", params=API, json={"count": 1}), 405)


def test_release_and_attestation_are_not_5xx(http: httpx.Client) -> None:
    assert send_json(http, "POST", "/keys/rel/create", {"kty": "EC-HSM"}).status_code == 200
    released = http.post("/keys/rel//release", params=API, json={"target": "x"})
    assert_kv_error(released, 403)  # the key is not exportable
    assert http.get("/keys/rel//attestation", params=API).status_code == 200
    assert send_json(http, "POST", "/keys/soft/create", {"kty": "EC"}).status_code == 200
    assert_kv_error(http.get("/keys/soft//attestation", params=API), 400)  # not an HSM key
