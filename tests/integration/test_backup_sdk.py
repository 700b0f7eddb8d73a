"""Full backup, full restore and selective key restore through the unmodified
`KeyVaultBackupClient` (azure-keyvault-administration) against Azurite: with a SAS token, and
with the pool's managed identity (an App Service-style identity endpoint in the pool's
environment, Azurite over HTTPS with OAuth on). Then what must be refused: another domain's
pool, a tampered backup; and disaster recovery end to end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.administration import (
    KeyVaultAccessControlClient,
    KeyVaultBackupClient,
    KeyVaultRoleScope,
)
from azure.keyvault.keys import KeyClient
from azurite_support import (  # noqa: F401 - the "azurite" and "azurite_https" fixtures
    Azurite,
    azurite_https_server,
    azurite_server,
    container_sas,
    make_container,
)
from dev_pool import DevPool, start_pool
from msi_support import Msi, start_msi_endpoint
from recovery_support import upload_security_domain

from openmhsm.auth import roles

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def msi() -> Iterator[Msi]:
    endpoint = start_msi_endpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="module")
def dev_pool(tmp_path_factory: pytest.TempPathFactory, msi: Msi, azurite_https: Azurite) -> Any:
    """A dev pool whose process has a managed identity (the endpoint's variables) and trusts
    the HTTPS Azurite's CA, both through the standard environment. (Named as conftest's, so
    that its `key_client` is this pool's.)"""
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**msi.env, "REQUESTS_CA_BUNDLE": str(azurite_https.ca_path)}.items():
            env.setenv(name, value)
        running = start_pool(tmp_path_factory.mktemp("backup-sdk"))
    yield running
    running.stop()


def backup_client(pool: DevPool) -> KeyVaultBackupClient:
    return KeyVaultBackupClient(pool.url, pool.credential(), connection_verify=pool.ca)


def state(client: KeyClient) -> dict[str, Any]:
    """Every key's versions with attributes and tags, and the deleted keys."""
    live = {
        props.name: sorted(
            (v.version, v.enabled, v.expires_on, tuple(sorted((v.tags or {}).items())))
            for v in client.list_properties_of_key_versions(props.name or "")
        )
        for props in client.list_properties_of_keys()
    }
    return {"live": live, "deleted": sorted(d.name or "" for d in client.list_deleted_keys())}


def sas_container(azurite: Azurite) -> tuple[str, str]:
    name = f"c{uuid.uuid4().hex[:12]}"
    return make_container(azurite, name), container_sas(azurite, name)


def test_sas_round_trip_and_selective_restore(
    dev_pool: DevPool, azurite: Azurite, key_client: KeyClient
) -> None:
    url, sas = sas_container(azurite)
    key_client.create_ec_key("sas-a", tags={"team": "blue"})
    key_client.create_rsa_key("sas-b", size=2048)
    key_client.rotate_key("sas-b")
    key_client.create_oct_key("sas-c", size=256, hardware_protected=True)
    with dev_pool.access_client() as access:
        access.create_role_assignment(KeyVaultRoleScope.KEYS, roles.CRYPTO_USER, str(uuid.uuid4()))
        assignments = sorted(a.name for a in access.list_role_assignments(KeyVaultRoleScope.KEYS))
    before = state(key_client)

    with backup_client(dev_pool) as client:
        poller = client.begin_backup(url, sas_token=sas)
        folder_url = poller.result().folder_url
        assert poller.status() == "Succeeded"
        assert folder_url.startswith(url + "/mhsm-local-")

        key_client.begin_delete_key("sas-a").wait()
        key_client.purge_deleted_key("sas-a")
        key_client.update_key_properties("sas-b", tags={"changed": "yes"})
        key_client.create_ec_key("sas-new")
        client.begin_restore(folder_url, sas_token=sas).wait()
        assert state(key_client) == before
        with dev_pool.access_client() as access:
            now = sorted(a.name for a in access.list_role_assignments(KeyVaultRoleScope.KEYS))
        assert now == assignments

        key_client.begin_delete_key("sas-b").wait()
        key_client.purge_deleted_key("sas-b")
        client.begin_restore(folder_url, sas_token=sas, key_name="sas-b").wait()
    assert state(key_client) == before


def test_managed_identity_round_trip(
    dev_pool: DevPool, azurite_https: Azurite, msi: Msi, key_client: KeyClient
) -> None:
    url = make_container(azurite_https, f"mi{uuid.uuid4().hex[:12]}")
    key_client.create_ec_key("mi-a")
    before = state(key_client)
    issued = msi.tokens_issued
    with backup_client(dev_pool) as client:
        folder_url = client.begin_backup(url, use_managed_identity=True).result().folder_url
        key_client.begin_delete_key("mi-a").wait()
        client.begin_restore(folder_url, use_managed_identity=True).wait()
        client.begin_restore(folder_url, use_managed_identity=True, key_name="mi-a").wait()
    assert msi.tokens_issued > issued
    assert state(key_client) == before


