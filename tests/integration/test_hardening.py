"""Issue 10, hardening, against real pools: TLS 1.2+ only, head limits and slow-client deadlines
on the wire, back-off on repeated wrong client secrets through the SDK, and the modes of every
file that holds a secret after `mhsm up` (dev and pool mode) and a security-domain download."""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import ssl
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential
from dev_pool import DevPool, free_port
from pool_support import PoolProcess
from principal_support import ok, principal_cli

from openmhsm.api.limits import HEAD_TIMEOUT, MAX_HEAD_BYTES
from openmhsm.auth.lockout import FIRST_DELAY, THRESHOLD
from openmhsm.cluster.listeners import harden_tls
from openmhsm.cluster.partition import KEEP_ALIVE

pytestmark = pytest.mark.integration

OLD = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
CURRENT = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)


# --- TLS -----------------------------------------------------------------------------------------


def client_tls(version: ssl.TLSVersion, ca: str | None = None) -> ssl.SSLContext:
    """A client context that speaks exactly `version` (SECLEVEL 0 lets OpenSSL 3 offer the old
    ones at all)."""
    context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    if ca is None:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 and TLSv1_1 are deprecated
        context.minimum_version = context.maximum_version = version
        if version in OLD:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def handshake(port: int, context: ssl.SSLContext) -> str:
    """The negotiated version, or the error the handshake ended with."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return str(tls.version())
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {exc}"


@pytest.fixture(scope="module")
def permissive_server(dev_pool: DevPool) -> Iterator[int]:
    """A TLS server that takes any version: proof the old-version clients below can connect,
    so the pool's refusal is the pool's own."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(
        dev_pool.data_dir / "tls/server.pem", dev_pool.data_dir / "tls/server.key"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server.minimum_version = ssl.TLSVersion.TLSv1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with server.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(5)


@pytest.mark.parametrize("version", OLD, ids=lambda v: v.name)
def test_tls_before_1_2_is_refused(
    dev_pool: DevPool, permissive_server: int, version: ssl.TLSVersion
) -> None:
    assert handshake(permissive_server, client_tls(version)) == version.name.replace("_", ".")
    got = handshake(dev_pool.port, client_tls(version, dev_pool.ca))
    assert got.startswith("refused"), got


