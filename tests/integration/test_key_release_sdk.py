"""Secure key release and key attestation with the Azure SDK against a dev pool that trusts a test
attestation issuer (`mhsm up --attestation-issuer URL`), served over HTTPS from this process.

The released key is unwrapped with the target's private key and proven to be the pool's key by
signing with each and verifying with the other."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient, KeyReleasePolicy
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dev_pool import DevPool, start_pool
from keys_support import (
    b64u,
    der_to_raw,
    raw_to_der,
    release_connections,
    sdk_key_client,
    unb64u,
)
from test_external_issuer import Issuer

from openmhsm.crypto.key_wrap_export import unwrap_export

CLAIM = {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"}
DIGEST = hashlib.sha256(b"released and held").digest()


@functools.cache
def target() -> rsa.RSAPrivateKey:
    """The release target's key: only the attested environment holds its private part."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def policy(authority: str) -> KeyReleasePolicy:
    document = {"version": "1.0.0", "anyOf": [{"authority": authority, "allOf": [CLAIM]}]}
    return KeyReleasePolicy(json.dumps(document).encode())


def attestation_token(
    issuer: Issuer, *, tee: str = "sevsnpvm", iss: str | None = None, lifetime: int = 600
) -> str:
    """An attestation token as Microsoft Azure Attestation shapes one for a confidential VM."""
    numbers = target().public_key().public_numbers()
    runtime_key = {
        "kty": "RSA",
        "kid": "TpmEphemeralEncryptionKey",
        "use": "enc",
        "n": b64u(numbers.n.to_bytes(256, "big")),
        "e": b64u(numbers.e.to_bytes(3, "big")),
    }
    now = int(time.time())
    claims = {
        "iss": iss or issuer.url,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "x-ms-isolation-tee": {"x-ms-attestation-type": tee},
        "x-ms-runtime": {"keys": [runtime_key]},
    }
    header = {"alg": "RS256", "typ": "JWT", "kid": "k1"}
    signing_input = ".".join(b64u(json.dumps(part).encode()) for part in (header, claims))
    signature = issuer.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64u(signature)}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Issuer, DevPool]]:
    root = tmp_path_factory.mktemp("release")
    issuer = Issuer(root)
    pool = start_pool(
        root, "--attestation-issuer", issuer.url, "--trusted-issuer-ca", str(issuer.ca)
    )
    yield issuer, pool
    pool.stop()
    issuer.stop()


@pytest.fixture(scope="module")
def client(setup: tuple[Issuer, DevPool]) -> Iterator[KeyClient]:
    with sdk_key_client(setup[1]) as key_client:
        yield key_client


