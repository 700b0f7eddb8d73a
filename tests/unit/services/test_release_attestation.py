"""The attestation side of secure key release: the issuers' keys (`IssuerKeys`), token checks
(`AttestationIssuers`) and the pool's statement signer (`PoolSigner`)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from unit_stack import ATTESTATION_ISSUER, AttestationAuthority, FakeClock

from openmhsm.auth import external
from openmhsm.auth.attestation import AttestationIssuers, PoolSigner
from openmhsm.auth.external import IssuerKeys, parse_jwt, public_key_from_jwk, verify_signature
from openmhsm.cluster.tls import ensure_pool_ca, issue_certificate
from openmhsm.crypto.jwk import b64u_encode
from openmhsm.errors import Forbidden


def self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_issuer_keys_load_refresh_and_keep_keys_on_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    authority = AttestationAuthority(FakeClock())
    answers: list[Mapping[str, Any] | Exception] = []
    calls: list[str] = []

    async def fetch(issuer: str) -> Mapping[str, Any]:
        calls.append(issuer)
        answer = answers.pop(0) if answers else await authority.fetch(issuer)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def main() -> None:
        keys = IssuerKeys([ATTESTATION_ISSUER + "/"], fetch=fetch, label="attestation issuer")
        assert keys.trusts(ATTESTATION_ISSUER) and keys.trusts(ATTESTATION_ISSUER + "/")
        assert not keys.trusts("https://other.test")
        await keys.start()
        assert keys.key(ATTESTATION_ISSUER, authority.kid) is not None
        answers.append(ValueError("issuer down"))
        await keys.refresh(ATTESTATION_ISSUER)
        assert keys.key(ATTESTATION_ISSUER, authority.kid) is not None  # kept
        answers.append({"keys": []})  # an answer with no usable key (an error body, say)
        await keys.refresh(ATTESTATION_ISSUER)
        assert keys.key(ATTESTATION_ISSUER, authority.kid) is not None  # does not unseat them
        monkeypatch.setattr(external, "MIN_REFETCH_SECONDS", 5.0)
        keys._fetched.clear()  # the last fetch was long ago
        fetched = len(calls)
        for _ in range(50):  # a burst of unknown kids: one refetch, not one each
            assert keys.key(ATTESTATION_ISSUER, "unknown-kid") is None
        await asyncio.sleep(0.01)
        assert len(calls) == fetched + 1
        assert keys.key(ATTESTATION_ISSUER, authority.kid) is not None
        assert keys.key("https://other.test", authority.kid) is None
        await keys.stop()

    asyncio.run(main())


def test_jwks_entries_with_only_a_certificate() -> None:
    """Microsoft Azure Attestation publishes its keys as `x5c` certificates."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = self_signed(key).public_bytes(serialization.Encoding.DER)
    jwk = {"kty": "RSA", "kid": "maa", "x5c": [base64.b64encode(der).decode()]}
    found = public_key_from_jwk(jwk)
    assert isinstance(found, rsa.RSAPublicKey)
    assert found.public_numbers() == key.public_key().public_numbers()
    for bad in ({"kty": "RSA", "x5c": ["bm90IGEgY2VydA=="]}, {"kty": "RSA", "x5c": [5]}, {}):
        assert public_key_from_jwk(bad) is None


def test_parse_jwt_refuses_what_is_not_one() -> None:
    nested = b64u_encode(b"[" * 5000)
    for token in ("", "a.b", "a.b.c.d", "e30.e30.!", f"{nested}.e30.", "W10.e30.", "x" * 9000):
        with pytest.raises(ValueError):
            parse_jwt(token)
    assert parse_jwt("e30.e30.")[:2] == ({}, {})


def test_attestation_issuers_check_kid_and_algorithm() -> None:
    clock = FakeClock()
    authority = AttestationAuthority(clock)

    async def main() -> AttestationIssuers:
        keys = IssuerKeys([ATTESTATION_ISSUER], fetch=authority.fetch)
        await keys.refresh(ATTESTATION_ISSUER)
        return AttestationIssuers(keys, clock)

    issuers = asyncio.run(main())
    token = authority.token({"x": 1})
    attested = issuers.verify(token)
    assert attested.issuer == ATTESTATION_ISSUER and attested.claims["x"] == 1
    header, claims, _, signature = parse_jwt(token)
    for changed in (
        {**header, "kid": "other"},
        {**header, "alg": "HS256"},
        {**header, "crit": ["x"]},
    ):
        forged = ".".join(
            [
                b64u_encode(json.dumps(changed).encode()),
                token.split(".")[1],
                b64u_encode(signature),
            ]
        )
        with pytest.raises(Forbidden):
            issuers.verify(forged)
    clock.advance(600 + 61)
    with pytest.raises(Forbidden, match="expired"):
        issuers.verify(token)
    assert claims["iss"] == ATTESTATION_ISSUER


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ec.generate_private_key(ec.SECP521R1()), "ES512"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    ],
)
def test_pool_signer_algorithms(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: str
) -> None:
    cert = self_signed(key)
    signer = PoolSigner(key, [cert])
    header, payload, signed, signature = parse_jwt(signer.sign({"hello": "world"}))
    assert payload == {"hello": "world"}
    assert header["alg"] == signer.alg == alg
    assert header["kid"] == header["x5t#S256"] == b64u_encode(cert.fingerprint(hashes.SHA256()))
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    assert verify_signature(public, alg, signed, signature)
    assert signer.chain_pem() == cert.public_bytes(serialization.Encoding.PEM)


def test_pool_signer_refuses_a_chain_of_another_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = self_signed(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError):
        PoolSigner(key, [other])
    with pytest.raises(ValueError):
        PoolSigner(key, [])
    small = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ValueError):
        PoolSigner(small, [self_signed(small)])


def test_pool_signer_from_the_partitions_tls_files(tmp_path: Path) -> None:
    """What a partition builds: `server.key`, `server.pem` and `ca.pem` from `mhsm up`."""
    ca, ca_key = ensure_pool_ca(tmp_path / "tls")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    issue_certificate(ca, ca_key, cert, key, names=["127.0.0.1"], server=True)
    signer = PoolSigner.from_pem(key.read_bytes(), cert.read_bytes(), ca.read_bytes())
    leaf, root = signer.chain
    leaf.verify_directly_issued_by(root)
    assert signer.alg == "ES256"
    assert signer.chain_pem() == cert.read_bytes() + ca.read_bytes()
    header, _, signed, signature = parse_jwt(signer.sign({}))
    assert len(header["x5c"]) == 2
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert verify_signature(public, "ES256", signed, signature)
    with pytest.raises(ValueError):
        PoolSigner.from_pem(key.read_bytes(), ca.read_bytes())
