"""Every route of API §1.1 through the in-process app: status and JSON shape as the SDK reads
them (KeyBundle, KeyItem, DeletedKeyBundle, paging, operation results)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from openmhsm.config import DeletionPolicy

API = "api-version=2025-07-01"
BASE = "https://127.0.0.1:8443"
NOW = 1_700_000_000
DAY = 86400
DEFAULT_DELETION = DeletionPolicy()
KID = re.compile(r"^https://127\.0\.0\.1:8443/keys/([0-9A-Za-z-]+)/([0-9a-f]{32})$")
DIGEST = hashlib.sha256(b"message").digest()
BUNDLE_FIELDS = {"key", "attributes", "tags", "managed", "release_policy"}
DELETED_FIELDS = {"recoveryId", "deletedDate", "scheduledPurgeDate"}
PRIVATE_JWK_FIELDS = {"d", "p", "q", "dp", "dq", "qi", "k"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def url(path: str, **query: str) -> str:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return f"{path}?{API}{extra}"


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_attributes(attrs: dict[str, Any], deletion: DeletionPolicy = DEFAULT_DELETION) -> None:
    assert isinstance(attrs["enabled"], bool)
    for name in ("created", "updated", "nbf", "exp"):
        if name in attrs:
            assert is_number(attrs[name]), name
    assert attrs["recoverableDays"] == deletion.retention_days
    assert attrs["recoveryLevel"] == deletion.recovery_level
    assert isinstance(attrs["exportable"], bool)


def check_bundle(
    body: dict[str, Any], name: str | None = None, deletion: DeletionPolicy = DEFAULT_DELETION
) -> tuple[str, str]:
    """Checks a KeyBundle as the SDK parses it; returns (name, version) from its kid."""
    assert set(body) - DELETED_FIELDS <= BUNDLE_FIELDS
    key = body["key"]
    match = KID.match(key["kid"])
    assert match, key["kid"]
    assert urlparse(key["kid"]).path.strip("/").count("/") == 2  # 3 path segments
    assert not PRIVATE_JWK_FIELDS & set(key)
    assert isinstance(key["key_ops"], list)
    base = key["kty"].removesuffix("-HSM")
    if base == "EC":
        assert {"crv", "x", "y"} <= set(key)
    elif base == "RSA":
        assert {"n", "e"} <= set(key)
    check_attributes(body["attributes"], deletion)
    if name is not None:
        assert match.group(1) == name
    return match.group(1), match.group(2)


def check_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def create(api: Any, name: str, **params: Any) -> dict[str, Any]:
    response = api.client.post(url(f"/keys/{name}/create"), json={"kty": "oct-HSM", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- create, import, get, update -------------------------------------------------------------


def test_create_key(api: Any) -> None:
    body = create(
        api,
        "Ec1",
        kty="EC-HSM",
        crv="P-256",
        key_ops=["sign"],
        tags={"x": "y"},
        attributes={"enabled": True, "nbf": NOW - 10, "exp": NOW + DAY},
    )
    check_bundle(body, "Ec1")
    key = body["key"]
    assert (key["kty"], key["crv"], key["key_ops"]) == ("EC-HSM", "P-256", ["sign"])
    assert len(unb64(key["x"])) == len(unb64(key["y"])) == 32
    assert body["tags"] == {"x": "y"}
    attrs = body["attributes"]
    assert (attrs["created"], attrs["updated"]) == (NOW, NOW)
    assert (attrs["nbf"], attrs["exp"]) == (NOW - 10, NOW + DAY)
    assert "release_policy" not in body


def test_create_exportable_with_release_policy(api: Any) -> None:
    policy = {"data": b64(b'{"anyOf":[],"version":"1.0.0"}'), "immutable": True}
    body = create(api, "exp", kty="EC", attributes={"exportable": True}, release_policy=policy)
    assert body["attributes"]["exportable"] is True
    assert body["release_policy"] == {
        "contentType": "application/json; charset=utf-8",
        "immutable": True,
        "data": policy["data"],
    }


def test_import_key(api: Any) -> None:
    k = os.urandom(32)
    response = api.client.put(
        url("/keys/Imp"),
        json={
            "key": {"kty": "oct", "k": b64(k), "key_ops": ["encrypt", "decrypt"]},
            "Hsm": True,
            "tags": {"src": "byok"},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    check_bundle(body, "Imp")
    assert body["key"]["kty"] == "oct-HSM"
    assert body["key"]["key_ops"] == ["encrypt", "decrypt"]
    # The imported key really is the one in use.
    enc = api.client.post(
        url("/keys/imp//encrypt"), json={"alg": "A256GCM", "value": b64(b"hi"), "aad": b64(b"a")}
    ).json()
    plain = AESGCM(k).decrypt(unb64(enc["iv"]), unb64(enc["value"]) + unb64(enc["tag"]), b"a")
    assert plain == b"hi"


def test_get_key_with_trailing_slash_and_with_version(api: Any) -> None:
    first = create(api, "MyKey")
    second = create(api, "mykey")
    _, v1 = check_bundle(first)
    _, v2 = check_bundle(second, "MyKey")
    latest = api.client.get(url("/keys/MYKEY/"))
    assert latest.status_code == 200
    assert check_bundle(latest.json(), "MyKey") == ("MyKey", v2)
    older = api.client.get(url(f"/keys/mykey/{v1}"))
    assert older.status_code == 200
    assert check_bundle(older.json()) == ("MyKey", v1)
    check_error(api.client.get(url("/keys/mykey/" + "0" * 32)), 404, "KeyNotFound")
    check_error(api.client.get(url("/keys/nope/")), 404, "KeyNotFound")
    check_error(api.client.get(url("/keys/bad_name/")), 400, "BadParameter")


def test_update_key_with_and_without_version(api: Any) -> None:
    _, v1 = check_bundle(create(api, "upd"))
    api.stack.clock.advance(30)
    response = api.client.patch(
        url(f"/keys/upd/{v1}"), json={"attributes": {"enabled": False}, "tags": {"a": "b"}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert check_bundle(body) == ("upd", v1)
    assert body["attributes"]["enabled"] is False
    assert (body["attributes"]["created"], body["attributes"]["updated"]) == (NOW, NOW + 30)
    assert body["tags"] == {"a": "b"}
    response = api.client.patch(url("/keys/upd/"), json={"key_ops": ["encrypt"]})
    assert response.status_code == 200
    assert response.json()["key"]["key_ops"] == ["encrypt"]
    check_error(api.client.patch(url("/keys/nope/"), json={}), 404, "KeyNotFound")


# --- listing and paging ----------------------------------------------------------------------


def follow(api: Any, next_link: str, api_version: str) -> Any:
    """GET a nextLink the way azure-core does: same URL, its own api-version."""
    parts = urlparse(next_link)
    assert (parts.scheme, parts.netloc) == ("https", "127.0.0.1:8443")
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["api-version"] = api_version
    return api.client.get(f"{parts.path}?{urlencode(query)}")


def collect(api: Any, first: str) -> tuple[list[dict[str, Any]], int]:
    response = api.client.get(first)
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"value", "nextLink"}
        items += body["value"]
        pages += 1
        if body["nextLink"] is None:
            return items, pages
        response = follow(api, body["nextLink"], "7.5")


def test_list_keys_pages_with_absolute_followable_next_links(api: Any) -> None:
    names = ["k-a", "K-B", "k-c", "k-d", "k-e"]
    for name in names:
        create(api, name, tags={"n": name})
    items, pages = collect(api, url("/keys", maxresults="2"))
    assert pages == 3
    assert [i["kid"] for i in items] == [f"{BASE}/keys/{n}" for n in names]  # no version
    for item in items:
        assert set(item) <= {"kid", "attributes", "tags", "managed"}
        check_attributes(item["attributes"])
        assert item["tags"] == {"n": item["kid"].rsplit("/", 1)[1]}
    default = api.client.get(url("/keys")).json()
    assert len(default["value"]) == 5 and default["nextLink"] is None


def test_list_versions(api: Any) -> None:
    versions = {check_bundle(create(api, "Ver"))[1] for _ in range(3)}
    items, pages = collect(api, url("/keys/ver/versions", maxresults="1"))
    assert pages == 3
    seen = set()
    for item in items:
        match = KID.match(item["kid"])
        assert match and match.group(1) == "Ver"
        seen.add(match.group(2))
        check_attributes(item["attributes"])
    assert seen == versions
    check_error(api.client.get(url("/keys/nope/versions")), 404, "KeyNotFound")


def test_empty_lists(api: Any) -> None:
    for path in ("/keys", "/deletedkeys"):
        response = api.client.get(url(path))
        assert response.status_code == 200
        assert response.json() == {"value": [], "nextLink": None}


# --- delete, deleted keys, recover, purge ----------------------------------------------------


def check_deleted(body: dict[str, Any], name: str, deletion: DeletionPolicy) -> None:
    check_bundle(body, name, deletion)
    assert body["recoveryId"] == f"{BASE}/deletedkeys/{name}"
    assert is_number(body["deletedDate"]) and is_number(body["scheduledPurgeDate"])
    assert body["scheduledPurgeDate"] - body["deletedDate"] == deletion.retention_days * DAY


@pytest.mark.parametrize(
    "deletion",
    [DeletionPolicy(), DeletionPolicy(30), DeletionPolicy(90, True), DeletionPolicy(30, True)],
    ids=["90", "30", "90-protected", "30-protected"],
)
def test_delete_get_list_recover(make_api: Callable[..., Any], deletion: DeletionPolicy) -> None:
    api = make_api(deletion)
    _, v1 = check_bundle(create(api, "Del"), deletion=deletion)
    _, v2 = check_bundle(create(api, "del"), deletion=deletion)
    response = api.client.delete(url("/keys/DEL"))
    assert response.status_code == 200, response.text
    check_deleted(response.json(), "Del", deletion)
    assert response.json()["deletedDate"] == NOW
    check_error(api.client.get(url("/keys/del/")), 404, "KeyNotFound")
    got = api.client.get(url("/deletedkeys/del"))
    assert got.status_code == 200
    check_deleted(got.json(), "Del", deletion)
    listed = api.client.get(url("/deletedkeys")).json()
    assert listed["nextLink"] is None and len(listed["value"]) == 1
    item = listed["value"][0]
    assert item["kid"] == f"{BASE}/keys/Del"
    assert item["recoveryId"] == f"{BASE}/deletedkeys/Del"
    assert is_number(item["deletedDate"]) and is_number(item["scheduledPurgeDate"])
    check_attributes(item["attributes"], deletion)
    check_error(api.client.post(url("/keys/del/create"), json={"kty": "oct"}), 409, "Conflict")
    recovered = api.client.post(url("/deletedkeys/del/recover"))  # no body, no content-type
    assert recovered.status_code == 200, recovered.text
    assert check_bundle(recovered.json(), "Del", deletion) == ("Del", v2)
    assert api.client.get(url(f"/keys/del/{v1}")).status_code == 200
    check_error(api.client.get(url("/deletedkeys/del")), 404, "KeyNotFound")


def test_purge(api: Any) -> None:
    create(api, "gone")
    api.client.delete(url("/keys/gone"))
    response = api.client.delete(url("/deletedkeys/gone"), headers={"Accept": ""})
    assert response.status_code == 204
    assert response.content == b""
    check_error(api.client.get(url("/deletedkeys/gone")), 404, "KeyNotFound")
    check_error(api.client.delete(url("/deletedkeys/gone")), 404, "KeyNotFound")
    create(api, "gone")  # the name is free again


def test_purge_under_purge_protection(make_api: Callable[..., Any]) -> None:
    api = make_api(DeletionPolicy(90, purge_protection=True))
    create(api, "kept")
    api.client.delete(url("/keys/kept"))
    error = check_error(api.client.delete(url("/deletedkeys/kept")), 403, "Forbidden")
    assert error["message"].startswith('Operation "purge" is not allowed')
    assert api.client.get(url("/deletedkeys/kept")).status_code == 200


# --- backup and restore ----------------------------------------------------------------------


def test_backup_and_restore(api: Any) -> None:
    _, v1 = check_bundle(create(api, "Bk"))
    _, v2 = check_bundle(create(api, "bk"))
    response = api.client.post(url("/keys/bk/backup"))  # no body
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"value"}
    blob = response.json()["value"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", blob)
    check_error(api.client.post(url("/keys/restore"), json={"value": blob}), 409, "Conflict")
    api.client.delete(url("/keys/bk"))
    api.client.delete(url("/deletedkeys/bk"))
    restored = api.client.post(url("/keys/restore"), json={"value": blob})
    assert restored.status_code == 200, restored.text
    assert check_bundle(restored.json()) == ("Bk", v2)
    assert api.client.get(url(f"/keys/bk/{v1}")).status_code == 200
    tampered = blob[:-2] + ("A" if blob[-2] != "A" else "B") + blob[-1]
    api.client.delete(url("/keys/bk"))
    api.client.delete(url("/deletedkeys/bk"))
    check_error(
        api.client.post(url("/keys/restore"), json={"value": tampered}), 400, "BadParameter"
    )
    check_error(api.client.post(url("/keys/nope/backup")), 404, "KeyNotFound")


# --- crypto operations -----------------------------------------------------------------------


@pytest.mark.parametrize("versioned", [True, False], ids=["version", "empty-version"])
def test_sign_and_verify(api: Any, versioned: bool) -> None:
    _, version = check_bundle(create(api, "Signer", kty="EC-HSM"))
    segment = version if versioned else ""
    response = api.client.post(
        url(f"/keys/signer/{segment}/sign"), json={"alg": "ES256", "value": b64(DIGEST)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"kid", "value"}
    assert body["kid"] == f"{BASE}/keys/Signer/{version}"
    assert len(unb64(body["value"])) == 64
    verify = api.client.post(
        url(f"/keys/signer/{segment}/verify"),
        json={"alg": "ES256", "digest": b64(DIGEST), "value": body["value"]},
    )
    assert verify.status_code == 200
    assert verify.json() == {"value": True}
    bad = api.client.post(
        url(f"/keys/signer/{segment}/verify"),
        json={"alg": "ES256", "digest": b64(DIGEST), "value": b64(bytes(64))},
    )
    assert bad.json() == {"value": False}


@pytest.mark.parametrize("versioned", [True, False], ids=["version", "empty-version"])
def test_encrypt_decrypt_wrap_unwrap(api: Any, versioned: bool) -> None:
    _, version = check_bundle(create(api, "aes"))
    segment = version if versioned else ""
    kid = f"{BASE}/keys/aes/{version}"
    enc = api.client.post(
        url(f"/keys/aes/{segment}/encrypt"),
        json={"alg": "A256GCM", "value": b64(b"hello"), "aad": b64(b"aad")},
    )
    assert enc.status_code == 200, enc.text
    e = enc.json()
    assert set(e) == {"kid", "value", "iv", "tag", "aad"} and e["kid"] == kid
    assert (len(unb64(e["iv"])), len(unb64(e["tag"])), unb64(e["aad"])) == (12, 16, b"aad")
    dec = api.client.post(
        url(f"/keys/aes/{segment}/decrypt"),
        json={
            "alg": "A256GCM",
            "value": e["value"],
            "iv": e["iv"],
            "tag": e["tag"],
            "aad": e["aad"],
        },
    )
    assert dec.status_code == 200
    assert dec.json() == {"kid": kid, "value": b64(b"hello")}
    dek = os.urandom(32)
    wrap = api.client.post(
        url(f"/keys/aes/{segment}/wrapkey"), json={"alg": "A256KW", "value": b64(dek)}
    )
    assert wrap.status_code == 200
    assert set(wrap.json()) == {"kid", "value"} and len(unb64(wrap.json()["value"])) == 40
    unwrap = api.client.post(
        url(f"/keys/aes/{segment}/unwrapkey"), json={"alg": "A256KW", "value": wrap.json()["value"]}
    )
    assert unwrap.json() == {"kid": kid, "value": b64(dek)}


def test_operations_respect_attributes_and_key_ops(api: Any) -> None:
    create(api, "lim", kty="EC", key_ops=["verify"], attributes={"exp": NOW + 10})
    sign = {"alg": "ES256", "value": b64(DIGEST)}
    check_error(api.client.post(url("/keys/lim//sign"), json=sign), 403, "Forbidden")
    api.client.patch(url("/keys/lim/"), json={"key_ops": ["sign", "verify"]})
    assert api.client.post(url("/keys/lim//sign"), json=sign).status_code == 200
    api.stack.clock.advance(10)
    check_error(api.client.post(url("/keys/lim//sign"), json=sign), 403, "Forbidden")
    check_error(api.client.post(url("/keys/nope//sign"), json=sign), 404, "KeyNotFound")


# --- release and attestation (not offered yet) -----------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/keys/rel//release"),
        ("POST", "/keys/rel/{version}/release"),
        ("GET", "/keys/rel//attestation"),
        ("GET", "/keys/rel/{version}/attestation"),
    ],
)
def test_release_and_attestation_are_not_supported(api: Any, method: str, path: str) -> None:
    _, version = check_bundle(create(api, "rel"))
    body = {"target": "x.y.z"} if method == "POST" else None
    response = api.client.request(method, url(path.format(version=version)), json=body)
    check_error(response, 400, "NotSupported")
    assert "Retry-After" not in response.headers


# --- rotation --------------------------------------------------------------------------------


def test_rotate(api: Any) -> None:
    _, v1 = check_bundle(create(api, "Rot", tags={"t": "1"}))
    response = api.client.post(url("/keys/rot/rotate"))  # no body, no content-type
    assert response.status_code == 200, response.text
    _, v2 = check_bundle(response.json(), "Rot")
    assert v2 != v1 and response.json()["tags"] == {"t": "1"}
    assert check_bundle(api.client.get(url("/keys/rot/")).json()) == ("Rot", v2)
    check_error(api.client.post(url("/keys/nope/rotate")), 404, "KeyNotFound")


def test_rotation_policy(api: Any) -> None:
    create(api, "Pol")
    response = api.client.get(url("/keys/pol/rotationpolicy"))
    assert response.status_code == 200
    assert response.json() == {
        "id": f"{BASE}/keys/pol/rotationpolicy",
        "lifetimeActions": [],
        "attributes": {},
    }
    sent = {
        "lifetimeActions": [{"action": {"type": "Rotate"}, "trigger": {"timeAfterCreate": "P80D"}}],
        "attributes": {"expiryTime": "P90D"},
    }
    response = api.client.put(url("/keys/pol/rotationpolicy"), json=sent)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == f"{BASE}/keys/pol/rotationpolicy"
    assert body["lifetimeActions"] == sent["lifetimeActions"]
    assert body["attributes"] == {"expiryTime": "P90D", "created": NOW, "updated": NOW}
    assert api.client.get(url("/keys/pol/rotationpolicy")).json() == body
    rotated = api.client.post(url("/keys/pol/rotate")).json()
    assert rotated["attributes"]["exp"] == NOW + 90 * DAY
    notify = {
        "lifetimeActions": [
            {"action": {"type": "Notify"}, "trigger": {"timeBeforeExpiry": "P30D"}}
        ],
        "attributes": {"expiryTime": "P90D"},
    }
    check_error(api.client.put(url("/keys/pol/rotationpolicy"), json=notify), 400, "BadParameter")
    short = {"lifetimeActions": [], "attributes": {"expiryTime": "P27D"}}
    check_error(api.client.put(url("/keys/pol/rotationpolicy"), json=short), 400, "BadParameter")
    check_error(api.client.get(url("/keys/nope/rotationpolicy")), 404, "KeyNotFound")


# --- random bytes ----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 33, 128])
def test_random_bytes(api: Any, count: int) -> None:
    response = api.client.post(url("/rng"), json={"count": count})
    assert response.status_code == 200
    assert set(response.json()) == {"value"}
    assert len(unb64(response.json()["value"])) == count


@pytest.mark.parametrize("count", [0, 129, -1, "8", 1.5, True, None])
def test_random_bytes_count_is_checked(api: Any, count: Any) -> None:
    check_error(api.client.post(url("/rng"), json={"count": count}), 400, "BadParameter")