def verified_payload(value: str, pool: DevPool) -> dict[str, Any]:
    """The payload of a release result, after checking its signature and chain to the pool CA."""
    head, body, signature = value.split(".")
    header = json.loads(unb64u(head))
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
    pool_ca = x509.load_pem_x509_certificate(Path(pool.ca).read_bytes())
    assert chain[-1] == pool_ca
    chain[0].verify_directly_issued_by(pool_ca)
    assert header["alg"] == "ES256"
    assert header["kid"] == b64u(chain[0].fingerprint(hashes.SHA256()))
    leaf = chain[0].public_key()
    assert isinstance(leaf, ec.EllipticCurvePublicKey)
    leaf.verify(raw_to_der(unb64u(signature)), f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    payload: dict[str, Any] = json.loads(unb64u(body))
    return payload


def released_key(payload: dict[str, Any]) -> Any:
    envelope = json.loads(unb64u(payload["response"]["key"]["key"]["key_hsm"]))
    assert envelope["header"]["kid"] == "TpmEphemeralEncryptionKey"
    der = unwrap_export(envelope["header"]["enc"], target(), unb64u(envelope["ciphertext"]))
    return serialization.load_der_private_key(der, password=None)


def test_released_rsa_key_is_the_pools_key(
    setup: tuple[Issuer, DevPool], client: KeyClient
) -> None:
    issuer, pool = setup
    held = client.create_rsa_key(
        "skr-rsa", hardware_protected=True, exportable=True, release_policy=policy(issuer.url)
    )
    assert held.properties.exportable and held.properties.release_policy is not None
    result = client.release_key("skr-rsa", attestation_token(issuer), nonce="fresh")
    payload = verified_payload(result.value, pool)
    assert payload["request"]["kid"].endswith("/keys/skr-rsa")
    assert payload["request"]["nonce"] == "fresh"
    assert payload["response"]["key"]["key"]["kid"] == held.id
    released = released_key(payload)
    assert isinstance(released, rsa.RSAPrivateKey)

    with (
        pool.credential() as credential,
        CryptographyClient(held, credential, connection_verify=pool.ca) as crypto,
    ):
        ours = released.sign(DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        assert crypto.verify(SignatureAlgorithm.rs256, DIGEST, ours).is_valid
        theirs = crypto.sign(SignatureAlgorithm.rs256, DIGEST).signature
    released.public_key().verify(theirs, DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    release_connections()


def test_released_ec_key_of_a_named_version(
    setup: tuple[Issuer, DevPool], client: KeyClient
) -> None:
    issuer, pool = setup
    first = client.create_ec_key(
        "skr-ec", hardware_protected=True, exportable=True, release_policy=policy(issuer.url)
    )
    client.create_ec_key(
        "skr-ec", hardware_protected=True, exportable=True, release_policy=policy(issuer.url)
    )
    result = client.release_key(
        "skr-ec",
        attestation_token(issuer),
        version=first.properties.version,
        algorithm="RSA_AES_KEY_WRAP_256",
    )
    payload = verified_payload(result.value, pool)
    assert payload["request"]["enc"] == "RSA_AES_KEY_WRAP_256"
    released = released_key(payload)
    assert isinstance(released, ec.EllipticCurvePrivateKey)

    with (
        pool.credential() as credential,
        CryptographyClient(first, credential, connection_verify=pool.ca) as crypto,
    ):
        ours = der_to_raw(released.sign(DIGEST, ec.ECDSA(Prehashed(hashes.SHA256()))), "P-256")
        assert crypto.verify(SignatureAlgorithm.es256, DIGEST, ours).is_valid
        theirs = crypto.sign(SignatureAlgorithm.es256, DIGEST).signature
    released.public_key().verify(raw_to_der(theirs), DIGEST, ec.ECDSA(Prehashed(hashes.SHA256())))
    release_connections()


def test_release_refusals(setup: tuple[Issuer, DevPool], client: KeyClient) -> None:
    issuer, _ = setup
    client.create_rsa_key(
        "skr-refused", hardware_protected=True, exportable=True, release_policy=policy(issuer.url)
    )
    client.create_rsa_key("skr-plain", hardware_protected=True)
    refusals = {
        "policy not satisfied": ("skr-refused", attestation_token(issuer, tee="vbs")),
        "untrusted issuer": ("skr-refused", attestation_token(issuer, iss="https://evil.test")),
        "expired token": ("skr-refused", attestation_token(issuer, lifetime=-300)),
        "non-exportable key": ("skr-plain", attestation_token(issuer)),
    }
    for why, (name, token) in refusals.items():
        with pytest.raises(HttpResponseError) as caught:
            client.release_key(name, token)
        assert caught.value.status_code == 403, why
        assert caught.value.error is not None and caught.value.error.code == "Forbidden", why
    with pytest.raises(ResourceNotFoundError):
        client.release_key("skr-nothing", attestation_token(issuer))
    with pytest.raises(HttpResponseError) as caught:
        client.release_key("skr-refused", "not-a-token")
    assert caught.value.status_code == 400
    release_connections()


def test_immutable_release_policy(setup: tuple[Issuer, DevPool], client: KeyClient) -> None:
    issuer, _ = setup
    fixed = KeyReleasePolicy(policy(issuer.url).encoded_policy, immutable=True)
    client.create_rsa_key(
        "skr-fixed", hardware_protected=True, exportable=True, release_policy=fixed
    )
    with pytest.raises(HttpResponseError) as caught:
        client.update_key_properties("skr-fixed", release_policy=policy("https://evil.test"))
    assert caught.value.status_code in (400, 403)
    kept = client.get_key("skr-fixed").properties.release_policy
    assert kept is not None and kept.immutable
    assert kept.encoded_policy == fixed.encoded_policy
    release_connections()


def test_key_attestation(setup: tuple[Issuer, DevPool], client: KeyClient) -> None:
    _, pool = setup
    key = client.create_ec_key("attested", hardware_protected=True)
    attested = client.get_key_attestation("attested")
    assert attested.id == key.id
    attestation = attested.properties.attestation
    assert attestation is not None and attestation.version
    assert attestation.certificate_pem_file is not None
    chain = x509.load_pem_x509_certificates(attestation.certificate_pem_file)
    pool_ca = x509.load_pem_x509_certificate(Path(pool.ca).read_bytes())
    assert chain[-1] == pool_ca
    chain[0].verify_directly_issued_by(pool_ca)
    for blob in (attestation.private_key_attestation, attestation.public_key_attestation):
        assert blob is not None
        statement = verified_payload(blob.decode(), pool)
        assert statement["kid"] == key.id and statement["kty"] == "EC-HSM"
    assert client.get_key("attested").properties.attestation is None
    client.create_ec_key("not-hsm", hardware_protected=False)
    with pytest.raises(HttpResponseError) as caught:
        client.get_key_attestation("not-hsm")
    assert caught.value.status_code == 400
    release_connections()
