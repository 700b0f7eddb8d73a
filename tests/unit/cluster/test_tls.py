"""The pool PKI: CA creation, leaf issuance, and a real TLS handshake with Python's `ssl`.

NOTE: the handshake tests below open loopback sockets on 127.0.0.1 (allowed here only).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from openmhsm.cluster.tls import ensure_pool_ca, issue_certificate


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_pool_ca(tmp_path_factory.mktemp("pki"))


def test_ca_files_and_extensions(ca: tuple[Path, Path]) -> None:
    cert_path, key_path = ca
    assert (cert_path.name, key_path.name) == ("ca.pem", "ca.key")
    assert _mode(key_path) == 0o600
    cert = _cert(cert_path)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert isinstance(cert.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
    years = (cert.not_valid_after_utc - cert.not_valid_before_utc).days / 365
    assert 9.9 < years < 10.1
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert.verify_directly_issued_by(cert)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_ca_created_once(tmp_path: Path) -> None:
    first = ensure_pool_ca(tmp_path)
    pem = first[0].read_bytes()
    assert ensure_pool_ca(tmp_path) == first
    assert first[0].read_bytes() == pem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem"]


def test_ca_without_key_is_an_error(tmp_path: Path) -> None:
    _, key_path = ensure_pool_ca(tmp_path)
    key_path.unlink()
    with pytest.raises(FileNotFoundError):
        ensure_pool_ca(tmp_path)


def test_leftover_key_without_cert_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "ca.key").write_bytes(b"half-written")
    _, key_path = ensure_pool_ca(tmp_path)
    assert b"PRIVATE KEY" in key_path.read_bytes() and _mode(key_path) == 0o600


def test_server_certificate(ca: tuple[Path, Path], tmp_path: Path) -> None:
    out_cert, out_key = tmp_path / "server.pem", tmp_path / "server.key"
    issue_certificate(
        *ca, out_cert, out_key, names=["hsm.example.test", "127.0.0.1", "::1", "localhost"]
    )
    assert _mode(out_key) == 0o600
    text = out_cert.read_text()
    assert text.count("BEGIN CERTIFICATE") == 1 and text.rstrip().endswith("END CERTIFICATE-----")
    cert, ca_cert = _cert(out_cert), _cert(ca[0])
    cert.verify_directly_issued_by(ca_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hsm.example.test", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 826


def test_client_and_dual_usage(ca: tuple[Path, Path], tmp_path: Path) -> None:
    issue_certificate(
        *ca,
        tmp_path / "c.pem",
        tmp_path / "c.key",
        names=["partition-1"],
        server=False,
        client=True,
    )
    eku = _cert(tmp_path / "c.pem").extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    issue_certificate(*ca, tmp_path / "d.pem", tmp_path / "d.key", names=["p"], client=True)
    eku = _cert(tmp_path / "d.pem").extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert set(eku.value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"names": []},
        {"names": [""]},
        {"names": ["a"], "server": False, "client": False},
        {"names": ["a"], "days": 0},
    ],
)
def test_issue_rejects_bad_arguments(
    ca: tuple[Path, Path], tmp_path: Path, kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        issue_certificate(*ca, tmp_path / "x.pem", tmp_path / "x.key", **kwargs)  # type: ignore[arg-type]


# --- a real TLS handshake over loopback (the one unit test allowed a socket) --------------------


def _handshake(
    ca_path: Path,
    server_cert: Path,
    server_key: Path,
    server_hostname: str,
    client_cert: tuple[Path, Path] | None = None,
) -> str:
    """Serve one TLS connection on 127.0.0.1 in a thread; return what the client read."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_cert, server_key)
    if client_cert is not None:
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        server_ctx.load_verify_locations(cafile=ca_path)
    client_ctx = ssl.create_default_context(cafile=str(ca_path))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # what newer Pythons turn on by default
    if client_cert is not None:
        client_ctx.load_cert_chain(*client_cert)
    errors: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello")
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                data = tls.recv(5)
        finally:
            thread.join(10)
    if errors and not isinstance(errors[0], ssl.SSLError | OSError):
        raise errors[0]
    return data.decode()


@pytest.mark.parametrize("hostname", ["127.0.0.1", "hsm.example.test"])
def test_python_ssl_accepts_chain_over_loopback(
    ca: tuple[Path, Path], tmp_path: Path, hostname: str
) -> None:
    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    issue_certificate(*ca, cert, key, names=["hsm.example.test", "127.0.0.1"])
    assert _handshake(ca[0], cert, key, hostname) == "hello"


def test_python_ssl_rejects_unlisted_name(ca: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    issue_certificate(*ca, cert, key, names=["hsm.example.test"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca[0], cert, key, "127.0.0.1")


def test_python_ssl_rejects_other_ca(ca: tuple[Path, Path], tmp_path: Path) -> None:
    other = ensure_pool_ca(tmp_path / "other")
    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    issue_certificate(*other, cert, key, names=["127.0.0.1"])
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca[0], cert, key, "127.0.0.1")


def test_mutual_tls_between_partitions(ca: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    issue_certificate(*ca, cert, key, names=["127.0.0.1"], client=True)
    peer = (tmp_path / "p.pem", tmp_path / "p.key")
    issue_certificate(*ca, *peer, names=["partition-2"], server=False, client=True)
    assert _handshake(ca[0], cert, key, "127.0.0.1", client_cert=peer) == "hello"


def test_mutual_tls_rejects_peer_from_other_ca(ca: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = tmp_path / "s.pem", tmp_path / "s.key"
    issue_certificate(*ca, cert, key, names=["127.0.0.1"])
    other = ensure_pool_ca(tmp_path / "other")
    peer = (tmp_path / "p.pem", tmp_path / "p.key")
    issue_certificate(*other, *peer, names=["intruder"], server=False, client=True)
    with pytest.raises(ssl.SSLError):
        _handshake(ca[0], cert, key, "127.0.0.1", client_cert=peer)
