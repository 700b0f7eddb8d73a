"""`openmhsm.client`: how connect() reads a pool, and the retry policy, with no sockets."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline import Pipeline
from azure.core.pipeline.transport import HttpRequest, HttpTransport
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient

from openmhsm.client import (
    Clients,
    IdempotentRetryPolicy,
    connect,
    credential_from_pool,
    is_idempotent_post,
    load_pool_document,
    retry_policy,
)

URL = "https://127.0.0.1:18443"


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constructing clients must not touch the network."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pool_doc(tmp_path: Path) -> dict[str, Any]:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a request is sent\n")
    return {
        "name": "local",
        "url": URL + "/",
        "ca_cert": str(ca),
        "tenant_id": "00000000-0000-0000-0000-000000000001",
        "authority": URL,
        "resource": "https://0.0.1:18443",
        "admin": {"client_id": "admin-id", "client_secret": "s3cret"},
        "partitions": [],
        "etcd": [],
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    (tmp_path / "pool.json").write_text(json.dumps(pool_doc(tmp_path)))
    return tmp_path


def check(clients: Clients, tmp_path: Path) -> None:
    assert clients.url == URL
    assert clients.ca_cert == str(tmp_path / "ca.pem")
    assert isinstance(clients.key_client, KeyClient)
    assert clients.key_client.vault_url == URL
    assert isinstance(clients.credential, ClientSecretCredential)


def test_connect_accepts_a_data_dir(data_dir: Path) -> None:
    with connect(data_dir) as clients:
        check(clients, data_dir)


def test_connect_accepts_a_path_to_pool_json_as_str_or_path(data_dir: Path) -> None:
    check(connect(data_dir / "pool.json"), data_dir)
    check(connect(str(data_dir / "pool.json")), data_dir)
    check(connect(str(data_dir)), data_dir)


def test_connect_accepts_the_parsed_document(tmp_path: Path) -> None:
    check(connect(pool_doc(tmp_path)), tmp_path)


def test_clients_is_frozen(tmp_path: Path) -> None:
    clients = connect(pool_doc(tmp_path))
    with pytest.raises(AttributeError):
        clients.url = "https://elsewhere"  # type: ignore[misc]


def test_missing_pool_json_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mhsm up"):
        connect(tmp_path)
    with pytest.raises(FileNotFoundError):
        connect(tmp_path / "nope.json")


def test_malformed_pool_json_is_value_error(tmp_path: Path) -> None:
    (tmp_path / "pool.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        connect(tmp_path)
    (tmp_path / "pool.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        connect(tmp_path)


def test_missing_fields_are_named(tmp_path: Path) -> None:
    doc = pool_doc(tmp_path)
    del doc["authority"]
    doc["admin"] = {"client_id": "x"}
    with pytest.raises(ValueError, match=r"authority, admin\.client_secret"):
        load_pool_document(doc)
    with pytest.raises(ValueError, match="admin"):
        credential_from_pool({**pool_doc(tmp_path), "admin": None})


def test_load_pool_document_copies_the_mapping(tmp_path: Path) -> None:
    doc = pool_doc(tmp_path)
    loaded = load_pool_document(doc)
    assert loaded == doc and loaded is not doc


def test_crypto_takes_a_name_or_a_key_id(tmp_path: Path) -> None:
    clients = connect(pool_doc(tmp_path))
    assert clients.crypto("k1").key_id == f"{URL}/keys/k1"
    assert clients.crypto(f"{URL}/keys/k1/abc").key_id == f"{URL}/keys/k1/abc"
    with pytest.raises(ValueError):
        clients.crypto("https://host/not-a-key-id/a/b/c/d")


def test_key_operation_rejects_unknown_operations(tmp_path: Path) -> None:
    clients = connect(pool_doc(tmp_path))
    with pytest.raises(ValueError, match="create"):
        clients.key_operation("k1", "create", {})


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/keys/k/v1/sign", True),
        ("POST", "/keys/k//decrypt", True),
        ("post", "/keys/k/v1/wrapkey", True),
        ("POST", "/keys/k/v1/unwrapkey", True),
        ("POST", "/keys/k/create", True),
        ("POST", "/keys/k/rotate", True),
        ("POST", "/keys/k/backup", False),
        ("POST", "/keys/restore", False),
        ("POST", "/deletedkeys/k/recover", False),
        ("GET", "/keys/k/v1/sign", False),
    ],
)
def test_is_idempotent_post(method: str, path: str, expected: bool) -> None:
    assert is_idempotent_post(method, f"{URL}{path}?api-version=2025-07-01") is expected


class FlakyTransport(HttpTransport):  # type: ignore[type-arg]
    """Fails the first `failures` sends with a connection error, then answers 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent = 0

    def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        self.sent += 1
        if self.sent <= self.failures:
            raise ServiceRequestError("connection reset")
        return OkResponse(request)

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> FlakyTransport:
        return self

    def __exit__(self, *args: object) -> None:
        return None

    def sleep(self, duration: float) -> None:
        return None


class OkResponse:
    status_code = 200
    headers: dict[str, str] = {}  # noqa: RUF012

    def __init__(self, request: HttpRequest) -> None:
        self.request = request


def post(path: str, transport: FlakyTransport) -> None:
    pipeline = Pipeline(transport, policies=[retry_policy()])
    pipeline.run(HttpRequest("POST", f"{URL}{path}", data=b"{}"))


def test_crypto_posts_are_retried_after_a_connection_error() -> None:
    transport = FlakyTransport(failures=2)
    post("/keys/k/v1/sign", transport)
    assert transport.sent == 3


def test_other_posts_are_not_retried() -> None:
    transport = FlakyTransport(failures=1)
    with pytest.raises(ServiceRequestError):
        post("/keys/k/backup", transport)
    assert transport.sent == 1


def test_each_client_gets_its_own_policy_instance(tmp_path: Path) -> None:
    # A policy is linked into one pipeline (`.next`), so clients must not share one.
    assert retry_policy() is not retry_policy()
    assert isinstance(retry_policy(), IdempotentRetryPolicy)
