"""Activation of a new pool by `mhsm up` itself (DESIGN §5, dev convenience): three RSA wrapping
keys made locally under `<data-dir>/security-domain/`, and a real security-domain download
through the Azure SDK's SecurityDomainClient, quorum 2."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from openmhsm.cluster.layout import write_json_atomic
from openmhsm.crypto.jwk import b64u_encode, int_to_b64u
from openmhsm.domain.certificates import certificate_pem, new_rsa_certificate, private_key_pem

QUORUM = 2


def make_wrapping_keys(count: int, out: Path, prefix: str = "w") -> list[tuple[Path, Path]]:
    """`count` RSA-2048 key pairs with self-signed certificates: `<prefix>N.key` (PKCS#8 PEM,
    mode 0600) and `<prefix>N.cer` (PEM). Returns (certificate, key) paths."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    made = []
    for n in range(count):
        key, cert = new_rsa_certificate(f"openmhsm wrapping key {n}", days=3650)
        key_path, cert_path = out / f"{prefix}{n}.key", out / f"{prefix}{n}.cer"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_key_pem(key))
        cert_path.write_bytes(certificate_pem(cert))
        made.append((cert_path, key_path))
    return made


def certificate_jwk(cert_path: Path) -> dict[str, Any]:
    """The JWK for one wrapping certificate, shaped as the Azure CLI builds it."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError(f"{cert_path}: a wrapping key must be RSA")
    der = cert.public_bytes(serialization.Encoding.DER)
    numbers = public.public_numbers()
    return {
        "kid": cert_path.stem,
        "kty": "RSA",
        "alg": "RSA-OAEP-256",
        "key_ops": ["verify", "encrypt", "wrapKey"],
        "n": int_to_b64u(numbers.n),
        "e": int_to_b64u(numbers.e),
        "x5c": [base64.b64encode(der).decode()],
        "x5t": b64u_encode(hashlib.sha1(der, usedforsecurity=False).digest()),  # a name, as x5t is
        "x5t#S256": b64u_encode(hashlib.sha256(der).digest()),
    }


def download_security_domain(
    doc: dict[str, Any], certificates: list[Path], quorum: int, out_file: Path
) -> None:
    """Download the pool's security domain with the SDK and write it to `out_file` (0600)."""
    from azure.keyvault.securitydomain import SecurityDomainClient
    from azure.keyvault.securitydomain.models import CertificateInfo

    from openmhsm.client import credential_from_pool

    client = SecurityDomainClient(
        doc["url"], credential_from_pool(doc), connection_verify=doc["ca_cert"]
    )
    info = CertificateInfo(
        {"certificates": [certificate_jwk(c) for c in certificates], "required": quorum}
    )
    result = client.begin_download(certificate_info=info).result()
    fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(result.value)


def activate_locally(doc: dict[str, Any], data_root: Path) -> Path:
    """Make three wrapping keys under `<data-dir>/security-domain/` and activate the pool with
    a quorum-2 download to them. Returns the folder."""
    folder = data_root / "security-domain"
    pairs = make_wrapping_keys(3, folder)
    sd_file = folder / "sd.json"
    download_security_domain(doc, [c for c, _ in pairs], QUORUM, sd_file)
    write_json_atomic(
        folder / "README.json",
        {
            "what": "The security domain of this pool and the three wrapping keys it is wrapped "
            "to (quorum 2). Anyone holding two of the keys and sd.json can recover the "
            "pool's keys: move the keys somewhere safe for anything but development.",
            "security_domain_file": str(sd_file),
            "quorum": QUORUM,
        },
    )
    return folder


def grant_development_roles(doc: dict[str, Any], admin_object_id: str) -> None:
    """Give the bootstrap administrator Crypto Officer and Crypto User at `/`, through the SDK's
    KeyVaultAccessControlClient, so a development pool's admin can use keys at once. Idempotent:
    the assignment names derive from the principal and the role."""
    from azure.core.exceptions import ResourceExistsError
    from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope

    from openmhsm.auth.roles import CRYPTO_OFFICER, CRYPTO_USER
    from openmhsm.client import credential_from_pool

    client = KeyVaultAccessControlClient(
        doc["url"], credential_from_pool(doc), connection_verify=doc["ca_cert"]
    )
    with client:
        for role in (CRYPTO_OFFICER, CRYPTO_USER):
            name = uuid.uuid5(uuid.NAMESPACE_URL, f"openmhsm:{admin_object_id}:{role}:/")
            with contextlib.suppress(ResourceExistsError):  # already held
                client.create_role_assignment(
                    KeyVaultRoleScope.GLOBAL, role, admin_object_id, name=name
                )