@pytest.mark.parametrize("version", CURRENT, ids=lambda v: v.name)
def test_tls_1_2_and_1_3_are_served(dev_pool: DevPool, version: ssl.TLSVersion) -> None:
    context = client_tls(version, dev_pool.ca)
    with (
        socket.create_connection(("127.0.0.1", dev_pool.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() == version.name.replace("_", ".")
        name = tls.cipher()[0]
        assert "GCM" in name or "CHACHA20" in name, name  # AEAD only
        tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert read_all(tls).startswith(b"HTTP/1.1 200 ")


def test_tls_1_2_without_forward_secret_aead_is_refused(dev_pool: DevPool) -> None:
    context = client_tls(ssl.TLSVersion.TLSv1_2, dev_pool.ca)
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:AES128-GCM-SHA256")
    assert handshake(dev_pool.port, context).startswith("refused")


def test_tls_hardening_holds_whatever_the_defaults(dev_pool: DevPool) -> None:
    """A Python, OpenSSL or uvicorn whose defaults still allow TLS 1.0 or CBC ciphers does not
    weaken the pool."""
    tls = dev_pool.data_dir / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "server.pem", tls / "server.key")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    harden_tls(context)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and all(n.startswith("ECDHE") and ("GCM" in n or "CHACHA" in n) for n in tls12)


# --- the wire: head limits and slow clients ------------------------------------------------------


def connect(pool: DevPool) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", pool.port), timeout=30)
    context = ssl.create_default_context(cafile=pool.ca)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def read_all(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    return data


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_oversized_head_gets_431_in_key_vault_shape(dev_pool: DevPool) -> None:
    with connect(dev_pool) as tls:
        big = b"a" * (MAX_HEAD_BYTES + 1)
        tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + big + b"\r\n\r\n")
        status, body = status_and_body(read_all(tls))
    assert status == 431
    assert b'"code":"RequestHeaderFieldsTooLarge"' in body


def test_slowloris_head_is_cut_off(dev_pool: DevPool) -> None:
    """A client sending its head a byte a second (each byte well within any idle timeout) is
    answered 408 and dropped once the head deadline passes, before it finishes."""
    head = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 60 + b"\r\n\r\n"
    with connect(dev_pool) as tls:
        started = time.monotonic()
        tls.settimeout(1.0)
        answer = b""
        for byte in head:
            try:
                tls.sendall(bytes([byte]))
                answer += tls.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                break
            if answer:
                break
        took = time.monotonic() - started
        tls.settimeout(10)
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            answer += read_all(tls)
    assert HEAD_TIMEOUT - 1 <= took < HEAD_TIMEOUT + 5, took
    status, body = status_and_body(answer)
    assert status == 408 and b'"code":"RequestTimeout"' in body


def test_idle_keep_alive_connection_is_closed(dev_pool: DevPool) -> None:
    with connect(dev_pool) as tls:
        tls.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        while tls.recv(65536):
            pass
        took = time.monotonic() - started
    assert KEEP_ALIVE - 1 <= took < KEEP_ALIVE + 4, took


# --- back-off on wrong client secrets ------------------------------------------------------------


def test_wrong_secrets_back_off_through_the_sdk(dev_pool: DevPool) -> None:
    doc = dev_pool.doc
    app = ok(principal_cli(dev_pool.data_dir, "create", "--name", "hardening-backoff"))
    scope = doc["resource"] + "/.default"

    def credential(secret: str, **options: object) -> ClientSecretCredential:
        return ClientSecretCredential(
            doc["tenant_id"],
            app["client_id"],
            secret,
            authority=doc["authority"],
            disable_instance_discovery=True,
            connection_verify=dev_pool.ca,
            **options,
        )

    def refused(secret: str) -> str:
        with (
            pytest.raises(ClientAuthenticationError) as error,
            credential(secret, retry_total=0) as c,
        ):
            c.get_token(scope)
        return str(error.value.message)

    wrong = "wrong-" + app["client_secret"][::-1]
    for _ in range(THRESHOLD):
        assert "AADSTS7000215" in refused(wrong)
    # Now even the right secret is refused, without a check, for the back-off period...
    message = refused(app["client_secret"])
    assert "AADSTS50053" in message and app["client_secret"] not in message
    assert backoff_seconds(message) <= FIRST_DELAY
    time.sleep(FIRST_DELAY)
    failed_at = time.monotonic()
    assert "AADSTS7000215" in refused(wrong)  # ...which doubles with each further failure
    message = refused(app["client_secret"])
    since = time.monotonic() - failed_at  # what a slow machine took off the doubled period
    assert math.ceil(2 * FIRST_DELAY - since) <= backoff_seconds(message) <= 2 * FIRST_DELAY
    # The SDK's own retry policy honours Retry-After: the right secret then simply works.
    started = time.monotonic()
    with credential(app["client_secret"]) as c:
        assert c.get_token(scope).token
    assert time.monotonic() - started < 2 * FIRST_DELAY + 10


def backoff_seconds(message: str) -> int:
    found = re.search(r"Try again in (\d+) seconds", message)
    assert found, message
    return int(found.group(1))


# --- modes of the files that hold secrets -------------------------------------------------------

SECRET_FILES = (
    "pool.json",
    "admin.json",
    "config.json",
    "cluster.json",
    "store.db",
    "partitions/*/sealed",
    "partitions/*/seal.key",
    "partitions/*/partition.key",
    "tls/*.key",
    "security-domain/*.key",
    "security-domain/*.json",
)


def secret_files(root: Path) -> list[Path]:
    return sorted({p for pattern in SECRET_FILES for p in root.glob(pattern)})


def assert_private(root: Path, partitions: int) -> None:
    found = secret_files(root)
    names = {p.relative_to(root).as_posix() for p in found}
    expected = {
        "pool.json",
        "admin.json",
        "tls/ca.key",
        "tls/server.key",
        "security-domain/sd.json",
    }
    expected |= {f"partitions/{n}/{f}" for n in range(partitions) for f in ("sealed", "seal.key")}
    assert expected <= names, sorted(expected - names)
    wrong = [
        f"{p.relative_to(root)} {oct(stat.S_IMODE(p.stat().st_mode))}"
        for p in found
        if stat.S_IMODE(p.stat().st_mode) != 0o600
    ]
    wrong += [
        f"{d.relative_to(root.parent)}/ {oct(stat.S_IMODE(d.stat().st_mode))}"
        for d in sorted({root, *(p.parent for p in found)})
        if stat.S_IMODE(d.stat().st_mode) != 0o700
    ]
    assert not wrong, wrong


def test_secret_files_are_private_in_dev_mode(dev_pool: DevPool) -> None:
    assert (dev_pool.data_dir / "security-domain" / "sd.json").exists()  # activated by download
    assert_private(dev_pool.data_dir, partitions=1)


def test_secret_files_are_private_in_pool_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, whatever this worker's
    try:
        pool = PoolProcess(tmp_path / "pool", free_port()).start()
    finally:
        os.umask(old)
    try:
        deadline = time.monotonic() + 60
        while not (pool.data_dir / "security-domain" / "sd.json").exists():
            assert time.monotonic() < deadline, "the pool was never activated"
            time.sleep(0.2)
        assert_private(pool.data_dir, partitions=3)
    finally:
        pool.stop()
