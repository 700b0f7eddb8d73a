"""The pool PKI: one EC P-256 CA per pool, and the server / client certificates it issues.

The server certificate lists every name and address the pool is reached by (DESIGN §6); partitions
present client certificates from the same CA to each other when they hand over domain secrets
(DESIGN §5). Certificates satisfy OpenSSL's strict X.509 checks (`ssl.VERIFY_X509_STRICT`): critical
basic constraints and key usage, SKI on the CA, AKI on the leaves. Private keys are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest validity Apple platforms accept for a TLS server certificate
_BACKDATE = datetime.timedelta(hours=1)  # tolerate clocks a little behind the issuer's


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600, atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_pool_ca(directory: Path) -> tuple[Path, Path]:
    """Create the pool CA in `directory` unless it exists; return (ca.pem, ca.key).

    EC P-256, valid ten years, `CA:TRUE, pathlen:0`, key usage certSign + cRLSign. `ca.pem` is
    written last, so its presence means the pair is complete. Raises FileNotFoundError if `ca.pem`
    exists without `ca.key`.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)  # it holds the CA key
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists():
        if not key_path.exists():
            raise FileNotFoundError(f"{cert_path} exists but its key {key_path} is missing")
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OpenMHSM"),
            # A random suffix keeps the subjects of different pools' CAs distinct in a trust store.
            x509.NameAttribute(NameOID.COMMON_NAME, f"OpenMHSM pool CA {secrets.token_hex(4)}"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _general_names(names: Sequence[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for raw in names:
        name = raw.strip().strip("[]").lower()
        if not name:
            raise ValueError("certificate names must not be empty")
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _common_name(names: Sequence[str]) -> str:
    first = names[0].strip()
    return first if len(first) <= 64 else "openmhsm"  # a CN is at most 64 characters


def issue_certificate(
    ca_cert_path: Path,
    ca_key_path: Path,
    out_cert: Path,
    out_key: Path,
    *,
    names: Sequence[str],
    server: bool = True,
    client: bool = False,
    days: int = LEAF_DAYS,
) -> None:
    """Issue an EC P-256 certificate for `names` from the pool CA and write it and its key.

    Names that parse as IP addresses become IP SANs, the others DNS SANs; the first is also the
    subject CN. EKU is serverAuth and/or clientAuth. `out_cert` holds only this certificate (PEM),
    `out_key` the PKCS#8 key with mode 0600. Raises ValueError for no names, no usage or bad days.
    """
    if not names:
        raise ValueError("a certificate needs at least one name")
    if not (server or client):
        raise ValueError("a certificate needs serverAuth, clientAuth or both")
    if days <= 0:
        raise ValueError("days must be positive")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the pool CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _common_name(names))]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(out_key, _key_pem(key))
    _write_public(out_cert, cert.public_bytes(serialization.Encoding.PEM))
