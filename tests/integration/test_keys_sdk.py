"""The keys data plane driven by the unmodified Azure SDK (`KeyClient`, `CryptographyClient`):
key types and sizes, import, versions, properties, paging, rotation, soft-delete, backup, rng,
and the attribute and key_ops checks that gate crypto operations."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import (
    JsonWebKey,
    KeyClient,
    KeyCurveName,
    KeyOperation,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
    KeyType,
)
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from keys_support import (
    API,
    assert_kv_error,
    b64u,
    ec_jwk,
    ec_public,
    raw_to_der,
    rsa_jwk,
    rsa_public,
)

if TYPE_CHECKING:
    from dev_pool import DevPool

DIGEST = hashlib.sha256(b"keys data plane").digest()
COORD = {"P-256": 32, "P-256K": 32, "P-384": 48, "P-521": 66}


def crypto_for(
    pool: DevPool, credential: ClientSecretCredential, key_id: str
) -> CryptographyClient:
    return CryptographyClient(key_id, credential, connection_verify=pool.ca)


def server_sign(
    pool: DevPool,
    credential: ClientSecretCredential,
    key_id: str,
    alg: SignatureAlgorithm = SignatureAlgorithm.es256,
) -> bytes:
    with crypto_for(pool, credential, key_id) as crypto:
        return crypto.sign(alg, DIGEST).signature


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# --- key types and sizes ------------------------------------------------------------------


@pytest.mark.parametrize("size", [2048, 3072])
def test_create_rsa_hsm(key_client: KeyClient, size: int) -> None:
    key = key_client.create_rsa_key(f"rsa-{size}", size=size, hardware_protected=True)
    assert key.key_type == KeyType.rsa_hsm
    assert rsa_public(key.key).key_size == size
    assert int.from_bytes(key.key.e, "big") == 65537
    assert key.key.d is None and key.key.p is None
    assert set(key.key_operations) == {
        "encrypt",
        "decrypt",
        "sign",
        "verify",
        "wrapKey",
        "unwrapKey",
    }
    assert key.properties.recovery_level == "Recoverable+Purgeable"
    assert key.properties.recoverable_days == 90
    assert key.properties.enabled is True
    assert len(key.properties.version) == 32


def test_create_rsa_4096_signs(
    dev_pool: DevPool, key_client: KeyClient, credential: ClientSecretCredential
) -> None:
    key = key_client.create_rsa_key("rsa-4096", size=4096, hardware_protected=True)
    assert rsa_public(key.key).key_size == 4096
    signature = server_sign(dev_pool, credential, key.id, SignatureAlgorithm.rs256)
    rsa_public(key.key).verify(signature, DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256()))


def test_create_rsa_public_exponent(key_client: KeyClient) -> None:
    key = key_client.create_rsa_key("rsa-e3", size=2048, public_exponent=3, hardware_protected=True)
    assert int.from_bytes(key.key.e, "big") == 3
    rotated = key_client.rotate_key("rsa-e3")
    assert rotated.key.e == key.key.e and rotated.key.n != key.key.n


@pytest.mark.parametrize("curve", ["P-256", "P-256K", "P-384", "P-521"])
def test_create_ec_hsm(
    dev_pool: DevPool, key_client: KeyClient, credential: ClientSecretCredential, curve: str
) -> None:
    key = key_client.create_ec_key(f"ec-{curve}", curve=curve, hardware_protected=True)
    assert key.key_type == KeyType.ec_hsm
    assert key.key.crv == curve
    assert len(key.key.x) == len(key.key.y) == COORD[curve]
    assert key.key.d is None
    assert set(key.key_operations) == {"sign", "verify"}
    alg = {"P-256": "ES256", "P-256K": "ES256K", "P-384": "ES384", "P-521": "ES512"}[curve]
    hash_alg = {"P-384": hashes.SHA384(), "P-521": hashes.SHA512()}.get(curve, hashes.SHA256())
    digest_ = hashlib.new(hash_alg.name, b"m").digest()
    with crypto_for(dev_pool, credential, key.id) as crypto:
        signature = crypto.sign(SignatureAlgorithm(alg), digest_).signature
    assert len(signature) == 2 * COORD[curve]
    ec_public(key.key).verify(raw_to_der(signature), digest_, ec.ECDSA(Prehashed(hash_alg)))


def test_create_ec_default_curve_is_p256(key_client: KeyClient) -> None:
    key = key_client.create_key("ec-default", KeyType.ec_hsm)
    assert key.key.crv == KeyCurveName.p_256


@pytest.mark.parametrize("size", [128, 192, 256])
def test_create_oct_hsm(key_client: KeyClient, size: int) -> None:
    key = key_client.create_oct_key(f"oct-{size}", size=size, hardware_protected=True)
    assert key.key_type == KeyType.oct_hsm
    assert key.key.k is None, "symmetric key material must never leave the pool"
    assert set(key.key_operations) == {"encrypt", "decrypt", "wrapKey", "unwrapKey"}


def test_create_with_properties(key_client: KeyClient) -> None:
    nbf, exp = _now() - timedelta(hours=1), _now() + timedelta(days=30)
    key = key_client.create_ec_key(
        "ec-props",
        curve="P-384",
        hardware_protected=True,
        enabled=True,
        not_before=nbf,
        expires_on=exp,
        tags={"team": "payments", "env": "ci"},
        key_operations=[KeyOperation.sign],
    )
    got = key_client.get_key("ec-props")
    for k in (key, got):
        assert k.properties.not_before == nbf and k.properties.expires_on == exp
        assert k.properties.tags == {"team": "payments", "env": "ci"}
        assert k.key_operations == ["sign"]


# --- import -------------------------------------------------------------------------------


@pytest.mark.parametrize("crt", [True, False], ids=["with-crt", "without-crt"])
def test_import_rsa(
    dev_pool: DevPool, key_client: KeyClient, credential: ClientSecretCredential, crt: bool
) -> None:
    private = rsa.generate_private_key(65537, 2048)
    name = f"imported-rsa-{crt}".lower()
    key = key_client.import_key(
        name, rsa_jwk(private, crt=crt), hardware_protected=True, tags={"origin": "byok"}
    )
    assert key.key_type == KeyType.rsa_hsm
    assert key.key.n == rsa_jwk(private).n and key.key.d is None
    assert key.properties.tags == {"origin": "byok"}
    signature = server_sign(dev_pool, credential, key.id, SignatureAlgorithm.ps256)
    private.public_key().verify(
        signature,
        DIGEST,
        padding.PSS(padding.MGF1(hashes.SHA256()), 32),
        Prehashed(hashes.SHA256()),
    )


@pytest.mark.parametrize("curve", ["P-256", "P-521"])
def test_import_ec(
    dev_pool: DevPool, key_client: KeyClient, credential: ClientSecretCredential, curve: str
) -> None:
    private = ec.generate_private_key({"P-256": ec.SECP256R1(), "P-521": ec.SECP521R1()}[curve])
    jwk = ec_jwk(private, curve)
    key = key_client.import_key(f"imported-ec-{curve}", jwk, hardware_protected=True)
    assert key.key_type == KeyType.ec_hsm
    assert (key.key.crv, key.key.x, key.key.y) == (curve, jwk.x, jwk.y)
    alg = SignatureAlgorithm.es256 if curve == "P-256" else SignatureAlgorithm.es512
    hash_alg = hashes.SHA256() if curve == "P-256" else hashes.SHA512()
    digest_ = hashlib.new(hash_alg.name, b"imported").digest()
    with crypto_for(dev_pool, credential, key.id) as crypto:
        signature = crypto.sign(alg, digest_).signature
    private.public_key().verify(raw_to_der(signature), digest_, ec.ECDSA(Prehashed(hash_alg)))


def test_import_oct(key_client: KeyClient, http: httpx.Client) -> None:
    k = bytes(range(32))
    key = key_client.import_key("imported-oct", JsonWebKey(kty="oct", k=k), hardware_protected=True)
    assert key.key_type == KeyType.oct_hsm and key.key.k is None
    # The server uses the imported material: an A256KW wrap of a known key is deterministic.
    r = http.post(
        f"/keys/imported-oct/{key.properties.version}/wrapkey",
        params=API,
        json={"alg": "A256KW", "value": b64u(bytes(16))},
    )
    assert r.status_code == 200, r.text
    assert r.json()["value"] == b64u(aes_key_wrap(k, bytes(16)))


def test_import_without_hsm_flag_keeps_kty(key_client: KeyClient) -> None:
    key = key_client.import_key(
        "imported-plain-ec", ec_jwk(ec.generate_private_key(ec.SECP256R1()), "P-256")
    )
    assert key.key_type in (KeyType.ec, KeyType.ec_hsm)


# --- versions, properties, listing --------------------------------------------------------


def test_get_latest_and_by_version(key_client: KeyClient) -> None:
    v1 = key_client.create_ec_key("versioned", hardware_protected=True)
    v2 = key_client.create_ec_key("versioned", hardware_protected=True)
    assert v1.properties.version != v2.properties.version
    assert key_client.get_key("versioned").properties.version == v2.properties.version
    old = key_client.get_key("versioned", v1.properties.version)
    assert old.key.x == v1.key.x and old.id == v1.id
    assert key_client.get_key("VERSIONED").name == "versioned", "names are case-insensitive"
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key("versioned", "0" * 32)
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key("never-created")


def test_update_properties(key_client: KeyClient) -> None:
    v1 = key_client.create_rsa_key("updatable", size=2048, hardware_protected=True)
    v2 = key_client.create_rsa_key("updatable", size=2048, hardware_protected=True)
    nbf, exp = _now() - timedelta(minutes=5), _now() + timedelta(days=7)
    updated = key_client.update_key_properties(
        "updatable",
        enabled=False,
        not_before=nbf,
        expires_on=exp,
        tags={"a": "1"},
        key_operations=[KeyOperation.sign, KeyOperation.verify],
    )
    assert updated.properties.version == v2.properties.version
    assert updated.properties.enabled is False
    assert (updated.properties.not_before, updated.properties.expires_on) == (nbf, exp)
    assert updated.properties.tags == {"a": "1"}
    assert updated.key_operations == ["sign", "verify"]
    again = key_client.get_key("updatable")
    assert again.properties.enabled is False and again.key_operations == ["sign", "verify"]
    assert again.properties.updated_on >= again.properties.created_on
    # A named version is updated alone.
    old = key_client.update_key_properties("updatable", v1.properties.version, tags={"b": "2"})
    assert old.properties.tags == {"b": "2"} and old.properties.enabled is True
    assert key_client.get_key("updatable").properties.tags == {"a": "1"}


def test_list_keys_pages(key_client: KeyClient, http: httpx.Client) -> None:
    names = {f"page-{i:02d}" for i in range(30)}
    for name in sorted(names):
        key_client.create_oct_key(name, size=128, hardware_protected=True)
    pages = [list(p) for p in key_client.list_properties_of_keys(max_page_size=7).by_page()]
    assert len(pages) >= 5 and all(1 <= len(p) <= 7 for p in pages[:-1])
    listed = [k.name for p in pages for k in p]
    assert len(listed) == len(set(listed)), "a key was listed twice across pages"
    assert names <= set(listed)
    assert all(k.version is None for p in pages for k in p), "listing kids carry no version"
    # Default page size is 25; over 25 keys gives an absolute nextLink.
    first = http.get("/keys", params=API).json()
    assert len(first["value"]) == 25 and first["nextLink"].startswith("https://")
    everything = [k.name for k in key_client.list_properties_of_keys()]
    assert sorted(everything) == sorted(listed)


def test_list_versions_pages(key_client: KeyClient) -> None:
    created = {
        key_client.create_ec_key("many", hardware_protected=True).properties.version
        for _ in range(5)
    }
    pages = list(key_client.list_properties_of_key_versions("many", max_page_size=2).by_page())
    versions = [p.version for page in pages for p in page]
    assert len(pages) == 3
    assert sorted(versions) == sorted(created)
    with pytest.raises(ResourceNotFoundError):
        list(key_client.list_properties_of_key_versions("no-such-key"))


# --- rotation -----------------------------------------------------------------------------


def test_rotate_keeps_type_and_operations(key_client: KeyClient) -> None:
    first = key_client.create_ec_key(
        "rotating", curve="P-384", hardware_protected=True, key_operations=["sign"], tags={"t": "v"}
    )
    rotated = key_client.rotate_key("rotating")
    assert rotated.properties.version != first.properties.version
    assert rotated.key.crv == "P-384" and rotated.key_operations == ["sign"]
    assert rotated.properties.tags == {"t": "v"}
    assert key_client.get_key("rotating").properties.version == rotated.properties.version
    assert len(list(key_client.list_properties_of_key_versions("rotating"))) == 2


def test_rotation_policy(key_client: KeyClient) -> None:
    key_client.create_ec_key("with-policy", hardware_protected=True)
    default = key_client.get_key_rotation_policy("with-policy")
    assert default.id.endswith("/keys/with-policy/rotationpolicy")
    policy = KeyRotationPolicy(
        expires_in="P90D",
        lifetime_actions=[
            KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P80D")
        ],
    )
    saved = key_client.update_key_rotation_policy("with-policy", policy)
    got = key_client.get_key_rotation_policy("with-policy")
    for p in (saved, got):
        assert p.expires_in == "P90D"
        assert len(p.lifetime_actions) == 1
        assert p.lifetime_actions[0].action == KeyRotationPolicyAction.rotate
        assert p.lifetime_actions[0].time_after_create == "P80D"
        assert p.created_on is not None and p.updated_on is not None
    before = time.time()
    rotated = key_client.rotate_key("with-policy")
    expected = before + 90 * 86400
    assert abs(rotated.properties.expires_on.timestamp() - expected) < 120
    with pytest.raises(HttpResponseError) as err:
        key_client.update_key_rotation_policy("with-policy", KeyRotationPolicy(expires_in="P7D"))
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key_rotation_policy("no-such-key")


# --- soft delete ----------------------------------------------------------------------------


def test_delete_recover_purge(key_client: KeyClient, http: httpx.Client) -> None:
    v1 = key_client.create_ec_key("doomed", hardware_protected=True)
    key_client.create_ec_key("doomed", hardware_protected=True)
    poller = key_client.begin_delete_key("doomed")
    poller.wait()
    deleted = poller.result()
    assert deleted.recovery_id.endswith("/deletedkeys/doomed")
    assert deleted.deleted_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=90)
    got = key_client.get_deleted_key("doomed")
    assert got.properties.version == deleted.properties.version
    assert "doomed" in {d.name for d in key_client.list_deleted_keys()}
    assert "doomed" not in {k.name for k in key_client.list_properties_of_keys()}
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key("doomed")
    # The name is held by the deleted key.
    with pytest.raises(ResourceExistsError):
        key_client.create_ec_key("doomed", hardware_protected=True)
    with pytest.raises(ResourceExistsError):
        key_client.import_key("doomed", ec_jwk(ec.generate_private_key(ec.SECP256R1()), "P-256"))
    recovered = key_client.begin_recover_deleted_key("doomed").result()
    assert recovered.properties.version == deleted.properties.version
    assert key_client.get_key("doomed", v1.properties.version).key.x == v1.key.x
    assert len(list(key_client.list_properties_of_key_versions("doomed"))) == 2
    with pytest.raises(ResourceNotFoundError):
        key_client.get_deleted_key("doomed")
    # Purge (204 on the wire), then the name is free again.
    key_client.begin_delete_key("doomed").wait()
    r = http.delete("/deletedkeys/doomed", params=API)
    assert r.status_code == 204 and r.content == b""
    with pytest.raises(ResourceNotFoundError):
        key_client.get_deleted_key("doomed")
    fresh = key_client.create_ec_key("doomed", hardware_protected=True)
    assert len(list(key_client.list_properties_of_key_versions("doomed"))) == 1
    assert fresh.key.x != v1.key.x


def test_purge_through_sdk_and_errors(key_client: KeyClient) -> None:
    key_client.create_oct_key("purged", hardware_protected=True)
    key_client.begin_delete_key("purged").wait()
    key_client.purge_deleted_key("purged")
    with pytest.raises(ResourceNotFoundError):
        key_client.purge_deleted_key("purged")
    with pytest.raises(ResourceNotFoundError):
        key_client.begin_delete_key("purged")
    with pytest.raises(ResourceNotFoundError):
        key_client.begin_recover_deleted_key("purged")


def test_list_deleted_keys_pages(key_client: KeyClient) -> None:
    names = {f"gone-{i}" for i in range(5)}
    for name in sorted(names):
        key_client.create_oct_key(name, size=128, hardware_protected=True)
        key_client.begin_delete_key(name).wait()
    pages = [list(p) for p in key_client.list_deleted_keys(max_page_size=2).by_page()]
    assert all(len(p) <= 2 for p in pages) and len(pages) >= 3
    listed = [d.name for p in pages for d in p]
    assert len(listed) == len(set(listed)) and names <= set(listed)
    assert all(d.recovery_id and d.scheduled_purge_date for p in pages for d in p)


# --- backup and restore -------------------------------------------------------------------


def test_backup_restore(
    dev_pool: DevPool, key_client: KeyClient, credential: ClientSecretCredential
) -> None:
    v1 = key_client.create_ec_key("backed-up", hardware_protected=True, tags={"k": "v"})
    v2 = key_client.create_ec_key("backed-up", hardware_protected=True, tags={"k": "v"})
    key_client.update_key_rotation_policy("backed-up", KeyRotationPolicy(expires_in="P60D"))
    old_signature = server_sign(dev_pool, credential, v1.id)
    blob = key_client.backup_key("backed-up")
    assert len(blob) > 100
    with pytest.raises(ResourceExistsError):
        key_client.restore_key_backup(blob)
    key_client.begin_delete_key("backed-up").wait()
    with pytest.raises(ResourceExistsError):  # still held by the deleted key
        key_client.restore_key_backup(blob)
    key_client.purge_deleted_key("backed-up")
    restored = key_client.restore_key_backup(blob)
    assert restored.name == "backed-up"
    assert restored.properties.version == v2.properties.version
    assert restored.key.x == v2.key.x and restored.properties.tags == {"k": "v"}
    versions = {p.version for p in key_client.list_properties_of_key_versions("backed-up")}
    assert versions == {v1.properties.version, v2.properties.version}
    assert key_client.get_key_rotation_policy("backed-up").expires_in == "P60D"
    old = key_client.get_key("backed-up", v1.properties.version)
    ec_public(old.key).verify(
        raw_to_der(old_signature), DIGEST, ec.ECDSA(Prehashed(hashes.SHA256()))
    )
    new_signature = server_sign(dev_pool, credential, old.id)
    ec_public(v1.key).verify(
        raw_to_der(new_signature), DIGEST, ec.ECDSA(Prehashed(hashes.SHA256()))
    )


def test_restore_rejects_altered_blob(key_client: KeyClient) -> None:
    key_client.create_ec_key("blob-source", hardware_protected=True)
    blob = bytearray(key_client.backup_key("blob-source"))
    blob[-5] ^= 1
    with pytest.raises(HttpResponseError) as err:
        key_client.restore_key_backup(bytes(blob))
    assert err.value.status_code == 400
    with pytest.raises(HttpResponseError) as err:
        key_client.restore_key_backup(b"not a backup")
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        key_client.backup_key("no-such-key")


# --- random bytes -------------------------------------------------------------------------


def test_random_bytes(key_client: KeyClient, http: httpx.Client) -> None:
    assert len(key_client.get_random_bytes(1)) == 1
    a, b = key_client.get_random_bytes(128), key_client.get_random_bytes(128)
    assert len(a) == len(b) == 128 and a != b
    with pytest.raises(ValueError, match="At least one"):
        key_client.get_random_bytes(0)
    for count in (0, 129, -1, 1.5, "8", True, None):
        assert_kv_error(http.post("/rng", params=API, json={"count": count}), 400)


# --- attributes and key_ops gate operations -----------------------------------------------


def _sign_status(pool: DevPool, credential: ClientSecretCredential, key_id: str) -> int:
    try:
        server_sign(pool, credential, key_id)
    except HttpResponseError as exc:
        assert exc.status_code is not None
        return exc.status_code
    return 200


def test_disabled_expired_and_not_yet_valid_keys_refuse(
    dev_pool: DevPool,
    key_client: KeyClient,
    credential: ClientSecretCredential,
    http: httpx.Client,
) -> None:
    key = key_client.create_ec_key("gated", hardware_protected=True)
    assert _sign_status(dev_pool, credential, key.id) == 200
    key_client.update_key_properties("gated", enabled=False)
    assert _sign_status(dev_pool, credential, key.id) == 403
    r = http.post(
        f"/keys/gated/{key.properties.version}/sign",
        params=API,
        json={"alg": "ES256", "value": b64u(DIGEST)},
    )
    assert assert_kv_error(r, 403)["code"] == "Forbidden"
    key_client.update_key_properties("gated", enabled=True)
    assert _sign_status(dev_pool, credential, key.id) == 200

    expired = key_client.create_ec_key(
        "expired", hardware_protected=True, expires_on=_now() - timedelta(minutes=1)
    )
    assert _sign_status(dev_pool, credential, expired.id) == 403
    future = key_client.create_ec_key(
        "not-yet", hardware_protected=True, not_before=_now() + timedelta(hours=1)
    )
    assert _sign_status(dev_pool, credential, future.id) == 403
    key_client.update_key_properties("not-yet", not_before=_now() - timedelta(minutes=1))
    assert _sign_status(dev_pool, credential, future.id) == 200

    oct_key = key_client.create_oct_key("oct-gated", hardware_protected=True, enabled=False)
    body = {"alg": "A256GCM", "value": b64u(b"x")}
    r = http.post(f"/keys/oct-gated/{oct_key.properties.version}/encrypt", params=API, json=body)
    assert_kv_error(r, 403)


def test_key_ops_enforced(
    dev_pool: DevPool, key_client: KeyClient, credential: ClientSecretCredential, http: httpx.Client
) -> None:
    verify_only = key_client.create_ec_key(
        "verify-only", hardware_protected=True, key_operations=["verify"]
    )
    assert _sign_status(dev_pool, credential, verify_only.id) == 403
    key_client.update_key_properties("verify-only", key_operations=["sign", "verify"])
    assert _sign_status(dev_pool, credential, verify_only.id) == 200

    sign_only = key_client.create_rsa_key(
        "rsa-sign-only", size=2048, hardware_protected=True, key_operations=["sign"]
    )
    base = f"/keys/rsa-sign-only/{sign_only.properties.version}"
    for op, body in (
        ("decrypt", {"alg": "RSA-OAEP", "value": b64u(bytes(256))}),
        ("encrypt", {"alg": "RSA-OAEP", "value": b64u(b"x")}),
        ("unwrapkey", {"alg": "RSA-OAEP", "value": b64u(bytes(256))}),
        ("wrapkey", {"alg": "RSA-OAEP", "value": b64u(bytes(32))}),
        ("verify", {"alg": "RS256", "digest": b64u(DIGEST), "value": b64u(bytes(256))}),
    ):
        assert_kv_error(http.post(f"{base}/{op}", params=API, json=body), 403)
    r = http.post(f"{base}/sign", params=API, json={"alg": "RS256", "value": b64u(DIGEST)})
    assert r.status_code == 200, r.text

    enc_only = key_client.create_oct_key(
        "oct-encrypt-only", hardware_protected=True, key_operations=["encrypt"]
    )
    base = f"/keys/oct-encrypt-only/{enc_only.properties.version}"
    r = http.post(f"{base}/encrypt", params=API, json={"alg": "A256GCM", "value": b64u(b"x")})
    assert r.status_code == 200, r.text
    sealed = r.json()
    r = http.post(
        f"{base}/decrypt",
        params=API,
        json={"alg": "A256GCM", **{k: sealed[k] for k in ("value", "iv", "tag")}},
    )
    assert_kv_error(r, 403)
    # EC keys cannot be given operations they cannot do.
    with pytest.raises(HttpResponseError) as err:
        key_client.create_ec_key("ec-encrypt", hardware_protected=True, key_operations=["encrypt"])
    assert err.value.status_code == 400
