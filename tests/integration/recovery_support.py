"""Disaster recovery as an operator does it: take the security domain a pool made at activation
(`mhsm up` keeps it and two of its wrapping keys in `<data dir>/security-domain`) and upload it to
a pool started with `--recovery`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from azure.keyvault.securitydomain import SecurityDomainClient
from azure.keyvault.securitydomain.models import SecurityDomain
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dev_pool import DevPool

from openmhsm.domain import blob


def wrapping_keys(folder: Path) -> list[tuple[rsa.RSAPrivateKey, x509.Certificate]]:
    """A quorum (two) of the wrapping key pairs `mhsm up` made."""
    pairs = []
    for name in ("w0", "w1"):
        key = serialization.load_pem_private_key((folder / f"{name}.key").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        pairs.append((key, x509.load_pem_x509_certificate((folder / f"{name}.cer").read_bytes())))
    return pairs


def upload_security_domain(source: DevPool, target: DevPool) -> None:
    """Upload `source`'s security domain to `target` (in recovery mode) and wait for it."""
    with SecurityDomainClient(target.url, target.credential(), connection_verify=target.ca) as sd:
        jwk = json.loads(str(sd.get_transfer_key().transfer_key))
        exchange = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
        folder = source.data_dir / "security-domain"
        restore_blob = blob.make_restore_blob(
            (folder / "sd.json").read_text(), wrapping_keys(folder), exchange
        )
        sd.begin_upload(security_domain=SecurityDomain({"value": restore_blob})).result()
