"""A corpus of malformed bodies sent to every operation path of the keys data plane: wrong types
for every field, huge numbers, NaN, nested garbage, empty and very long strings, unicode and lone
surrogates, null, arrays, invalid JSON, bodies over 1 MiB (413). No answer may be a 5xx, every
error must have Key Vault's shape, and the pool must still be healthy afterwards."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from keys_support import API, assert_kv_error, b64int, b64u, raw_client, send_json

if TYPE_CHECKING:
    from dev_pool import DevPool

MiB = 1024 * 1024


GARBAGE: list[Any] = [
    None,
    True,
    -1,
    1.5,
    2**64,
    float("nan"),
    "",
    "x" * 70_000,
    "\ud800",
    "é中😀\u0000",
    "!!!",
    [],
    [None, 1, "a"],
    {"a": {"b": [1, {"c": None}]}},
]
RAW_BODIES: list[bytes] = [
    b"",
    b" ",
    b"{",
    b"{}",
    b"null",
    b"[]",
    b"[{}]",
    b'"text"',
    b"-1",
    b"1e999",
    b"NaN",
    b"\xff\xfe\x00",
    b"\xef\xbb\xbf{}",
    b'{"a":1,"a":2}',
    b'{"alg":"\\ud800"}',
    b'{"\\udfff":1}',
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b"9" * 5000,
    b"\x00" * 100,
    b"{'single': 'quotes'}",
    b'{"value":"' + b"A" * 900_000 + b'"}',
    b"{" + b" " * (MiB + 10) + b"}",
]
EXP = 4102444800  # 2100-01-01
SIGN_BODY = {"alg": "ES256", "value": b64u(bytes(32))}


def _paths(body: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every field (list items by index)."""
    items = body.items() if isinstance(body, dict) else enumerate(body)
    for key, value in items:
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict | list) and value:
            yield from _paths(value, path + ".")


def _mutate(body: Any, path: str, value: Any) -> Any:
    out = copy.deepcopy(body)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def _encode(body: Any) -> bytes:
    return json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \ud800


class Corpus:
    """Sends bodies, a few at a time, and records every answer that breaks the rules."""

    CONCURRENCY = 4  # the client and the pool both busy; also concurrent writes to one key

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.problems: list[str] = []
        self.sent = 0

    def check(self, method: str, path: str, content: bytes, reads_body: bool) -> str | None:
        """The problem with the pool's answer to one body, if any."""
        where = f"{method} {path} {content[:80]!r}"
        try:
            r = self.http.request(
                method,
                path,
                params=API,
                content=content,
                headers={"Content-Type": "application/json"},
            )
        except httpx.TransportError as exc:
            return f"{where}: transport error {exc!r}"
        if r.status_code >= 500:
            return f"{where}: {r.status_code} {r.text[:200]}"
        if r.status_code >= 400:
            try:
                assert_kv_error(r)
            except (AssertionError, ValueError) as exc:
                return f"{where}: not a Key Vault error: {exc}"
        if reads_body and len(content) > MiB and r.status_code != 413:
            return f"{where}: body over 1 MiB gave {r.status_code}, not 413"
        return None

    def run(self, method: str, path: str, base: Any, *, reads_body: bool = True) -> None:
        # Operations without a body only need to show they ignore one.
        bodies = list(RAW_BODIES if reads_body else RAW_BODIES[2::4])
        if base is not None:
            bodies += [
                _encode(_mutate(base, field, value))
                for field in list(_paths(base))
                for value in GARBAGE
            ]
        with ThreadPoolExecutor(self.CONCURRENCY) as pool:
            answers = pool.map(lambda b: self.check(method, path, b, reads_body), bodies)
            self.problems = [p for p in answers if p is not None]
        self.sent = len(bodies)


@pytest.fixture(scope="module")
def corpus_keys(http: httpx.Client) -> dict[str, Any]:
    """Keys for the corpus to aim at, and valid bodies to start from."""
    made: dict[str, Any] = {}
    for name, body in (
        ("fz-rsa", {"kty": "RSA-HSM", "key_size": 2048}),
        ("fz-ec", {"kty": "EC-HSM"}),
        ("fz-oct", {"kty": "oct-HSM", "key_ops": ["encrypt", "decrypt", "wrapKey", "unwrapKey"]}),
        ("fz-hmac", {"kty": "oct-HSM", "key_ops": ["sign", "verify"]}),
        ("fz-upd", {"kty": "EC-HSM"}),
        ("fz-rot", {"kty": "EC-HSM"}),
        ("fz-policy", {"kty": "EC-HSM"}),
        ("fz-gone", {"kty": "EC-HSM"}),
    ):
        r = send_json(http, "POST", f"/keys/{name}/create", body)
        assert r.status_code == 200, r.text
        made[name] = r.json()["key"]["kid"].rsplit("/", 1)[1]
    assert http.delete("/keys/fz-gone", params=API).status_code == 200
    gcm = http.post(
        "/keys/fz-oct//encrypt",
        params=API,
        json={"alg": "A256GCM", "value": b64u(b"secret"), "aad": b64u(b"a")},
    ).json()
    made["gcm"] = {
        "alg": "A256GCM",
        "value": gcm["value"],
        "iv": gcm["iv"],
        "tag": gcm["tag"],
        "aad": gcm["aad"],
    }
    rsa_ct = http.post(
        "/keys/fz-rsa//encrypt", params=API, json={"alg": "RSA-OAEP", "value": b64u(b"secret")}
    ).json()["value"]
    made["rsa_ct"] = rsa_ct
    made["blob"] = http.post("/keys/fz-ec/backup", params=API).json()["value"]
    return made


