"""TokenService: ES256 JWTs, their validation, the validation cache and the JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from openmhsm import errors
from openmhsm.auth import tokens as tokens_module
from openmhsm.auth.tokens import TokenService, b64url_decode, b64url_encode, jwk_thumbprint
from openmhsm.types import Principal

ISSUER = "https://sts.openmhsm.test/tenant-1/v2.0"
AUDIENCE = "https://example.test:8443"
PRINCIPAL = Principal(
    object_id="0b3e5c1e-8a43-4b1e-9f7e-0d6f6f0c1a11",
    client_id="5a1f7a7e-2c1d-4d9e-8b4e-1e2f3a4b5c6d",
    name="app-1",
    kind="service",
)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def _aud_ok(aud: str) -> bool:
    return aud == AUDIENCE


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(key: ec.EllipticCurvePrivateKey, clock: FakeClock) -> TokenService:
    return TokenService(key, ISSUER, clock)


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    h, c, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(c)), b64url_decode(s)


def _sign(key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Forge a token with our own header and claims, validly signed by `key`."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    h = b64url_encode(json.dumps(header).encode())
    c = b64url_encode(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{h}.{c}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def test_issue_shape_and_claims(service: TokenService, clock: FakeClock) -> None:
    token, expires_on = service.issue(
        principal=PRINCIPAL, audience=AUDIENCE, tenant_id="tenant-1", lifetime=600
    )
    header, claims, signature = _parts(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": service.kid}
    assert len(signature) == 64
    assert expires_on == int(clock.t) + 600
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == claims["oid"] == PRINCIPAL.object_id
    assert claims["appid"] == PRINCIPAL.client_id
    assert claims["tid"] == "tenant-1"
    assert claims["idtyp"] == "app"
    assert claims["iat"] == claims["nbf"] == int(clock.t)
    assert claims["exp"] == expires_on
    assert len(claims["jti"]) >= 16
    other, _ = service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="tenant-1")
    assert _parts(other)[1]["jti"] != claims["jti"]


def test_signature_verifies_with_plain_cryptography(
    service: TokenService, key: ec.EllipticCurvePrivateKey
) -> None:
    token, _ = service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    h, c, s = token.split(".")
    raw = b64url_decode(s)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.public_key().verify(der, f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256()))


def test_validate_round_trip(service: TokenService) -> None:
    token, _ = service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    principal = service.validate(token, _aud_ok)
    assert principal == Principal(
        object_id=PRINCIPAL.object_id,
        client_id=PRINCIPAL.client_id,
        name="app-1",
        kind="service",
        issuer=ISSUER,
    )
    assert service.validate(token, _aud_ok) == principal  # from the cache


def test_managed_kind_survives(service: TokenService) -> None:
    managed = Principal("o", "c", "mi-1", "managed")
    token, _ = service.issue(principal=managed, audience=AUDIENCE, tenant_id="t")
    assert service.validate(token, _aud_ok).kind == "managed"


def test_jwks_and_thumbprint_rfc7638(
    service: TokenService, key: ec.EllipticCurvePrivateKey
) -> None:
    (jwk,) = service.jwks()["keys"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert jwk["use"] == "sig" and jwk["alg"] == "ES256" and jwk["kid"] == service.kid
    numbers = key.public_key().public_numbers()
    assert int.from_bytes(b64url_decode(jwk["x"]), "big") == numbers.x
    assert int.from_bytes(b64url_decode(jwk["y"]), "big") == numbers.y
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest())
    assert service.kid == expected.rstrip(b"=").decode() == jwk_thumbprint(key.public_key())


def test_thumbprint_of_rfc7517_example_key() -> None:
    # RFC 7517 Appendix A.1, first key; canonical member order per RFC 7638 §3.2.
    x = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4"
    y = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url_decode(x), "big"),
        int.from_bytes(b64url_decode(y), "big"),
        ec.SECP256R1(),
    ).public_key()
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}'.encode()
    assert jwk_thumbprint(public) == b64url_encode(hashlib.sha256(canonical).digest())


def test_rejects_non_p256_key(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        TokenService(ec.generate_private_key(ec.SECP384R1()), ISSUER, clock)


def test_issue_rejects_non_positive_lifetime(service: TokenService) -> None:
    with pytest.raises(ValueError):
        service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t", lifetime=0)


def test_expiry_with_skew(service: TokenService, clock: FakeClock) -> None:
    token, expires_on = service.issue(
        principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t", lifetime=100
    )
    service.validate(token, _aud_ok)
    clock.t = expires_on + 60  # within the skew
    service.validate(token, _aud_ok)
    clock.t = expires_on + 61
    with pytest.raises(errors.Unauthorized, match="expired"):
        service.validate(token, _aud_ok)
    with pytest.raises(errors.Unauthorized, match="expired"):  # also when not cached any more
        service.validate(token, _aud_ok)


def test_expired_when_first_seen(service: TokenService, clock: FakeClock) -> None:
    token, expires_on = service.issue(
        principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t", lifetime=100
    )
    clock.t = expires_on + 3600
    with pytest.raises(errors.Unauthorized, match="expired"):
        service.validate(token, _aud_ok)


def test_not_yet_valid(
    key: ec.EllipticCurvePrivateKey, clock: FakeClock, service: TokenService
) -> None:
    token, _ = service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    clock.t -= 61  # a partition whose clock is behind the issuer's by more than the skew
    with pytest.raises(errors.Unauthorized, match="not valid yet"):
        service.validate(token, _aud_ok)
    clock.t += 2
    assert service.validate(token, _aud_ok).client_id == PRINCIPAL.client_id


def test_audience_checked_even_when_cached(service: TokenService) -> None:
    token, _ = service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    service.validate(token, _aud_ok)
    with pytest.raises(errors.Unauthorized, match="audience"):
        service.validate(token, lambda aud: False)
    seen: list[str] = []

    def record(aud: str) -> bool:
        seen.append(aud)
        return True

    service.validate(token, record)
    assert seen == [AUDIENCE]


def test_other_issuer_rejected(key: ec.EllipticCurvePrivateKey, clock: FakeClock) -> None:
    other = TokenService(key, "https://elsewhere/v2.0", clock)
    token, _ = other.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    with pytest.raises(errors.Unauthorized, match="issuer"):
        TokenService(key, ISSUER, clock).validate(token, _aud_ok)


def test_the_peer_regions_issuer_is_trusted_only_while_linked(
    key: ec.EllipticCurvePrivateKey, clock: FakeClock
) -> None:
    peer = TokenService(key, "https://region-b:9443/t/v2.0", clock)  # same domain-derived key
    token, _ = peer.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    here = TokenService(key, ISSUER, clock)
    here.trust_peer("https://region-b:9443/t/v2.0")
    assert here.validate(token, _aud_ok).object_id == PRINCIPAL.object_id
    here.trust_peer(None)  # unlinked: the cached validation goes with the trust
    with pytest.raises(errors.Unauthorized, match="issuer"):
        here.validate(token, _aud_ok)
    no_issuer = _sign(key, {"alg": "ES256", "typ": "JWT", "kid": here.kid},
                      {k: v for k, v in _claims(clock).items() if k != "iss"})  # fmt: skip
    with pytest.raises(errors.Unauthorized, match="issuer"):
        here.validate(no_issuer, _aud_ok)


def test_other_key_rejected(service: TokenService, clock: FakeClock) -> None:
    other = TokenService(ec.generate_private_key(ec.SECP256R1()), ISSUER, clock)
    token, _ = other.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    with pytest.raises(errors.Unauthorized, match="not signed by this pool"):
        service.validate(token, _aud_ok)


def test_other_key_with_our_kid_fails_signature(service: TokenService) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    header = {"alg": "ES256", "typ": "JWT", "kid": service.kid}
    token = _sign(forger, header, {"iss": ISSUER, "aud": AUDIENCE, "exp": 2**40, "oid": "o"})
    with pytest.raises(errors.Unauthorized, match="signature"):
        service.validate(token, _aud_ok)


def _claims(clock: FakeClock, **extra: Any) -> dict[str, Any]:
    now = int(clock.t)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 60}
    return claims | {"oid": "o", "appid": "a", "sub": "o"} | extra


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "kid": None},
        {"alg": "HS256", "kid": None},
        {"alg": "ES384", "kid": None},
        {"alg": "es256", "kid": None},
        {"kid": None},
    ],
)
def test_only_es256_accepted(
    service: TokenService,
    key: ec.EllipticCurvePrivateKey,
    clock: FakeClock,
    header: dict[str, Any],
) -> None:
    header = {k: (service.kid if k == "kid" else v) for k, v in header.items()}
    with pytest.raises(errors.Unauthorized, match="algorithm"):
        service.validate(_sign(key, header, _claims(clock)), _aud_ok)


def test_alg_none_unsigned_rejected(service: TokenService, clock: FakeClock) -> None:
    h = b64url_encode(json.dumps({"alg": "none", "kid": service.kid}).encode())
    c = b64url_encode(json.dumps(_claims(clock)).encode())
    for token in (f"{h}.{c}.", f"{h}.{c}"):
        with pytest.raises(errors.Unauthorized):
            service.validate(token, _aud_ok)


def test_crit_header_rejected(
    service: TokenService, key: ec.EllipticCurvePrivateKey, clock: FakeClock
) -> None:
    header = {"alg": "ES256", "kid": service.kid, "crit": ["x"], "x": 1}
    with pytest.raises(errors.Unauthorized):
        service.validate(_sign(key, header, _claims(clock)), _aud_ok)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": ["a", "b"]},
        {"exp": "9999999999"},
        {"exp": True},
        {"exp": None},
        {"nbf": 1.5},
        {"oid": 5},
        {"appid": None},
    ],
)
def test_bad_claim_types_rejected(
    service: TokenService, key: ec.EllipticCurvePrivateKey, clock: FakeClock, claims: dict[str, Any]
) -> None:
    token = _sign(key, {"alg": "ES256", "kid": service.kid}, _claims(clock, **claims))
    with pytest.raises(errors.Unauthorized, match="malformed"):
        service.validate(token, lambda aud: True)


def test_claims_not_an_object(service: TokenService, key: ec.EllipticCurvePrivateKey) -> None:
    h = b64url_encode(json.dumps({"alg": "ES256", "kid": service.kid}).encode())
    c = b64url_encode(b"[1,2]")
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(f"{h}.{c}".encode(), ec.ECDSA(hashes.SHA256())))
    token = f"{h}.{c}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    with pytest.raises(errors.Unauthorized):
        service.validate(token, _aud_ok)


def _tamper(token: str, part: int, change: Any) -> str:
    parts = token.split(".")
    parts[part] = change(parts[part])
    return ".".join(parts)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: "",
        lambda t: "abc",
        lambda t: t + ".x",
        lambda t: t.replace(".", "..", 1),
        lambda t: _tamper(t, 0, lambda p: p + "="),
        lambda t: _tamper(t, 0, lambda p: "!!" + p),
        lambda t: _tamper(t, 0, lambda p: b64url_encode(b"not json")),
        lambda t: _tamper(t, 0, lambda p: b64url_encode(b"[]")),
        lambda t: _tamper(t, 1, lambda p: b64url_encode(b'{"iss":"x"}')),
        lambda t: _tamper(t, 1, lambda p: p[:-2] + ("AA" if p[-2:] != "AA" else "BB")),
        lambda t: _tamper(t, 2, lambda p: p[:-4]),
        lambda t: _tamper(t, 2, lambda p: ("A" if p[0] != "A" else "B") + p[1:]),
        lambda t: _tamper(t, 2, lambda p: ""),
        lambda t: _tamper(t, 2, lambda p: "é" + p),
        lambda t: _tamper(t, 1, lambda p: "é" + p),
        lambda t: t + "A" * 9000,
    ],
)
def test_malformed_or_tampered_rejected_without_echo(service: TokenService, mutate: Any) -> None:
    token, _ = service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    bad = mutate(token)
    with pytest.raises(errors.Unauthorized) as caught:
        service.validate(bad, _aud_ok)
    for piece in bad.split("."):
        if len(piece) > 8:
            assert piece not in caught.value.message
    assert token not in str(caught.value)


def test_cache_is_bounded(service: TokenService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "CACHE_SIZE", 3)
    issued = [
        service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")[0] for _ in range(5)
    ]
    for token in issued:
        service.validate(token, _aud_ok)
    assert len(service._cache) == 3
    for token in issued:  # evicted entries are simply validated again
        service.validate(token, _aud_ok)


def test_cache_skips_signature_check(
    service: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = service.issue(principal=PRINCIPAL, audience=AUDIENCE, tenant_id="t")
    service.validate(token, _aud_ok)

    def fail(*args: Any) -> None:
        raise AssertionError("signature checked again")

    monkeypatch.setattr(service, "_verify", fail)
    service.validate(token, _aud_ok)


def test_b64url_decode_strict() -> None:
    assert b64url_decode("") == b""
    assert b64url_decode("YQ") == b"a"
    for bad in ("YQ==", "Y", "a+b/", "a b"):
        with pytest.raises(ValueError):
            b64url_decode(bad)
