"""Issue 4: activation by a quorum download, recovery mode, upload and disaster recovery, driven
by azure-keyvault-securitydomain's SecurityDomainClient against real dev pools."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys.crypto import SignatureAlgorithm
from azure.keyvault.securitydomain import SecurityDomainClient
from azure.keyvault.securitydomain.models import CertificateInfo, SecurityDomain
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from dev_pool import DevPool, start_pool

from openmhsm.cli.activation import certificate_jwk, make_wrapping_keys
from openmhsm.client import connect
from openmhsm.crypto.jwk import b64u_decode
from openmhsm.domain import blob
from openmhsm.domain.failures import SecurityDomainError

DIGEST = hashlib.sha256(b"disaster recovery").digest()


def sd_client(pool: DevPool) -> SecurityDomainClient:
    return SecurityDomainClient(pool.url, pool.credential(), connection_verify=pool.ca)


def load_keys(folder: Path, names: list[str]) -> list[tuple[rsa.RSAPrivateKey, x509.Certificate]]:
    pairs = []
    for name in names:
        key = serialization.load_pem_private_key((folder / f"{name}.key").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        cert = x509.load_pem_x509_certificate((folder / f"{name}.cer").read_bytes())
        pairs.append((key, cert))
    return pairs


def state(pool: DevPool) -> str:
    with pool.http() as http:
        return str(http.get("/readyz").json()["state"])


@pytest.fixture(scope="module")
def pools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevPool, DevPool]]:
    """Pool A (activated by `mhsm up` itself) and pool B (recovery mode)."""
    a = start_pool(tmp_path_factory.mktemp("sd-a"))
    b = start_pool(tmp_path_factory.mktemp("sd-b"), "--recovery")
    yield a, b
    a.stop()
    b.stop()


def test_manual_activation_by_download(tmp_path: Path) -> None:
    pool = start_pool(tmp_path, "--no-activate")
    try:
        assert state(pool) == "NotActivated"
        with pool.http() as http:
            refused = http.post("/keys/k1/create?api-version=7.6", json={"kty": "EC-HSM"})
        assert refused.status_code == 403
        assert "not activated" in refused.json()["error"]["message"]
        certs = [c for c, _ in make_wrapping_keys(3, tmp_path / "keys")]
        client = sd_client(pool)
        with pytest.raises(HttpResponseError):  # a quorum above the number of certificates
            client.begin_download(
                certificate_info=CertificateInfo(
                    {"certificates": [certificate_jwk(c) for c in certs], "required": 4}
                )
            ).result()
        assert state(pool) == "NotActivated"
        info = CertificateInfo({"certificates": [certificate_jwk(c) for c in certs], "required": 2})
        poller = client.begin_download(certificate_info=info)
        sd_text = poller.result().value
        assert poller.status().lower() == "success"
        assert client.get_download_status().status.lower() == "success"
        document = json.loads(sd_text)
        assert document["SharedKeys"]["required"] == 2
        assert len(document["SharedKeys"]["enc_shares"]) == 3
        assert state(pool) == "Active"
        # Like Managed HSM's initial administrators, the admin may assign roles, not use keys.
        with pytest.raises(HttpResponseError) as refused_key:
            pool.key_client().create_ec_key("after-activation", curve="P-256")
        assert refused_key.value.status_code == 403
        assert "keys/create" in str(refused_key.value)
        pool.grant_key_roles()
        key = pool.key_client().create_ec_key("after-activation", curve="P-256")
        assert key.properties.enabled
        # Any two of the three keys open the file; one alone does not.
        keys = load_keys(tmp_path / "keys", ["w0", "w1", "w2"])
        data = blob.read_download_file(sd_text, keys[1:])
        assert set(data) == set(blob.TAGS)
        with pytest.raises(SecurityDomainError):
            blob.read_download_file(sd_text, keys[:1])
    finally:
        pool.stop()


def test_disaster_recovery_into_a_new_pool(pools: tuple[DevPool, DevPool], tmp_path: Path) -> None:
    a, b = pools
    folder = a.data_dir / "security-domain"
    assert state(a) == "Active" and (folder / "sd.json").exists()
    client_a = a.key_client()
    key = client_a.create_ec_key("survivor", curve="P-256")
    backup = client_a.backup_key("survivor")

    assert state(b) == "Recovery"
    with b.http() as http:
        refused = http.post("/keys/restore?api-version=7.6", json={"value": "AA"})
    assert refused.status_code == 403
    sd_b = sd_client(b)
    exchange = _exchange(b)

    sd_text = (folder / "sd.json").read_text()
    keys = load_keys(folder, ["w0", "w2"])
    restore_blob = blob.make_restore_blob(sd_text, keys, exchange)
    poller = sd_b.begin_upload(security_domain=SecurityDomain({"value": restore_blob}))
    poller.result()
    assert poller.status().lower() == "success"
    assert sd_b.get_upload_status().status.lower() == "success"
    assert state(b) == "Active"
    b.grant_key_roles()

    client_b = b.key_client()
    restored = client_b.restore_key_backup(backup)
    assert restored.properties.version == key.properties.version
    fetched = b.key_client().get_key("survivor")
    crypto = connect(b.data_dir).crypto(restored.id)
    result = crypto.sign(SignatureAlgorithm.es256, DIGEST)
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64u_decode(_b64(key.key.x)), "big"),
        int.from_bytes(b64u_decode(_b64(key.key.y)), "big"),
        ec.SECP256R1(),
    ).public_key()
    r = int.from_bytes(result.signature[:32], "big")
    s = int.from_bytes(result.signature[32:], "big")
    public.verify(
        utils.encode_dss_signature(r, s), DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    )
    assert fetched.id.split("/keys/")[1] == restored.id.split("/keys/")[1]


def _b64(value: bytes | None) -> str:
    assert value is not None
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


def test_bad_uploads_are_refused_and_change_nothing(tmp_path: Path) -> None:
    for name in ("a", "b", "other"):
        (tmp_path / name).mkdir()
    a = start_pool(tmp_path / "a")
    b = start_pool(tmp_path / "b", "--recovery")
    other = start_pool(tmp_path / "other", "--recovery")
    try:
        folder = a.data_dir / "security-domain"
        sd_text = (folder / "sd.json").read_text()
        keys = load_keys(folder, ["w0", "w1"])
        with pytest.raises(SecurityDomainError):  # fewer than the quorum
            blob.make_restore_blob(sd_text, keys[:1], _exchange(b))
        wrong = _fresh_keys(tmp_path / "wrong", 2)
        with pytest.raises(SecurityDomainError):  # keys the file was not wrapped to
            blob.make_restore_blob(sd_text, wrong, _exchange(b))
        good = blob.make_restore_blob(sd_text, keys, _exchange(b))
        tampered = json.loads(good)
        tampered["EncData"]["data"][0]["compact_jwe"] = _flip(
            tampered["EncData"]["data"][0]["compact_jwe"]
        )
        for_other = blob.make_restore_blob(sd_text, keys, _exchange(other))
        client = sd_client(b)
        for bad in (json.dumps(tampered), for_other, "{}", "not json"):
            with pytest.raises(HttpResponseError) as info:
                client.begin_upload(security_domain=SecurityDomain({"value": bad})).result()
            assert info.value.status_code == 400
            assert state(b) == "Recovery"
        client.begin_upload(security_domain=SecurityDomain({"value": good})).result()
        assert state(b) == "Active"
    finally:
        for pool in (a, b, other):
            pool.stop()


def _exchange(pool: DevPool) -> x509.Certificate:
    # A JSON-encoded JWK *string*, as the Azure CLI and the SDK's own tests expect (API §4.1).
    jwk = json.loads(str(sd_client(pool).get_transfer_key().transfer_key))
    return x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))


def _fresh_keys(folder: Path, count: int) -> list[tuple[rsa.RSAPrivateKey, x509.Certificate]]:
    made = make_wrapping_keys(count, folder)
    return load_keys(folder, [cert.stem for cert, _ in made])


def _flip(token: str) -> str:
    parts = token.split(".")
    raw = bytearray(b64u_decode(parts[3]))
    raw[0] ^= 1
    parts[3] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return ".".join(parts)
