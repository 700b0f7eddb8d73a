"""What fuzzing the parsers found (fuzz/README.md), one test per finding, each feeding the input
that escaped its parser's contract: only the documented error may come out."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.types import ASGIApp, Message
from unit_stack import ApiHarness

from openmhsm import errors
from openmhsm.auth import external
from openmhsm.auth.challenge import challenge_header, normalize_host
from openmhsm.auth.tokens import TokenService, b64url_encode
from openmhsm.backup import format as fmt
from openmhsm.crypto import jwk
from openmhsm.domain import certificates
from openmhsm.errors import BadParameter

NOW = 1_700_000_000
TOO_DEEP = "[" * 2500 + "]" * 2500  # deeper than json's recursion limit, within a token's size
AUDIENCE = "https://0.0.1:8443"
ISSUER = "https://login.example.test/tenant-2/v2.0"
NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # never used: keys come from `fetch` (cheaper)
# A 2048-bit prime, made with `openssl prime -generate -bits 2048`.
PRIME_2048 = int(
    "e1dc4338f2ac3c1942a6948cec0129e827acf73f95da8b94d4951296606a5a5c17be6c3226b83607b7820d80"
    "fdfda66fc68d66f6ecdf84565afe9717845d9000ac7ce48af7b6bea656dce0d4c736edb4eaa46f590ca345fa"
    "4e846338d02b1ca331640641630045c1e382a48d4eab463281171839111396f23705d6553deb03fb0054132d"
    "3f1b75f0dee0d3d10f80b16d48464272479c3049a1ab3886a97a13ba75b4426d72b9de89da1545cf995d3bc2"
    "330a86fe6db6763af23ceb4ffffe3e2764e6e2c5ffd97bf1f20c1a02edeb5f9eeff720e72250eed41c75def5"
    "2ce618f1fb3adc2a6372d1232147c8919b9f3b37b2c7cf049cfb403abc592b485b0a2a29",
    16,
)


class FixedClock:
    def now(self) -> float:
        return float(NOW)


def _part(text: str) -> str:
    return b64url_encode(text.encode())


def _signed(header: Any, claims: Any, key: ec.EllipticCurvePrivateKey) -> str:
    """An ES256 JWS of two JSON values (or JSON texts) under `key`."""
    texts = (v if isinstance(v, str) else json.dumps(v) for v in (header, claims))
    signing_input = ".".join(map(_part, texts))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# --- auth: tokens ----------------------------------------------------------------------------


def test_unverified_issuer_of_claims_nested_too_deeply_is_none() -> None:
    """RecursionError out of json.loads (found by fuzz/token_target.py)."""
    token = f"{_part('{}')}.{_part(TOO_DEEP)}.AAAA"
    assert external.unverified_issuer(token) is None
    with pytest.raises(ValueError):
        external.parse_jwt(token)


@pytest.mark.parametrize("part", [0, 1])
def test_an_own_token_nested_too_deeply_is_unauthorized(part: int) -> None:
    """RecursionError out of TokenService.validate: from the header at once, from the claims
    once the signature checks out (token_target.py)."""
    key = ec.derive_private_key(0x0DDBA11, ec.SECP256R1())
    service = TokenService(key, "https://127.0.0.1:8443/t/v2.0", FixedClock())
    if part == 0:
        token = f"{_part(TOO_DEEP)}.{_part('{}')}.AAAA"
    else:
        token = _signed({"alg": "ES256", "typ": "JWT", "kid": service.kid}, TOO_DEEP, key)
    with pytest.raises(errors.Unauthorized):
        service.validate(token, lambda audience: True)


@pytest.fixture
def trusted() -> tuple[external.TrustedIssuers, ec.EllipticCurvePrivateKey]:
    key = ec.derive_private_key(0xC0FFEE, ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    public = {"kty": "EC", "crv": "P-256", "kid": "k1"}
    public |= {"x": b64url_encode(numbers.x.to_bytes(32, "big"))}
    public |= {"y": b64url_encode(numbers.y.to_bytes(32, "big"))}

    async def fetch(issuer: str) -> Mapping[str, Any]:
        return {"keys": [public]}

    issuers = external.TrustedIssuers([ISSUER], FixedClock(), NO_TLS)
    issuers.keys = external.IssuerKeys([ISSUER], NO_TLS, fetch=fetch)
    asyncio.run(issuers.refresh(ISSUER))
    return issuers, key


def _external_claims(**changes: Any) -> dict[str, Any]:
    claims = {"iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 3600, "oid": "o-1", "appid": "app-1"}
    return claims | changes


@pytest.mark.parametrize("exp", [10**400, float("nan")], ids=["huge", "nan"])
def test_an_external_token_whose_exp_is_no_date_is_unauthorized(
    trusted: tuple[external.TrustedIssuers, ec.EllipticCurvePrivateKey], exp: Any
) -> None:
    """10**400 raised OverflowError from float(exp) (token_target.py); NaN made a token that
    never expires (review)."""
    issuers, key = trusted
    token = _signed({"alg": "ES256", "kid": "k1"}, _external_claims(exp=exp), key)
    with pytest.raises(errors.Unauthorized):
        issuers.validate(token, lambda audience: audience == AUDIENCE)


def test_an_external_principal_takes_only_string_names(
    trusted: tuple[external.TrustedIssuers, ec.EllipticCurvePrivateKey],
) -> None:
    """Non-string claims were str()-ed into the principal, a list became its client id (review:
    str() of deeply nested JSON is a RecursionError too)."""
    issuers, key = trusted
    claims = _external_claims(appid=[["x"]], azp="client-2", name={"a": 1})
    token = _signed({"alg": "ES256", "kid": "k1"}, claims, key)
    principal = issuers.validate(token, lambda audience: audience == AUDIENCE)
    assert principal.client_id == principal.name == "client-2"


# --- auth: the Host header of a 401 challenge ------------------------------------------------

ODD_SPACE_HOSTS = [b"\x85hsm.example.test", b"hsm.example.test:8443\xa0", b"\x1dhsm.example.test"]


@pytest.mark.parametrize("raw", ODD_SPACE_HOSTS)
def test_a_host_with_other_whitespace_is_a_bad_request(raw: bytes) -> None:
    """str.strip() dropped these, so the Host passed normalize_host while the challenge's
    authority (the raw Host) kept them: ValueError from challenge_header (token_target.py)."""
    host = raw.decode("latin-1")  # as Starlette reads a header value
    with pytest.raises(errors.BadRequest):
        normalize_host(host)
    with pytest.raises(errors.BadRequest):
        challenge_header(host, f"https://{host}", "tenant-1")


async def _anonymous_get(app: ASGIApp, host: bytes) -> list[Message]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "https", "path": "/keys", "raw_path": b"/keys", "root_path": "",
        "query_string": b"api-version=7.5", "headers": [(b"host", host)],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8443),
    }  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("raw", ODD_SPACE_HOSTS)
def test_an_anonymous_request_with_such_a_host_is_a_400_not_a_500(
    api: ApiHarness, raw: bytes
) -> None:
    """obs-text (0x80-0xff) is legal in an HTTP field value, so an anonymous client could send
    0x85 or 0xa0 around its Host and get an InternalError (and a logged traceback)."""
    sent = api.call(_anonymous_get, api.client.app, raw)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["code"] == "BadRequest"


# --- auth: verification keys of external issuers ---------------------------------------------


def _certificate_of_unknown_key_type() -> str:
    """A certificate whose key algorithm OID (rsaEncryption) is changed to one no library knows."""
    _, certificate = certificates.new_rsa_certificate("fuzz", 1)
    der = certificate.public_bytes(Encoding.DER)
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")
    changed = der.replace(rsa_encryption, bytes.fromhex("06092a864886f70d01017f"), 1)
    x509.load_der_x509_certificate(changed)  # still a certificate
    return base64.b64encode(changed).decode("ascii")


@pytest.mark.parametrize(
    "value",
    [None, [], "RSA", 7],
    ids=["null", "list", "text", "number"],
)
def test_a_jwks_entry_that_is_no_key_gives_none(value: Any) -> None:
    """A non-object entry raised AttributeError, which dropped every key of the issuer
    (jwk_target.py)."""
    assert external.public_key_from_jwk(value) is None


def test_a_certificate_of_an_unknown_key_type_gives_none() -> None:
    """UnsupportedAlgorithm escaped public_key_from_jwk (jwk_target.py): a 500 from secure key
    release, and no keys at all for an issuer that publishes such a certificate."""
    assert external.public_key_from_jwk({"x5c": [_certificate_of_unknown_key_type()]}) is None


def test_one_unusable_jwks_entry_leaves_the_issuers_other_keys() -> None:
    key = ec.derive_private_key(0xC0FFEE, ec.SECP256R1()).public_key().public_numbers()
    good = {"kty": "EC", "crv": "P-256", "kid": "k1"}
    good |= {"x": b64url_encode(key.x.to_bytes(32, "big"))}
    good |= {"y": b64url_encode(key.y.to_bytes(32, "big"))}
    entries = ["not a key", {"kid": "k0", "x5c": [_certificate_of_unknown_key_type()]}, good]

    async def fetch(issuer: str) -> Mapping[str, Any]:
        return {"keys": entries}

    keys = external.IssuerKeys([ISSUER], NO_TLS, fetch=fetch)
    asyncio.run(keys.refresh(ISSUER))
    assert keys.key(ISSUER, "k1") is not None


# --- crypto: JWK import ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_private_jwk() -> dict[str, str]:
    return jwk.private_jwk(jwk.KeyMaterial("RSA", rsa.generate_private_key(65537, 2048)))


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize(("prime", "value"), [("p", "AQ"), ("q", "AA"), ("p", "AAE")])
def test_a_prime_of_one_or_zero_is_a_bad_parameter(
    rsa_private_jwk: dict[str, str], prime: str, value: str, trusted: bool
) -> None:
    """ValueError from the CRT helpers: p or q <= 1, with the CRT values left out
    (jwk_target.py)."""
    key = {k: v for k, v in rsa_private_jwk.items() if k not in ("dp", "dq", "qi")}
    with pytest.raises(BadParameter):
        jwk.from_jwk(key | {prime: value}, trusted=trusted)


def _counting_pow(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def counted(*args: int) -> int:
        calls.append(1)
        return pow(*args)

    monkeypatch.setattr(jwk, "pow", counted, raising=False)
    return calls


def test_a_prime_modulus_is_refused_after_two_exponentiations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """n prime, d = e**-1 mod n-1: every attempt of the prime recovery found a trivial root and
    all 32 ran, about a minute of CPU for a 4096-bit prime on the request's event loop (review)."""
    e = 65537
    key = {"kty": "RSA", "n": jwk.int_to_b64u(PRIME_2048), "e": jwk.int_to_b64u(e)}
    key["d"] = jwk.int_to_b64u(pow(e, -1, PRIME_2048 - 1))
    calls = _counting_pow(monkeypatch)
    with pytest.raises(BadParameter):
        jwk.from_jwk(key)
    assert len(calls) <= 2


