"""`mhsm principal create|list|reset-secret|delete` as real processes against a dev pool, and
what each change means at the token endpoints: a new service principal gets a token with
`ClientSecretCredential` and creates a key, a managed identity gets one with its identity
header, a reset secret retires the old one, a deleted principal gets no more tokens."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.keyvault.keys import KeyClient
from dev_pool import DevPool, start_pool
from principal_support import Run, credential, grant_crypto_user, ok, principal_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    started = start_pool(tmp_path_factory.mktemp("principals"))
    yield started
    started.stop()


def mhsm(pool: DevPool, verb: str, *rest: str) -> Run:
    return principal_cli(pool.data_dir, verb, *rest)


def token(pool: DevPool, client_id: str, secret: str) -> str:
    """A fresh credential each time, so MSAL's token cache cannot answer for the pool."""
    with credential(pool.doc, client_id, secret) as cred:
        return cred.get_token(pool.doc["resource"] + "/.default").token


def msi_status(pool: DevPool, identity_header: str) -> int:
    with httpx.Client(verify=ssl.create_default_context(cafile=pool.ca), timeout=30) as client:
        response = client.get(
            f"{pool.url}/msi/token",
            params={"api-version": "2019-08-01", "resource": pool.doc["resource"]},
            headers={"X-IDENTITY-HEADER": identity_header, "Metadata": "true"},
        )
    return response.status_code


def test_service_principal_lifecycle(pool: DevPool) -> None:
    created = ok(mhsm(pool, "create", "--name", "app1"))
    assert set(created) == {"client_id", "object_id", "name", "kind", "client_secret"}
    assert (created["name"], created["kind"]) == ("app1", "service")
    client_id, secret = created["client_id"], created["client_secret"]
    grant_crypto_user(pool.doc, created["object_id"])

    with KeyClient(
        pool.url, credential(pool.doc, client_id, secret), connection_verify=pool.ca
    ) as kc:
        key = kc.create_ec_key(f"app1-{uuid.uuid4().hex[:8]}", curve="P-256")
        assert key.name is not None and key.name.startswith("app1-")

    reset = ok(mhsm(pool, "reset-secret", "--client-id", client_id))
    assert reset["client_id"] == client_id and reset["client_secret"] != secret
    with pytest.raises(ClientAuthenticationError):
        token(pool, client_id, secret)
    assert token(pool, client_id, reset["client_secret"])

    deleted = ok(mhsm(pool, "delete", "--client-id", client_id))
    assert deleted == {k: v for k, v in created.items() if k != "client_secret"}
    with pytest.raises(ClientAuthenticationError):
        token(pool, client_id, reset["client_secret"])
    listed = ok(mhsm(pool, "list"))
    assert client_id not in {p["client_id"] for p in listed}


def test_managed_identity_lifecycle(pool: DevPool) -> None:
    created = ok(mhsm(pool, "create", "--name", "mi1", "--managed-identity"))
    assert created["kind"] == "managed"
    assert created["identity_header"] == f"{created['client_id']}.{created['client_secret']}"
    assert created["identity_endpoint"] == f"{pool.url}/msi/token"
    assert msi_status(pool, created["identity_header"]) == 200

    reset = ok(mhsm(pool, "reset-secret", "--client-id", created["client_id"]))
    assert msi_status(pool, created["identity_header"]) == 401
    assert msi_status(pool, reset["identity_header"]) == 200

    ok(mhsm(pool, "delete", "--client-id", created["client_id"]))
    assert msi_status(pool, reset["identity_header"]) == 401


def test_list_shows_no_secrets(pool: DevPool) -> None:
    created = ok(mhsm(pool, "create", "--name", "app2"))
    result = mhsm(pool, "list")
    listed = {p["client_id"]: p for p in ok(result)}
    assert listed[created["client_id"]]["name"] == "app2"
    assert pool.doc["admin"]["client_id"] in listed
    assert all(set(p) == {"client_id", "object_id", "name", "kind"} for p in listed.values())
    assert created["client_secret"] not in result.stdout
    table = mhsm(pool, "list", "-o", "table")
    assert table.code == 0 and "app2" in table.stdout


def test_errors_are_one_line(pool: DevPool) -> None:
    for argv in (
        ("delete", "--client-id", str(uuid.uuid4())),
        ("reset-secret", "--client-id", "not-a-client-id"),
    ):
        result = mhsm(pool, *argv)
        assert result.code == 1 and result.stdout == ""
        assert result.stderr.startswith("ERROR: (NotFound) ") and "Traceback" not in result.stderr
    bad = mhsm(pool, "create", "--name", "bad name!")
    assert bad.code == 1 and bad.stderr.startswith("ERROR: (BadParameter) ")
    admin = pool.doc["admin"]["client_id"]
    itself = mhsm(pool, "delete", "--client-id", admin)
    assert itself.code == 1 and "cannot delete itself" in itself.stderr