def test_pre_checks(dev_pool: DevPool, azurite: Azurite) -> None:
    url, sas = sas_container(azurite)
    with backup_client(dev_pool) as client:
        assert client.begin_pre_backup(url, sas_token=sas).result() is None
        with pytest.raises(HttpResponseError, match="StorageAccessFailed"):
            client.begin_pre_backup(url, sas_token=sas.replace("sig=", "sig=AAAA")).result()
        folder_url = client.begin_backup(url, sas_token=sas).result().folder_url
        client.begin_pre_restore(folder_url, sas_token=sas).wait()
        with pytest.raises(HttpResponseError, match="StorageAccessFailed"):
            client.begin_pre_restore(url + "/mhsm-local-19990101000000", sas_token=sas).wait()


def test_another_domain_and_tampered_backups_are_refused(
    dev_pool: DevPool, azurite: Azurite, key_client: KeyClient, tmp_path: Path
) -> None:
    url, sas = sas_container(azurite)
    key_client.create_ec_key("tamper-a")
    with backup_client(dev_pool) as client:
        folder_url = client.begin_backup(url, sas_token=sas).result().folder_url
    folder = folder_url.rsplit("/", 1)[1]

    other = start_pool(tmp_path)
    try:
        with other.key_client() as other_keys, backup_client(other) as client:
            other_keys.create_ec_key("theirs")
            theirs = state(other_keys)
            with pytest.raises(
                HttpResponseError, match=r"SecurityDomainMismatch|different security"
            ):
                client.begin_restore(folder_url, sas_token=sas).wait()
            with pytest.raises(HttpResponseError):
                client.begin_restore(folder_url, sas_token=sas, key_name="tamper-a").wait()
            assert state(other_keys) == theirs
    finally:
        other.stop()

    key_client.create_ec_key("tamper-after")
    before = state(key_client)
    with azurite.service_client() as service:
        container = service.get_container_client(url.rsplit("/", 1)[1])
        names = [b.name for b in container.list_blobs(name_starts_with=folder + "/")]
        assert any(n.endswith("manifest.json") for n in names)
        for name in names:
            original = container.download_blob(name).readall()
            flipped = bytearray(original)
            flipped[len(flipped) // 2] ^= 0x01
            container.upload_blob(name, bytes(flipped), overwrite=True)
            with backup_client(dev_pool) as client, pytest.raises(HttpResponseError):
                client.begin_restore(folder_url, sas_token=sas).wait()
            container.upload_blob(name, original, overwrite=True)
    assert state(key_client) == before


def test_disaster_recovery_into_a_new_pool(
    dev_pool: DevPool, azurite: Azurite, key_client: KeyClient, tmp_path: Path
) -> None:
    """A new pool in recovery mode takes the old pool's security domain, then its backup: the
    keys sign as before, and the old pool's administrator is recognised by the new dev_pool."""
    url, sas = sas_container(azurite)
    key = key_client.create_ec_key("dr-key")
    before = state(key_client)
    with backup_client(dev_pool) as client:
        folder_url = client.begin_backup(url, sas_token=sas).result().folder_url

    fresh = start_pool(tmp_path, "--recovery")
    try:
        upload_security_domain(dev_pool, fresh)
        with backup_client(fresh) as client:
            client.begin_restore(folder_url, sas_token=sas).wait()
        # The old pool's admin (its principal and role assignments came with the backup).
        old_admin = DevPool(
            fresh.data_dir, fresh.port, doc={**fresh.doc, "admin": dev_pool.doc["admin"]}
        )
        with old_admin.key_client() as restored:
            assert state(restored) == before
            assert restored.get_key("dr-key").key.x == key.key.x
        # The operator who ran the restore keeps Managed HSM Administrator.
        with KeyVaultAccessControlClient(
            fresh.url, fresh.credential(), connection_verify=fresh.ca
        ) as access:
            mine = [
                a for a in access.list_role_assignments(KeyVaultRoleScope.GLOBAL)
                if a.properties and a.properties.principal_id == fresh.admin_object_id
            ]  # fmt: skip
            assert any(
                a.properties
                and (a.properties.role_definition_id or "").endswith(roles.ADMINISTRATOR)
                for a in mine
            )
    finally:
        fresh.stop()