def test_a_prime_square_modulus_is_refused_after_two_exponentiations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = rsa.generate_private_key(65537, 2048).private_numbers().p
    n, e = p * p, 65537
    key = {"kty": "RSA", "n": jwk.int_to_b64u(n), "e": jwk.int_to_b64u(e)}
    key["d"] = jwk.int_to_b64u(pow(e, -1, p * (p - 1)))
    calls = _counting_pow(monkeypatch)
    with pytest.raises(BadParameter):
        jwk.from_jwk(key)
    assert len(calls) <= 2


def test_a_valid_key_passes_the_prime_power_test(
    rsa_private_jwk: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test runs after a first trivial root: force one (base n - 1), then recover as usual."""
    n = int.from_bytes(jwk.b64u_decode(rsa_private_jwk["n"]), "big")
    forced = [n - 3]  # the base is 2 + randbelow(n - 3): n - 1, whose chain is all -1
    real = secrets.randbelow
    monkeypatch.setattr(secrets, "randbelow", lambda bound: forced.pop() if forced else real(bound))
    key = {k: rsa_private_jwk[k] for k in ("kty", "n", "e", "d")}
    assert jwk.private_jwk(jwk.from_jwk(key, trusted=True)) == rsa_private_jwk
    assert not forced


# --- backup: the manifest --------------------------------------------------------------------

KEYS = fmt.BackupKeys.from_backup_key(bytes(range(32)))
DOMAIN = "domain-1"


def _signed_manifest(**changes: Any) -> bytes:
    """A manifest body with `changes`, under a valid MAC (as a damaged backup signed before the
    damage, or another version's, would come)."""
    entry = {"name": "records-00000.bin", "sha256": "0" * 64, "records": 1, "first": "a"}
    body: dict[str, Any] = {
        "format": fmt.FORMAT, "backupId": "b" * 32, "pool": "p1", "domainId": DOMAIN,
        "revision": 42, "created": NOW, "counts": {"keys": 1}, "files": [entry | {"last": "a"}],
    } | changes  # fmt: skip
    return json.dumps(body | {"mac": fmt._mac(KEYS, body)}).encode()


def test_the_signed_manifest_helper_makes_valid_manifests() -> None:
    assert fmt.load_manifest(KEYS, _signed_manifest(), DOMAIN).revision == 42


@pytest.mark.parametrize(
    "changes",
    [{"revision": float("inf")}, {"created": float("-inf")}, {"counts": {"keys": float("inf")}}],
    ids=["revision", "created", "count"],
)
def test_a_signed_manifest_number_that_is_infinite_is_invalid(changes: dict[str, Any]) -> None:
    """OverflowError out of load_manifest: int(Infinity) (found by backup_manifest_target.py)."""
    with pytest.raises(fmt.BackupInvalid, match="malformed"):
        fmt.load_manifest(KEYS, _signed_manifest(**changes), DOMAIN)


@pytest.mark.parametrize(
    "changes",
    [{"revision": True}, {"revision": 42.5}, {"pool": ["p1"]}, {"counts": [["keys", 1]]}],
    ids=["bool", "fraction", "list", "pairs"],
)
def test_a_signed_manifest_field_is_never_coerced(changes: dict[str, Any]) -> None:
    """The fix reads each field as its JSON type: these were coerced (True as revision 1, 42.5 as
    42, ["p1"] as the pool "['p1']"), which hid a manifest this code never wrote."""
    with pytest.raises(fmt.BackupInvalid, match="malformed"):
        fmt.load_manifest(KEYS, _signed_manifest(**changes), DOMAIN)
