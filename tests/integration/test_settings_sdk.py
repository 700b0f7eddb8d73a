"""`KeyVaultSettingsClient` (azure-keyvault-administration) against a dev pool: list, get and
update the one known setting; the value survives a restart (it is stored, not cached)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.administration import KeyVaultSetting, KeyVaultSettingsClient
from dev_pool import DevPool, start_pool

pytestmark = pytest.mark.integration
ARM = "AllowKeyManagementOperationsThroughARM"


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPool]:
    started = start_pool(tmp_path_factory.mktemp("settings"))
    yield started
    started.stop()


def settings_client(pool: DevPool) -> KeyVaultSettingsClient:
    return KeyVaultSettingsClient(pool.url, pool.credential(), connection_verify=pool.ca)


def test_list_get_update_and_restart(pool: DevPool) -> None:
    with settings_client(pool) as client:
        listed = list(client.list_settings())
        assert [(s.name, s.value, s.setting_type) for s in listed] == [(ARM, "false", "boolean")]
        assert client.get_setting(ARM).getboolean() is False

        updated = client.update_setting(KeyVaultSetting(name=ARM, value=True))
        assert (updated.name, updated.value, updated.getboolean()) == (ARM, "true", True)
        assert client.get_setting(ARM).getboolean() is True

    pool.stop()
    restarted = DevPool(pool.data_dir, pool.port).start()
    pool.proc, pool.doc = restarted.proc, restarted.doc
    with settings_client(pool) as client:
        assert client.get_setting(ARM).value == "true"
        client.update_setting(KeyVaultSetting(name=ARM, value="FALSE", setting_type="boolean"))
        assert [s.value for s in client.list_settings()] == ["false"]


def test_errors(pool: DevPool) -> None:
    with settings_client(pool) as client:
        with pytest.raises(ResourceNotFoundError) as missing:
            client.get_setting("NoSuchSetting")
        assert missing.value.error is not None and missing.value.error.code == "NotFound"
        with pytest.raises(HttpResponseError) as bad:
            client.update_setting(KeyVaultSetting(name=ARM, value="maybe"))
        assert bad.value.status_code == 400
        assert bad.value.error is not None and bad.value.error.code == "BadParameter"


def test_audit_lines_for_settings(pool: DevPool) -> None:
    with settings_client(pool) as client:
        client.get_setting(ARM)
    audit = (pool.data_dir / "audit" / "partition-0.jsonl").read_text()
    assert '"operation":"GET /settings/{name}"' in audit
