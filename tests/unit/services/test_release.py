"""KeyRelease: secure key release to attested targets, and key attestation (no HTTP)."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from unit_stack import ATTESTATION_ISSUER, Stack, pool_signer

from openmhsm.auth.external import parse_jwt, verify_signature
from openmhsm.crypto.jwk import KeyMaterial, b64u_decode, b64u_encode, public_jwk
from openmhsm.crypto.key_wrap_export import unwrap_export
from openmhsm.errors import BadParameter, Forbidden, KeyNotFound
from openmhsm.services.release import ATTESTATION_VERSION, target_key

Runner = Callable[..., Any]
CLAIM = {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"}
POLICY = {"version": "1.0.0", "anyOf": [{"authority": ATTESTATION_ISSUER, "allOf": [CLAIM]}]}


@functools.cache
def target() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def runtime_keys(*keys: rsa.RSAPrivateKey, kid: str = "TpmEphemeralEncryptionKey") -> Any:
    jwks = [{**public_jwk(KeyMaterial("RSA", k)), "kid": kid, "use": "enc"} for k in keys]
    return {"keys": jwks}


def claims(tee: str = "sevsnpvm", **extra: Any) -> dict[str, Any]:
    return {
        "x-ms-isolation-tee": {"x-ms-attestation-type": tee},
        "x-ms-runtime": runtime_keys(target()),
        **extra,
    }


def release_policy(document: Any = POLICY, immutable: bool = False) -> dict[str, Any]:
    data = b64u_encode(json.dumps(document).encode())
    return {"contentType": "application/json; charset=utf-8", "immutable": immutable, "data": data}


async def exportable(s: Stack, name: str = "k", kty: str = "RSA-HSM", **extra: Any) -> Any:
    params = {
        "kty": kty,
        "attributes": {"exportable": True, **extra.pop("attributes", {})},
        "release_policy": release_policy(),
        **extra,
    }
    return await s.keys.create(name, params)


def run(hsm: Runner, body: Callable[[Stack], Awaitable[None]]) -> None:
    hsm(body, release=True)


def unwrap(key_hsm: str, enc: str = "CKM_RSA_AES_KEY_WRAP") -> bytes:
    envelope = json.loads(b64u_decode(key_hsm))
    assert envelope["schema_version"] == "1.0"
    assert envelope["header"] == {"kid": "TpmEphemeralEncryptionKey", "alg": "dir", "enc": enc}
    return unwrap_export(enc, target(), b64u_decode(envelope["ciphertext"]))


@pytest.mark.parametrize("enc", [None, "RSA_AES_KEY_WRAP_256", "RSA_AES_KEY_WRAP_384"])
def test_release_wraps_the_rsa_key_to_the_target(hsm: Runner, enc: str | None) -> None:
    async def body(s: Stack) -> None:
        kv = await exportable(s)
        assert s.release is not None and s.attestation is not None
        params: dict[str, Any] = {"target": s.attestation.token(claims()), "nonce": "n-1"}
        if enc is not None:
            params["enc"] = enc
        released = await s.release.release("k", None, params)
        assert released.kv == kv and released.nonce == "n-1"
        assert released.enc == (enc or "CKM_RSA_AES_KEY_WRAP")
        der = unwrap(released.key_hsm, released.enc)
        key = serialization.load_der_private_key(der, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        assert isinstance(kv.material.private, rsa.RSAPrivateKey)
        assert key.private_numbers() == kv.material.private.private_numbers()

    run(hsm, body)


def test_release_of_ec_and_oct_keys_and_of_a_named_version(hsm: Runner) -> None:
    async def body(s: Stack) -> None:
        assert s.release is not None and s.attestation is not None
        token = s.attestation.token(claims())
        ec_kv = await exportable(s, "e", "EC-HSM", crv="P-384")
        der = unwrap((await s.release.release("e", None, {"target": token})).key_hsm)
        key = serialization.load_der_private_key(der, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(ec_kv.material.private, ec.EllipticCurvePrivateKey)
        assert key.private_numbers() == ec_kv.material.private.private_numbers()
        v1 = await exportable(s, "o", "oct-HSM", key_size=256)
        await exportable(s, "o", "oct-HSM", key_size=128)
        released = await s.release.release("o", v1.version, {"target": token})
        assert released.kv.version == v1.version
        assert unwrap(released.key_hsm) == v1.material.private

    run(hsm, body)


def test_keys_that_cannot_be_released(hsm: Runner) -> None:
    async def body(s: Stack) -> None:
        assert s.release is not None and s.attestation is not None
        params = {"target": s.attestation.token(claims())}
        await s.keys.create("plain", {"kty": "RSA-HSM"})
        await exportable(s, "off", attributes={"enabled": False})
        now = int(s.clock.now())
        await exportable(s, "later", attributes={"nbf": now + 60})
        await exportable(s, "gone", attributes={"exp": now})
        for name, words in (
            ("plain", "not exportable"),
            ("off", "disabled"),
            ("later", "not yet valid"),
            ("gone", "expired"),
        ):
            with pytest.raises(Forbidden, match=words):
                await s.release.release(name, None, params)
        with pytest.raises(KeyNotFound):
            await s.release.release("nothing", None, params)
        with pytest.raises(KeyNotFound):
            await s.release.release("off", "0" * 32, params)

    run(hsm, body)


def test_tokens_that_are_refused(hsm: Runner) -> None:
    async def body(s: Stack) -> None:
        assert s.release is not None and s.attestation is not None
        await exportable(s)
        authority = s.attestation
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        header, body_, _, _ = parse_jwt(authority.token(claims()))
        unsigned = (
            f"{b64u_encode(json.dumps(header).encode())}.{b64u_encode(json.dumps(body_).encode())}."
        )
        refused = {
            "does not satisfy": authority.token(claims(tee="vbs")),
            "not issued by a trusted": authority.token(claims(), issuer="https://evil.test"),
            "signature is invalid": authority.token(claims(), key=stranger),
            "signature is invalid ": unsigned,
            "has expired": authority.token(claims(), lifetime=-120),
            "not valid yet": authority.token({**claims(), "nbf": int(s.clock.now()) + 600}),
            "no valid 'exp'": authority.token({**claims(), "exp": None}),
        }
        for words, token in refused.items():
            with pytest.raises(Forbidden, match=words.strip()):
                await s.release.release("k", None, {"target": token})
        for token in ("", "not a jwt", "a.b.c", "e30.e30", "x" * 70_000):
            with pytest.raises(BadParameter):
                await s.release.release("k", None, {"target": token})

    run(hsm, body)


def test_bad_parameters(hsm: Runner) -> None:
    async def body(s: Stack) -> None:
        assert s.release is not None and s.attestation is not None
        await exportable(s)
        token = s.attestation.token(claims())
        for params in (
            {},
            {"target": 5},
            {"target": token, "enc": "RSA-OAEP"},
            {"target": token, "enc": 1},
            {"target": token, "nonce": 7},
            {"target": token, "nonce": "n" * 1025},
            {"target": s.attestation.token({**claims(), "x-ms-runtime": {}})},
        ):
            with pytest.raises(BadParameter):
                await s.release.release("k", None, params)

    run(hsm, body)


def test_unreadable_policies_are_never_satisfied(hsm: Runner) -> None:
    async def body(s: Stack) -> None:
        assert s.release is not None and s.attestation is not None
        bad = {"version": "9", "anyOf": POLICY["anyOf"]}
        await s.keys.create(
            "k",
            {
                "kty": "RSA-HSM",
                "attributes": {"exportable": True},
                "release_policy": release_policy(bad),
            },
        )
        with pytest.raises(Forbidden, match="cannot be evaluated"):
            await s.release.release("k", None, {"target": s.attestation.token(claims())})

    run(hsm, body)


def test_a_pool_without_attestation_issuers_releases_nothing(hsm: Runner) -> None:
    async def body(s: Stack) -> None:
        assert s.release is not None and s.attestation is not None
        await exportable(s)
        s.release.issuers = None
        with pytest.raises(Forbidden, match="trusts no attestation"):
            await s.release.release("k", None, {"target": s.attestation.token(claims())})

    run(hsm, body)


def test_target_key_choice() -> None:
    a, b = target(), rsa.generate_private_key(public_exponent=65537, key_size=2048)
    first = {"x-ms-runtime": {"keys": [{**public_jwk(KeyMaterial("RSA", a)), "kid": "first"}]}}
    assert target_key(first)[0] == "first"
    both = runtime_keys(a, kid="other")["keys"] + runtime_keys(b)["keys"]
    kid, key = target_key({"x-ms-runtime": {"keys": [{"kty": "EC"}, *both]}})
    assert kid == "TpmEphemeralEncryptionKey"
    assert key.public_numbers() == b.public_key().public_numbers()
    for bad in ({}, {"x-ms-runtime": []}, {"x-ms-runtime": {"keys": [{"kty": "RSA"}]}}):
        with pytest.raises(BadParameter):
            target_key(bad)


def verify_statement(blob: str, pem_file: str) -> dict[str, Any]:
    """The payload of an attestation statement, after checking it against the chain."""
    chain = x509.load_pem_x509_certificates(b64u_decode(pem_file))
    assert chain == list(pool_signer().chain)
    chain[0].verify_directly_issued_by(chain[1])
    header, payload, signed, signature = parse_jwt(b64u_decode(blob).decode())
    assert header["alg"] == "ES256"
    assert header["kid"] == b64u_encode(chain[0].fingerprint(hashes.SHA256()))
    leaf = chain[0].public_key()
    assert isinstance(leaf, ec.EllipticCurvePublicKey)
    assert verify_signature(leaf, "ES256", signed, signature)
    der = [base64.b64decode(c) for c in header["x5c"]]
    assert der == [c.public_bytes(serialization.Encoding.DER) for c in chain]
    return payload


def test_attestation_of_hsm_keys(hsm: Runner) -> None:
    async def body(s: Stack) -> None:
        assert s.release is not None
        kv = await s.keys.create("r", {"kty": "RSA-HSM", "key_ops": ["sign"]})
        statement = s.release.attest(kv, "https://h/keys/r/v")
        assert statement["version"] == ATTESTATION_VERSION
        private = verify_statement(
            statement["privateKeyAttestation"], statement["certificatePemFile"]
        )
        public = verify_statement(
            statement["publicKeyAttestation"], statement["certificatePemFile"]
        )
        assert private["attests"] == "private" and public["attests"] == "public"
        assert private["kid"] == public["kid"] == "https://h/keys/r/v"
        assert private["kty"] == "RSA-HSM" and private["key_size"] == 2048
        assert private["key_ops"] == ["sign"] and private["exportable"] is False
        assert public["jwk"] == public_jwk(kv.material)
        assert public["jwk_thumbprint"] == private["jwk_thumbprint"]
        assert private["iat"] == int(s.clock.now())

        ec_kv = await s.keys.create("e", {"kty": "EC-HSM", "crv": "P-256K"})
        assert (
            verify_statement(
                s.release.attest(ec_kv, "kid")["privateKeyAttestation"],
                s.release.attest(ec_kv, "kid")["certificatePemFile"],
            )["crv"]
            == "P-256K"
        )
        oct_kv = await s.keys.create("o", {"kty": "oct-HSM"})
        oct_statement = s.release.attest(oct_kv, "kid")
        assert "publicKeyAttestation" not in oct_statement
        private = verify_statement(
            oct_statement["privateKeyAttestation"], oct_statement["certificatePemFile"]
        )
        assert "jwk_thumbprint" not in private and private["key_size"] == 256
        for kty in ("RSA", "EC", "oct"):
            plain = await s.keys.create(f"p-{kty}", {"kty": kty})
            with pytest.raises(BadParameter, match="only available for HSM keys"):
                s.release.attest(plain, "kid")

    run(hsm, body)


def test_statements_verify_only_with_the_pool_key() -> None:
    signer = pool_signer()
    _, payload, signed, signature = parse_jwt(signer.sign({"a": 1}))
    assert payload == {"a": 1}
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not verify_signature(other, "ES256", signed, signature)
    leaf = signer.chain[0].public_key()
    assert isinstance(leaf, ec.EllipticCurvePublicKey)
    assert not verify_signature(leaf, "ES256", signed + b"x", signature)