def _ec_jwk() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    n = key.private_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u(n.public_numbers.x.to_bytes(32, "big")),
        "y": b64u(n.public_numbers.y.to_bytes(32, "big")),
        "d": b64u(n.private_value.to_bytes(32, "big")),
        "key_ops": ["sign", "verify"],
    }


def _rsa_jwk() -> dict[str, Any]:
    n = rsa.generate_private_key(65537, 2048).private_numbers()
    return {
        "kty": "RSA",
        "n": b64int(n.public_numbers.n),
        "e": b64int(n.public_numbers.e),
        "d": b64int(n.d),
        "p": b64int(n.p),
        "q": b64int(n.q),
        "dp": b64int(n.dmp1),
        "dq": b64int(n.dmq1),
        "qi": b64int(n.iqmp),
    }


DIGEST = b64u(hashlib.sha256(b"corpus").digest())
OPERATIONS = [
    "create-ec",
    "create-rsa",
    "import-ec",
    "import-rsa",
    "import-oct",
    "update-latest",
    "update-version",
    "sign-rsa",
    "sign-ec",
    "sign-hmac",
    "verify-rsa",
    "verify-ec",
    "encrypt-rsa",
    "encrypt-gcm",
    "encrypt-cbcpad",
    "decrypt-gcm",
    "decrypt-rsa",
    "wrapkey-kw",
    "wrapkey-rsa",
    "unwrapkey-kw",
    "restore",
    "rotationpolicy",
    "rng",
    "release",
    "recover",
    "backup",
    "rotate",
    "delete",
    "purge",
]


