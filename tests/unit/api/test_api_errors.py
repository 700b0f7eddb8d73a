"""The HTTP edge's error behaviour: Key Vault JSON for 404/405/400/413/5xx, api-version checks,
request ids, and a corpus of malformed bodies over every body-taking route (never a 5xx)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from openmhsm.api.wire import MAX_BODY
from openmhsm.errors import MhsmError, StorageUnavailable

API = "api-version=2025-07-01"
ALL_OPS = ["encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify"]


def url(path: str, query: str = API) -> str:
    return f"{path}?{query}" if query else path


def check_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "innererror"}
    if status < 500:
        assert "Retry-After" not in response.headers
    return error


# --- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/nothing"),
        ("GET", "/keys/a/b/c/d"),
        ("POST", "/keys/k1/0123/unknownop"),
        ("GET", "/secrets/s1"),
        ("GET", "/deletedkeys/k1/recover/x"),
    ],
)
def test_unknown_path_is_a_key_vault_404(api: Any, method: str, path: str) -> None:
    check_error(api.client.request(method, url(path)), 404, "NotFound")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/rng"),
        ("GET", "/rng"),
        ("PUT", "/keys"),
        ("POST", "/keys"),
        ("GET", "/keys/restore"),
        ("POST", "/deletedkeys/k1"),
        ("PUT", "/deletedkeys"),
        ("DELETE", "/keys/k1/rotationpolicy"),
        ("GET", "/keys/k1/create"),
        ("PUT", "/keys/k1/0123/sign"),
        ("GET", "/keys/k1//release"),
        ("POST", "/keys/k1/"),
    ],
)
def test_wrong_method_is_a_key_vault_405(api: Any, method: str, path: str) -> None:
    if (method, path) == ("GET", "/keys/k1/create"):
        # `/keys/{name}/{version}` takes GET: "create" is read as a version, so 404.
        check_error(api.client.request(method, url(path)), 404, "KeyNotFound")
        return
    check_error(api.client.request(method, url(path)), 405, "MethodNotAllowed")


# --- api-version -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["7.0", "7.2", "7.4", "7.5", "7.6", "2016-10-01", "2025-07-01", "7.6-preview.1"]
)
def test_known_api_versions(api: Any, version: str) -> None:
    assert api.client.get(url("/keys", f"api-version={version}")).status_code == 200


@pytest.mark.parametrize(
    ("query", "inner"),
    [
        ("", "MissingApiVersionParameter"),
        ("maxresults=5", "MissingApiVersionParameter"),
        ("api-version=", "MissingApiVersionParameter"),
        ("api-version=7.7", "InvalidApiVersionParameter"),
        ("api-version=6.0", "InvalidApiVersionParameter"),
        ("api-version=2099-01-01", "InvalidApiVersionParameter"),
        ("api-version=latest", "InvalidApiVersionParameter"),
        ("api-version=7.6%20", "InvalidApiVersionParameter"),
    ],
)
def test_missing_or_unknown_api_version(api: Any, query: str, inner: str) -> None:
    error = check_error(api.client.get(url("/keys", query)), 400, "BadParameter")
    assert error["innererror"] == {"code": inner}


def test_status_urls_need_no_api_version(api: Any) -> None:
    # LRO status URLs are polled exactly as given (API §3.2): no 400 for the missing version.
    check_error(api.client.get("/backup/job1/pending"), 404, "NotFound")


# --- request ids -----------------------------------------------------------------------------


def test_request_ids(api: Any) -> None:
    client_id = str(uuid.uuid4())
    seen = set()
    for response in (
        api.client.get(url("/keys"), headers={"x-ms-client-request-id": client_id}),
        api.client.get(url("/nothing"), headers={"x-ms-client-request-id": client_id}),
        api.client.get("/keys", headers={"x-ms-client-request-id": client_id}),
        api.send_anonymous("GET", url("/keys"), headers={"x-ms-client-request-id": client_id}),
    ):
        assert response.headers["x-ms-client-request-id"] == client_id
        request_id = response.headers["x-ms-request-id"]
        assert uuid.UUID(request_id)
        seen.add(request_id)
    assert len(seen) == 4
    no_echo = api.client.get(url("/keys"), headers={"x-ms-client-request-id": "x" * 129})
    assert "x-ms-client-request-id" not in no_echo.headers
    assert "x-ms-request-id" in no_echo.headers


# --- sizes -----------------------------------------------------------------------------------


def test_body_of_exactly_one_mib_is_accepted(api: Any) -> None:
    body = b'{"kty":"oct"}'
    padded = body + b" " * (MAX_BODY - len(body))
    response = api.client.post(
        url("/keys/big/create"), content=padded, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text


def test_declared_body_over_one_mib_is_refused(api: Any) -> None:
    response = api.client.post(
        url("/keys/big/create"),
        content=b"{" + b" " * MAX_BODY + b"}",
        headers={"Content-Type": "application/json"},
    )
    check_error(response, 413, "RequestTooLarge")


def test_streamed_body_over_one_mib_is_refused(api: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"count": 1, "pad": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    response = api.client.post(
        url("/rng"), content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    check_error(response, 413, "RequestTooLarge")


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "99999999999999999999"])
def test_bad_content_length_is_not_a_5xx(api: Any, length: str) -> None:
    request = api.client.build_request("POST", url("/rng"), content=b'{"count":1}')
    request.headers["Content-Length"] = length
    response = api.client.send(request)
    assert response.status_code < 500


# --- paging parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "maxresults=0",
        "maxresults=26",
        "maxresults=-1",
        "maxresults=abc",
        "maxresults=",
        "$skiptoken=***",
        "$skiptoken=_w",
    ],
)
def test_bad_paging_parameters(api: Any, query: str) -> None:
    check_error(api.client.get(url("/keys", f"{API}&{query}")), 400, "BadParameter")


def test_superscript_maxresults_is_a_400(api: Any) -> None:
    check_error(api.client.get(url("/keys", f"{API}&maxresults=%C2%B2")), 400, "BadParameter")


# --- unexpected failures ---------------------------------------------------------------------


def test_internal_errors_are_key_vault_json_without_details(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*args: Any) -> Any:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(api.stack.keys, "get", boom)
    response = api.client.get(url("/keys/k1/"))
    error = check_error(response, 500, "InternalError")
    assert "secret detail" not in response.text and "innererror" not in error


def test_storage_without_quorum_is_a_503_with_retry_after(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_quorum(*args: Any) -> Any:
        raise StorageUnavailable("etcd has no quorum")

    monkeypatch.setattr(api.stack.storage, "txn", no_quorum)
    response = api.client.post(url("/keys/k1/create"), json={"kty": "oct"})
    check_error(response, 503, "ServiceUnavailable")
    assert response.headers["Retry-After"] == "1"


def test_typed_errors_map_to_their_status(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for error_type in MhsmError.__subclasses__():

        async def fail(*args: Any, error_type: type[MhsmError] = error_type) -> Any:
            raise error_type("nope")

        monkeypatch.setattr(api.stack.keys, "get", fail)
        check_error(api.client.get(url("/keys/k1/")), error_type.status, error_type.code)


# --- malformed bodies over every body-taking route (deep nesting and lone surrogates were
# 500s before wire.json_body refused them) -------------------------------------------

ROUTES = [
    ("POST", "/keys/new/create"),
    ("PUT", "/keys/imp"),
    ("PATCH", "/keys/ck/"),
    ("PATCH", "/keys/ck/{version}"),
    ("POST", "/keys/restore"),
    ("PUT", "/keys/ck/rotationpolicy"),
    ("POST", "/rng"),
    *[
        ("POST", f"/keys/ck/{{version}}/{op}")
        for op in ("sign", "verify", "encrypt", "decrypt", "wrapkey", "unwrapkey")
    ],
    *[
        ("POST", f"/keys/ck//{op}")
        for op in ("sign", "verify", "encrypt", "decrypt", "wrapkey", "unwrapkey")
    ],
]

UNUSABLE_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"  \r\n", id="blank"),
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="array"),
    pytest.param(b"1", id="number"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"{}{}", id="two-objects"),
    pytest.param(b"not json", id="text"),
    pytest.param(b"\xff\xfe\x00{", id="binary"),
    pytest.param(b"[" * 100_000, id="deep-nesting"),
    pytest.param(b'{"kty": "\\ud800"}', id="lone-surrogate"),
]

ODD_OBJECTS = [
    {},
    {"kty": 1, "alg": 1, "value": 1, "count": "1", "key": 1},
    {"alg": "A256GCM", "value": "***"},
    {"alg": "A256GCM", "value": "AAAA", "iv": "AAAA", "tag": "AAAA", "aad": 5},
    {"alg": "A256CBC", "value": "AAAA"},
    {"alg": "RSA-OAEP", "value": "AAAA"},
    {"alg": "A256KW", "value": ""},
    {"value": "A"},
    {"value": "AAAA"},
    {"count": 1e400},
    {"kty": "oct", "key_size": 1e400},
    {"kty": "EC", "crv": {"a": 1}},
    {"kty": "oct", "tags": [], "attributes": [], "key_ops": "x", "release_policy": 1},
    {"kty": "oct", "attributes": {"nbf": 1e308, "exp": -5}},
    {"key": {"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}},
    {"key": {"kty": "EC", "crv": "P-256", "d": "AAAA"}},
    {"attributes": {"enabled": None, "nbf": None, "exp": None}, "key_ops": None, "tags": None},
    {"lifetimeActions": "x", "attributes": "y"},
    {"lifetimeActions": [None], "attributes": {"expiryTime": None}},
    {
        "lifetimeActions": [
            {"trigger": {"timeAfterCreate": "P" + "9" * 30 + "Y"}, "action": {"type": "Rotate"}}
        ],
        "attributes": {"expiryTime": "P" + "9" * 30 + "Y"},
    },
]


@pytest.fixture(scope="module")
def corpus_api(module_api: Any) -> tuple[Any, str]:
    response = module_api.client.post(
        url("/keys/ck/create"), json={"kty": "oct-HSM", "key_ops": ALL_OPS}
    )
    assert response.status_code == 200
    return module_api, response.json()["key"]["kid"].rsplit("/", 1)[1]


def send(corpus_api: tuple[Any, str], method: str, path: str, body: bytes) -> Any:
    api, version = corpus_api
    return api.client.request(
        method,
        url(path.format(version=version)),
        content=body,
        headers={"Content-Type": "application/json"},
    )


@pytest.mark.parametrize("body", UNUSABLE_BODIES)
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_unusable_body_is_a_400(
    corpus_api: tuple[Any, str], method: str, path: str, body: bytes
) -> None:
    check_error(send(corpus_api, method, path, body), 400, "BadParameter")


@pytest.mark.parametrize("body", ODD_OBJECTS, ids=lambda b: json.dumps(b)[:40])
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_odd_json_objects_are_never_a_5xx(
    corpus_api: tuple[Any, str], method: str, path: str, body: dict[str, Any]
) -> None:
    response = send(corpus_api, method, path, json.dumps(body).encode())
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        check_error(response, response.status_code, response.json()["error"]["code"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/keys/sur/create", '{"kty": "\\ud800"}'),
        ("POST", "/keys/sur/create", '{"kty": "oct", "key_ops": ["\\udfff"]}'),
        ("PUT", "/keys/ck/rotationpolicy", '{"attributes": {"expiryTime": "\\ud800"}}'),
    ],
    ids=["kty", "key_ops", "duration"],
)
def test_lone_surrogate_in_an_echoed_field_is_a_400(
    corpus_api: tuple[Any, str], method: str, path: str, body: str
) -> None:
    check_error(send(corpus_api, method, path, body.encode()), 400, "BadParameter")


def test_lone_surrogate_in_a_tag_is_refused_before_any_write(corpus_api: tuple[Any, str]) -> None:
    response = send(
        corpus_api, "POST", "/keys/surtag/create", b'{"kty": "oct", "tags": {"a": "\\ud800"}}'
    )
    check_error(response, 400, "BadParameter")
    api, _ = corpus_api
    check_error(api.client.get(url("/keys/surtag/")), 404, "KeyNotFound")
