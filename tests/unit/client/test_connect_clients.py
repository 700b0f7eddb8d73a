"""`openmhsm.client.connect`: the administration and security-domain clients it builds, and a
pool reached by URL. No sockets: the clients are constructed and their pipelines inspected."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from azure.core import PipelineClient
from azure.core.credentials import AccessToken
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.keyvault.administration import (
    KeyVaultAccessControlClient,
    KeyVaultBackupClient,
    KeyVaultSettingsClient,
)
from azure.keyvault.securitydomain import SecurityDomainClient

from openmhsm.client import (
    RETRY_BACKOFF_FACTOR,
    RETRY_BACKOFF_MAX,
    Clients,
    IdempotentRetryPolicy,
    RegionRoutingPolicy,
    connect,
)

URL = "https://127.0.0.1:18443"
OTHER_REGION = "https://127.0.0.2:18443"
LAZY = {
    "access_control": KeyVaultAccessControlClient,
    "backup": KeyVaultBackupClient,
    "settings": KeyVaultSettingsClient,
    "security_domain": SecurityDomainClient,
}


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Constructing clients must not touch the network."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def ca(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("not read until a request is sent\n")
    return str(path)


def pool_doc(ca: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "local",
        "url": URL + "/",
        "ca_cert": ca,
        "tenant_id": "00000000-0000-0000-0000-000000000001",
        "authority": URL,
        "resource": "https://0.0.1:18443",
        "admin": {"client_id": "admin-id", "client_secret": "s3cret"},
        **extra,
    }


class SpyCredential:
    """A caller's own credential: connect() must use it, and must not close it."""

    closed = False

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token", 2**31)

    def close(self) -> None:
        self.closed = True


def pipeline_client(client: Any) -> PipelineClient[Any, Any]:
    """The azure-core PipelineClient under an SDK client (one or two `_client` levels down)."""
    while not isinstance(client, PipelineClient):
        client = client._client
    return client


def policies(client: Any) -> list[Any]:
    return list(pipeline_client(client)._pipeline._impl_policies)


def verify_of(client: Any) -> Any:
    return pipeline_client(client)._pipeline._transport.connection_config.verify  # type: ignore[attr-defined]


def the(kind: type[Any], client: Any) -> Any:
    found = [p for p in policies(client) if isinstance(p, kind)]
    assert len(found) == 1, [type(p).__name__ for p in policies(client)]
    return found[0]


@pytest.mark.parametrize(("name", "kind"), LAZY.items())
def test_each_client_has_the_pool_url_ca_credential_and_retry(
    ca: str, name: str, kind: type[Any]
) -> None:
    with connect(pool_doc(ca)) as clients:
        client = getattr(clients, name)
        assert isinstance(client, kind)
        assert (getattr(client, "vault_url", None) or client._vault_url) == URL
        assert verify_of(client) == ca
        retry = the(IdempotentRetryPolicy, client)
        assert retry.backoff_factor == RETRY_BACKOFF_FACTOR
        assert retry.backoff_max == RETRY_BACKOFF_MAX
        assert retry is not the(IdempotentRetryPolicy, clients.key_client)  # one per pipeline
        assert the(BearerTokenCredentialPolicy, client)._credential is clients.credential
        assert not [p for p in policies(client) if isinstance(p, RegionRoutingPolicy)]


def test_clients_are_built_on_first_use_and_then_reused(ca: str) -> None:
    clients = connect(pool_doc(ca))
    assert clients._built == {}
    for name in LAZY:
        assert getattr(clients, name) is getattr(clients, name)
    assert set(clients._built) == set(LAZY)
    clients.close()


@pytest.mark.parametrize("name", [*LAZY, "key_client"])
def test_every_client_routes_through_the_one_router(ca: str, name: str) -> None:
    with connect(pool_doc(ca, regions=[URL, OTHER_REGION])) as clients:
        client = getattr(clients, name)
        assert clients.router is not None
        routing = the(RegionRoutingPolicy, client)
        assert routing.router is clients.router
        found = policies(client)
        # Behind the retry policy: each attempt is routed afresh.
        assert found.index(routing) > found.index(the(IdempotentRetryPolicy, client))


def test_client_options_are_fresh_each_call(ca: str) -> None:
    clients = connect(pool_doc(ca, regions=[URL, OTHER_REGION]))
    first, second = clients.client_options(), clients.client_options()
    assert first["connection_verify"] == ca
    assert first["retry_policy"] is not second["retry_policy"]
    assert first["per_retry_policies"][0] is not second["per_retry_policies"][0]
    assert first["per_retry_policies"][0].router is clients.router


def test_close_closes_built_clients_and_the_owned_credential(
    ca: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    monkeypatch.setattr(KeyVaultBackupClient, "close", lambda self: closed.append("backup"))
    monkeypatch.setattr(ClientSecretCredential, "close", lambda self: closed.append("credential"))
    clients = connect(pool_doc(ca))
    assert isinstance(clients.backup, KeyVaultBackupClient)
    clients.close()
    assert closed == ["backup", "credential"]
    assert clients._built == {}


def test_a_given_credential_is_used_and_left_open(ca: str) -> None:
    spy = SpyCredential()
    with connect(pool_doc(ca), credential=spy) as clients:
        assert clients.credential is spy
        assert the(BearerTokenCredentialPolicy, clients.security_domain)._credential is spy
    assert not spy.closed


def test_a_given_ca_overrides_pool_json(ca: str, tmp_path: Path) -> None:
    other = str(tmp_path / "other-ca.pem")
    with connect(pool_doc(ca), ca_cert=other) as clients:
        assert clients.ca_cert == other
        assert verify_of(clients.access_control) == other


def test_a_url_with_a_ca_uses_default_azure_credential(ca: str) -> None:
    with connect(URL + "/", ca_cert=Path(ca)) as clients:
        assert isinstance(clients, Clients)
        assert clients.url == URL
        assert clients.ca_cert == ca
        assert isinstance(clients.credential, DefaultAzureCredential)
        assert clients.owns_credential
        assert clients.key_client.vault_url == URL
        assert verify_of(clients.key_client) == ca
        assert verify_of(clients.settings) == ca
        assert clients.router is None


def test_a_url_takes_its_ca_from_requests_ca_bundle(
    ca: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    with connect(URL, credential=SpyCredential()) as clients:
        assert clients.ca_cert == ca
        assert verify_of(clients.backup) == ca
        assert not clients.owns_credential


def test_a_url_without_any_ca_trusts_the_system_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with connect(URL, credential=SpyCredential()) as clients:
        assert clients.ca_cert is None
        assert verify_of(clients.security_domain) is True


def test_a_url_with_regions_routes_them(ca: str) -> None:
    with connect(URL, ca_cert=ca, regions=[URL, OTHER_REGION]) as clients:
        assert clients.router is not None
        assert [r.url for r in clients.router.regions] == [URL, OTHER_REGION]
        assert clients.router.regions[0].ca_cert == ca  # the pool's own region, its CA


@pytest.mark.parametrize("bad", [URL + "/keys/k1", URL + "?x=1"])
def test_a_url_with_a_path_or_query_is_refused(bad: str, ca: str) -> None:
    with pytest.raises(ValueError, match="no path or query"):
        connect(bad, ca_cert=ca)