def _target(name: str, keys: dict[str, Any]) -> tuple[str, str, Any, bool]:
    """(method, path, valid base body or None, whether the operation reads a body)."""
    attributes = {"enabled": True, "nbf": 1, "exp": EXP}
    policy = {
        "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Rotate"}}],
        "attributes": {"expiryTime": "P90D"},
    }
    release_policy = {
        "contentType": "application/json; charset=utf-8",
        "immutable": False,
        "data": b64u(b'{"anyOf":[],"version":"1.0.0"}'),
    }
    table: dict[str, tuple[str, str, Any, bool]] = {
        "create-ec": (
            "POST",
            "/keys/fz-new/create",
            {
                "kty": "EC-HSM",
                "crv": "P-256",
                "key_ops": ["sign", "verify"],
                "attributes": {**attributes, "exportable": False},
                "tags": {"a": "b"},
                "release_policy": release_policy,
            },
            True,
        ),
        "create-rsa": (
            "POST",
            "/keys/fz-new-rsa/create",
            {"kty": "RSA-HSM", "key_size": 2048, "public_exponent": 65537},
            True,
        ),
        "import-ec": (
            "PUT",
            "/keys/fz-imported",
            {"key": _ec_jwk(), "Hsm": True, "attributes": attributes, "tags": {"a": "b"}},
            True,
        ),
        "import-rsa": ("PUT", "/keys/fz-imported-rsa", {"key": _rsa_jwk()}, True),
        "import-oct": (
            "PUT",
            "/keys/fz-imported-oct",
            {"key": {"kty": "oct", "k": b64u(bytes(32))}},
            True,
        ),
        "update-latest": (
            "PATCH",
            "/keys/fz-upd/",
            {
                "key_ops": ["sign", "verify"],
                "attributes": attributes,
                "tags": {"a": "b"},
                "release_policy": release_policy,
            },
            True,
        ),
        "update-version": (
            "PATCH",
            f"/keys/fz-upd/{keys['fz-upd']}",
            {"attributes": attributes, "tags": {"a": "b"}},
            True,
        ),
        "sign-rsa": ("POST", "/keys/fz-rsa//sign", {"alg": "PS256", "value": DIGEST}, True),
        "sign-ec": ("POST", f"/keys/fz-ec/{keys['fz-ec']}/sign", SIGN_BODY, True),
        "sign-hmac": ("POST", "/keys/fz-hmac//sign", {"alg": "HS256", "value": DIGEST}, True),
        "verify-rsa": (
            "POST",
            "/keys/fz-rsa//verify",
            {"alg": "RS256", "digest": DIGEST, "value": b64u(bytes(256))},
            True,
        ),
        "verify-ec": (
            "POST",
            "/keys/fz-ec//verify",
            {"alg": "ES256", "digest": DIGEST, "value": b64u(bytes(64))},
            True,
        ),
        "encrypt-rsa": (
            "POST",
            "/keys/fz-rsa//encrypt",
            {"alg": "RSA-OAEP-256", "value": b64u(b"p")},
            True,
        ),
        "encrypt-gcm": (
            "POST",
            "/keys/fz-oct//encrypt",
            {"alg": "A256GCM", "value": b64u(b"p"), "aad": b64u(b"a")},
            True,
        ),
        "encrypt-cbcpad": (
            "POST",
            "/keys/fz-oct//encrypt",
            {"alg": "A256CBCPAD", "value": b64u(b"p"), "iv": b64u(bytes(16))},
            True,
        ),
        "decrypt-gcm": ("POST", "/keys/fz-oct//decrypt", keys["gcm"], True),
        "decrypt-rsa": (
            "POST",
            "/keys/fz-rsa//decrypt",
            {"alg": "RSA-OAEP", "value": keys["rsa_ct"]},
            True,
        ),
        "wrapkey-kw": (
            "POST",
            "/keys/fz-oct//wrapkey",
            {"alg": "A256KW", "value": b64u(bytes(32))},
            True,
        ),
        "wrapkey-rsa": (
            "POST",
            "/keys/fz-rsa//wrapkey",
            {"alg": "RSA1_5", "value": b64u(bytes(32))},
            True,
        ),
        "unwrapkey-kw": (
            "POST",
            "/keys/fz-oct//unwrapkey",
            {"alg": "CKM_AES_KEY_WRAP_PAD", "value": b64u(bytes(24))},
            True,
        ),
        "restore": ("POST", "/keys/restore", {"value": keys["blob"]}, True),
        "rotationpolicy": ("PUT", "/keys/fz-policy/rotationpolicy", policy, True),
        "rng": ("POST", "/rng", {"count": 16}, True),
        "release": (
            "POST",
            "/keys/fz-ec//release",
            {"target": "eyJ", "nonce": "n", "enc": "CKM_RSA_AES_KEY_WRAP"},
            False,
        ),
        "recover": ("POST", "/deletedkeys/fz-gone/recover", None, False),
        "backup": ("POST", "/keys/fz-ec/backup", None, False),
        "rotate": ("POST", "/keys/fz-rot/rotate", None, False),
        "delete": ("DELETE", "/keys/fz-never", None, False),
        "purge": ("DELETE", "/deletedkeys/fz-never", None, False),
    }
    return table[name]


@pytest.mark.parametrize("operation", OPERATIONS)
def test_corpus_never_5xx(http: httpx.Client, corpus_keys: dict[str, Any], operation: str) -> None:
    method, path, base, reads_body = _target(operation, corpus_keys)
    corpus = Corpus(http)
    corpus.run(method, path, base, reads_body=reads_body)
    assert not corpus.problems, (
        f"{len(corpus.problems)} of {corpus.sent} requests broke the rules:\n"
        + "\n".join(corpus.problems[:15])
    )


def test_pool_healthy_after_corpus(
    dev_pool: DevPool, http: httpx.Client, corpus_keys: dict[str, Any]
) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").json()["state"] == "Active"
    url: str | None = "/keys"
    names: list[str] = []
    while url:
        r = http.get(url, params=API if url == "/keys" else None)
        assert r.status_code == 200, r.text
        names += [item["kid"].rsplit("/", 1)[1] for item in r.json()["value"]]
        url = r.json()["nextLink"]
    assert {"fz-rsa", "fz-ec", "fz-oct"} <= set(names)
    for name in names:
        assert http.get(f"/keys/{name}/", params=API).status_code == 200, name
        assert http.get(f"/keys/{name}/versions", params=API).status_code == 200, name
    assert http.get("/deletedkeys", params=API).status_code == 200
    r = http.post("/keys/fz-ec//sign", params=API, json=SIGN_BODY)
    assert r.status_code == 200, r.text
    r = http.post("/keys/after-corpus/create", params=API, json={"kty": "EC-HSM"})
    assert r.status_code == 200, r.text
    with raw_client(dev_pool) as fresh:  # a new token is still issued and accepted
        assert fresh.get("/keys", params=API).status_code == 200
