"""`POST /keys/{name}[/{version}]/release` and `GET /keys/{name}[/{version}]/attestation` through
the in-process app: the signed release result as Managed HSM shapes it, refusals in Key Vault's
error shape, key attestation, and immutable release policies."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from unit_stack import ATTESTATION_ISSUER, ApiHarness

from openmhsm.auth.external import parse_jwt, verify_signature
from openmhsm.crypto.jwk import KeyMaterial, b64u_decode, b64u_encode, public_jwk
from openmhsm.crypto.key_wrap_export import unwrap_export

API = "api-version=2025-07-01"
BASE = "https://127.0.0.1:8443"
CLAIM = {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"}
POLICY = {"version": "1.0.0", "anyOf": [{"authority": ATTESTATION_ISSUER, "allOf": [CLAIM]}]}


@functools.cache
def target() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(tee: str = "sevsnpvm") -> dict[str, Any]:
    jwk = {**public_jwk(KeyMaterial("RSA", target())), "kid": "TpmEphemeralEncryptionKey"}
    return {"x-ms-isolation-tee": {"x-ms-attestation-type": tee}, "x-ms-runtime": {"keys": [jwk]}}


def release_policy(document: Any = POLICY, *, immutable: bool = False) -> dict[str, Any]:
    return {"data": b64u_encode(json.dumps(document).encode()), "immutable": immutable}


def create(api: ApiHarness, name: str, **body: Any) -> dict[str, Any]:
    params = {
        "kty": "RSA-HSM",
        "attributes": {"exportable": True},
        "release_policy": release_policy(),
        **body,
    }
    r = api.client.post(f"/keys/{name}/create?{API}", json=params)
    assert r.status_code == 200, r.text
    made: dict[str, Any] = r.json()
    return made


def token(api: ApiHarness, tee: str = "sevsnpvm") -> str:
    assert api.stack.attestation is not None
    return api.stack.attestation.token(claims(tee))


def assert_error(r: Any, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    message: str = error["message"]
    return message


@pytest.fixture
def rapi(make_api: Callable[..., ApiHarness]) -> ApiHarness:
    return make_api(release=True)


def test_without_a_release_service_both_answer_not_supported(api: ApiHarness) -> None:
    create(api, "k")
    assert_error(
        api.client.post(f"/keys/k//release?{API}", json={"target": "x"}), 400, "NotSupported"
    )
    assert_error(api.client.get(f"/keys/k//attestation?{API}"), 400, "NotSupported")


@pytest.mark.parametrize("versioned", [False, True])
def test_release_answers_a_signed_managed_hsm_payload(rapi: ApiHarness, versioned: bool) -> None:
    made = create(rapi, "k")
    version = made["key"]["kid"].rsplit("/", 1)[1]
    path = f"/keys/k/{version}/release" if versioned else "/keys/k//release"
    r = rapi.client.post(f"{path}?{API}", json={"target": token(rapi), "nonce": "abc"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"value"}
    header, payload, signed, signature = parse_jwt(r.json()["value"])

    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
    assert len(chain) == 2
    chain[0].verify_directly_issued_by(chain[1])
    assert header["alg"] == "ES256"
    assert header["kid"] == header["x5t#S256"] == b64u_encode(chain[0].fingerprint(hashes.SHA256()))
    leaf = chain[0].public_key()
    assert isinstance(leaf, ec.EllipticCurvePublicKey)
    assert verify_signature(leaf, "ES256", signed, signature)

    assert payload["request"] == {
        "api-version": "2025-07-01",
        "enc": "CKM_RSA_AES_KEY_WRAP",
        "kid": f"{BASE}/keys/k/{version}" if versioned else f"{BASE}/keys/k",
        "nonce": "abc",
    }
    released = payload["response"]["key"]
    assert released["attributes"] == made["attributes"]
    assert released["release_policy"] == made["release_policy"]
    jwk = released["key"]
    assert {k: v for k, v in jwk.items() if k != "key_hsm"} == made["key"]
    envelope = json.loads(b64u_decode(jwk["key_hsm"]))
    assert envelope["header"] == {
        "kid": "TpmEphemeralEncryptionKey",
        "alg": "dir",
        "enc": "CKM_RSA_AES_KEY_WRAP",
    }
    der = unwrap_export("CKM_RSA_AES_KEY_WRAP", target(), b64u_decode(envelope["ciphertext"]))
    key = serialization.load_der_private_key(der, password=None)
    held = rapi.call(rapi.stack.keys.get, "k").material.private
    assert isinstance(key, rsa.RSAPrivateKey) and isinstance(held, rsa.RSAPrivateKey)
    assert key.private_numbers() == held.private_numbers()


def test_release_with_enc(rapi: ApiHarness) -> None:
    create(rapi, "k")
    body = {"target": token(rapi), "enc": "RSA_AES_KEY_WRAP_384"}
    r = rapi.client.post(f"/keys/k//release?{API}", json=body)
    assert r.status_code == 200, r.text
    payload = parse_jwt(r.json()["value"])[1]
    assert payload["request"]["enc"] == "RSA_AES_KEY_WRAP_384"
    assert "nonce" not in payload["request"]
    envelope = json.loads(b64u_decode(payload["response"]["key"]["key"]["key_hsm"]))
    blob = b64u_decode(envelope["ciphertext"])
    assert unwrap_export("RSA_AES_KEY_WRAP_384", target(), blob)


def test_release_refusals(rapi: ApiHarness) -> None:
    create(rapi, "k")
    r = rapi.client.post(f"/keys/plain/create?{API}", json={"kty": "RSA-HSM"})
    assert r.status_code == 200

    def release(name: str, body: Any) -> Any:
        return rapi.client.post(f"/keys/{name}//release?{API}", json=body)

    message = assert_error(release("k", {"target": token(rapi, "vbs")}), 403, "Forbidden")
    assert "release policy" in message
    assert_error(release("plain", {"target": token(rapi)}), 403, "Forbidden")
    assert rapi.stack.attestation is not None
    untrusted = rapi.stack.attestation.token(claims(), issuer="https://evil.test")
    assert_error(release("k", {"target": untrusted}), 403, "Forbidden")
    assert_error(release("nothing", {"target": token(rapi)}), 404, "KeyNotFound")
    assert_error(release("k", {"target": "not-a-jwt"}), 400, "BadParameter")
    assert_error(release("k", {"target": token(rapi), "enc": "RSA-OAEP"}), 400, "BadParameter")
    assert_error(release("k", {}), 400, "BadParameter")
    assert_error(rapi.client.post(f"/keys/k//release?{API}", content=b"[]"), 400, "BadParameter")
    r = rapi.client.post(f"/keys/k/{'0' * 32}/release?{API}", json={"target": token(rapi)})
    assert_error(r, 404, "KeyNotFound")


def test_attestation(rapi: ApiHarness) -> None:
    made = create(rapi, "k")
    r = rapi.client.get(f"/keys/k//attestation?{API}")
    assert r.status_code == 200, r.text
    bundle = r.json()
    attestation = bundle["attributes"].pop("attestation")
    assert bundle == made
    assert set(attestation) == {
        "version",
        "certificatePemFile",
        "privateKeyAttestation",
        "publicKeyAttestation",
    }
    pem = b64u_decode(attestation["certificatePemFile"])
    leaf, root = x509.load_pem_x509_certificates(pem)
    leaf.verify_directly_issued_by(root)
    for field, kind in (("privateKeyAttestation", "private"), ("publicKeyAttestation", "public")):
        _, statement, signed, signature = parse_jwt(b64u_decode(attestation[field]).decode())
        public = leaf.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert verify_signature(public, "ES256", signed, signature)
        assert statement["attests"] == kind and statement["kid"] == made["key"]["kid"]

    version = made["key"]["kid"].rsplit("/", 1)[1]
    r = rapi.client.get(f"/keys/k/{version}/attestation?{API}")
    assert r.status_code == 200 and "attestation" in r.json()["attributes"]
    assert "attestation" not in rapi.client.get(f"/keys/k/?{API}").json()["attributes"]
    assert_error(rapi.client.get(f"/keys/nothing//attestation?{API}"), 404, "KeyNotFound")
    assert rapi.client.post(f"/keys/soft/create?{API}", json={"kty": "EC"}).status_code == 200
    assert_error(rapi.client.get(f"/keys/soft//attestation?{API}"), 400, "BadParameter")


def test_an_immutable_policy_cannot_change(rapi: ApiHarness) -> None:
    create(rapi, "k", release_policy=release_policy(immutable=True))
    exists = {"claim": "x-ms-isolation-tee", "exists": True}
    anyone = {"version": "1.0.0", "anyOf": [{"authority": ATTESTATION_ISSUER, "allOf": [exists]}]}
    for patch in (release_policy(anyone), release_policy(anyone, immutable=True)):
        r = rapi.client.patch(f"/keys/k/?{API}", json={"release_policy": patch})
        assert r.status_code in (400, 403), r.text
    policy = rapi.client.get(f"/keys/k/?{API}").json()["release_policy"]
    assert policy["immutable"] is True
    assert json.loads(b64u_decode(policy["data"])) == POLICY
    r = rapi.client.post(f"/keys/k//release?{API}", json={"target": token(rapi, "vbs")})
    assert_error(r, 403, "Forbidden")
    rotated = rapi.client.post(f"/keys/k/rotate?{API}")
    assert rotated.status_code == 200 and rotated.json()["release_policy"] == policy
