"""Wrapping keys and certificates from files, for `mhsm security-domain restore-blob` and
`upload`: PEM or DER, keys optionally encrypted; each key's certificate found as the
`security_domain` module docstring says."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from openmhsm.domain import blob

_CERT_SUFFIXES = (".cer", ".crt", ".pem")


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM (the first CERTIFICATE block) or DER X.509 certificate. Raises ValueError, OSError."""
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise ValueError(f"{path}: not a PEM or DER X.509 certificate") from None


def load_private_key(path: Path, password: str | None) -> rsa.RSAPrivateKey:
    """An RSA private key, PEM or DER, encrypted with `password` if given. Raises ValueError."""
    data = path.read_bytes()
    secret = password.encode("utf-8") if password else None
    load = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        key = load(data, secret)
    except TypeError:
        hint = "it is encrypted: give its password" if secret is None else "it is not encrypted"
        raise ValueError(f"{path}: {hint} (--passwords)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{path}: not a private key, or a wrong password") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: a wrapping key must be RSA")
    return key


def wrapping_key_pairs(
    keys: Sequence[Path], certificates: Sequence[Path], passwords: Sequence[str]
) -> list[blob.KeyPair]:
    """(private key, certificate) pairs; see the module docstring for how certificates are found.
    Raises ValueError or OSError naming the file at fault."""
    if len(passwords) > len(keys):
        raise ValueError("more --passwords than --sd-wrapping-keys")
    given = [load_certificate(path) for path in certificates]
    pairs = []
    for index, path in enumerate(keys):
        key = load_private_key(path, passwords[index] if index < len(passwords) else None)
        pairs.append((key, _certificate_for(path, key, given)))
    return pairs


def _certificate_for(
    key_path: Path, key: rsa.RSAPrivateKey, given: Sequence[x509.Certificate]
) -> x509.Certificate:
    public = key.public_key().public_numbers()
    for certificate in given:
        if _public_numbers(certificate) == public:
            return certificate
    for suffix in _CERT_SUFFIXES:
        sibling = key_path.with_suffix(suffix)
        if sibling != key_path and sibling.is_file():
            certificate = load_certificate(sibling)
            if _public_numbers(certificate) != public:
                raise ValueError(f"{sibling} is not the certificate of {key_path}")
            return certificate
    with contextlib.suppress(ValueError):  # a PEM file holding the key and its certificate
        certificate = load_certificate(key_path)
        if _public_numbers(certificate) == public:
            return certificate
    raise ValueError(
        f"no certificate for {key_path}: put {key_path.with_suffix('.cer').name} beside it "
        "or pass --sd-wrapping-certs"
    )


def _public_numbers(certificate: x509.Certificate) -> rsa.RSAPublicNumbers | None:
    public = certificate.public_key()
    return public.public_numbers() if isinstance(public, rsa.RSAPublicKey) else None
