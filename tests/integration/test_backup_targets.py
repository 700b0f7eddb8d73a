"""Backup targets against real storage: Azurite with a SAS token, Azurite over HTTPS with a managed
identity's bearer token, and a directory. The same checks run on each; then what is particular to
blobs: refused SAS tokens, missing containers, a failing identity endpoint."""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

import pytest
from azure.keyvault.administration._internal import parse_folder_url
from azure.storage.blob import ContainerSasPermissions
from azurite_support import (  # noqa: F401 - the "azurite" and "azurite_https" fixtures
    Azurite,
    azurite_https_server,
    azurite_server,
    container_sas,
    make_container,
)
from msi_support import Msi, start_msi_endpoint

from openmhsm.backup.targets import BackupTarget, TargetError, open_folder, open_target

pytestmark = pytest.mark.integration

T = TypeVar("T")
Opener = Callable[[str, str], BackupTarget]  # (storage URI, folder) -> target
MANIFEST = b'{"format": 1}'


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def new_container(azurite: Azurite) -> str:
    name = f"c{uuid.uuid4().hex[:12]}"
    make_container(azurite, name)
    return name


@pytest.fixture(scope="module")
def msi() -> Iterator[Msi]:
    endpoint = start_msi_endpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def identity_env(msi: Msi, azurite_https: Azurite, monkeypatch: pytest.MonkeyPatch) -> Msi:
    """The server-side environment of a pool with a managed identity: the App Service endpoint,
    and Azurite's CA trusted through the standard REQUESTS_CA_BUNDLE."""
    for name, value in msi.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(azurite_https.ca_path))
    return msi


@pytest.fixture(params=["sas", "managed-identity", "directory"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def container(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty container of this kind: its URL (blob containers exist; a directory not)."""
    if kind == "directory":
        yield f"file://{tmp_path}/backups"
    elif kind == "sas":
        server: Azurite = request.getfixturevalue("azurite")
        yield server.container_url(new_container(server))
    else:
        request.getfixturevalue("identity_env")
        server = request.getfixturevalue("azurite_https")
        yield server.container_url(new_container(server))


class Credentials(NamedTuple):
    token: str | None
    use_managed_identity: bool


@pytest.fixture
def credentials(kind: str, container: str, request: pytest.FixtureRequest) -> Credentials:
    if kind == "sas":
        server: Azurite = request.getfixturevalue("azurite")
        return Credentials(container_sas(server, container.rsplit("/", 1)[1]), False)
    return Credentials(None, kind == "managed-identity")


@pytest.fixture
def target(container: str, credentials: Credentials) -> Iterator[BackupTarget]:
    opened = open_target(
        container, token=credentials.token, use_managed_identity=credentials.use_managed_identity
    )
    yield opened
    opened.close()


# --- the same checks on every kind of target --------------------------------------------------


def test_round_trip(target: BackupTarget) -> None:
    async def scenario() -> None:
        await target.check_writable()
        assert await target.list_folders() == []
        await target.write("mhsm-pool-20260101000000", "manifest.json", MANIFEST)
        await target.write("mhsm-pool-20260101000000", "records-00000.bin", b"old")
        await target.write("mhsm-pool-20260101000000", "records-00000.bin", b"\x00" * 1000)
        await target.write("mhsm-pool-20260102000000", "records-00000.bin", b"")
        await target.write("other-20260101000000", "manifest.json", MANIFEST)
        assert await target.read("mhsm-pool-20260101000000", "records-00000.bin", 1000) == (
            b"\x00" * 1000
        )
        assert await target.read("mhsm-pool-20260102000000", "records-00000.bin", 10) == b""
        assert await target.exists("mhsm-pool-20260101000000", "manifest.json")
        assert not await target.exists("mhsm-pool-20260101000000", "records-00001.bin")
        assert not await target.exists("mhsm-pool-20990101000000", "manifest.json")
        await target.check_readable("mhsm-pool-20260101000000")
        with pytest.raises(TargetError, match="not found"):
            await target.check_readable("mhsm-pool-20260102000000")  # no manifest
        assert await target.list_folders() == [
            "mhsm-pool-20260101000000",
            "mhsm-pool-20260102000000",
        ]
        assert await target.list_folders("other-") == ["other-20260101000000"]
        await target.delete_folder("mhsm-pool-20260101000000")
        await target.delete_folder("mhsm-pool-20260101000000")
        assert await target.list_folders() == ["mhsm-pool-20260102000000"]

    run(scenario())


def test_read_limits(target: BackupTarget) -> None:
    run(target.write("mhsm-pool-1", "records-00000.bin", b"12345"))
    assert run(target.read("mhsm-pool-1", "records-00000.bin", 5)) == b"12345"
    with pytest.raises(TargetError, match="larger than 4 bytes"):
        run(target.read("mhsm-pool-1", "records-00000.bin", 4))
    with pytest.raises(TargetError, match="was not found"):
        run(target.read("mhsm-pool-1", "records-00001.bin", 5))


def test_nested_folders(target: BackupTarget) -> None:
    run(target.write("archive/mhsm-pool-1", "manifest.json", MANIFEST))
    run(target.check_readable("archive/mhsm-pool-1"))
    assert run(target.list_folders("")) == ["archive"]
    run(target.delete_folder("archive"))
    assert run(target.list_folders("")) == []


def test_a_folder_url_survives_the_sdk_split(
    target: BackupTarget, credentials: Credentials
) -> None:
    """Restore gets back what backup reported, cut as KeyVaultBackupClient cuts it."""
    run(target.write("mhsm-pool-1", "manifest.json", MANIFEST))
    uri, folder = parse_folder_url(target.folder_url("mhsm-pool-1"))
    restored, name = open_folder(
        uri, folder, token=credentials.token, use_managed_identity=credentials.use_managed_identity
    )
    try:
        assert (restored.container_url, name) == (target.container_url, "mhsm-pool-1")
        run(restored.check_readable(name))
        assert run(restored.read(name, "manifest.json", 100)) == MANIFEST
    finally:
        restored.close()


# --- blob storage particulars -----------------------------------------------------------------


def check_refused(target: BackupTarget, message: str, secret: str = "") -> None:
    try:
        with pytest.raises(TargetError, match=message) as caught:
            run(target.check_writable())
    finally:
        target.close()
    if secret:
        assert secret not in caught.value.message
        assert secret not in str(caught.value)


def test_a_wrong_sas_signature_is_refused(azurite: Azurite) -> None:
    name = new_container(azurite)
    sas = container_sas(azurite, name)
    forged = sas.replace("sig=", "sig=AAAA")
    target = open_target(azurite.container_url(name), token=forged, use_managed_identity=False)
    check_refused(target, "denied", secret=forged.split("sig=")[1])


def test_a_sas_for_another_container_is_refused(azurite: Azurite) -> None:
    sas = container_sas(azurite, new_container(azurite))
    target = open_target(
        azurite.container_url(new_container(azurite)), token=sas, use_managed_identity=False
    )
    check_refused(target, "denied")


def test_a_read_only_or_expired_sas_cannot_write(azurite: Azurite) -> None:
    name = new_container(azurite)
    read_only = container_sas(azurite, name, ContainerSasPermissions(read=True, list=True))
    target = open_target(azurite.container_url(name), token=read_only, use_managed_identity=False)
    check_refused(target, "denied")
    expired = container_sas(azurite, name, expiry=datetime.timedelta(minutes=-5))
    target = open_target(azurite.container_url(name), token=expired, use_managed_identity=False)
    check_refused(target, "denied")


def test_a_missing_container(azurite: Azurite) -> None:
    url = azurite.container_url("missing")
    target = open_target(url, token=container_sas(azurite, "missing"), use_managed_identity=False)
    check_refused(target, "container was not found")


def test_a_missing_container_with_the_managed_identity(
    identity_env: Msi, azurite_https: Azurite
) -> None:
    target = open_target(
        azurite_https.container_url("missing"), token=None, use_managed_identity=True
    )
    check_refused(target, "container was not found")


def test_the_managed_identity_token_is_fetched_once(
    identity_env: Msi, azurite_https: Azurite
) -> None:
    url = azurite_https.container_url(new_container(azurite_https))
    before = identity_env.tokens_issued
    target = open_target(url, token=None, use_managed_identity=True)
    try:
        run(target.check_writable())
        run(target.write("mhsm-pool-1", "manifest.json", MANIFEST))
        assert run(target.read("mhsm-pool-1", "manifest.json", 100)) == MANIFEST
    finally:
        target.close()
    assert identity_env.tokens_issued == before + 1


def test_a_failing_identity_endpoint(
    identity_env: Msi, azurite_https: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    url = azurite_https.container_url(new_container(azurite_https))
    target = open_target(url, token=None, use_managed_identity=True)
    check_refused(target, "managed identity could not get a token")


def test_the_sas_signature_stays_out_of_the_logs(
    azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    name = new_container(azurite)
    sas = container_sas(azurite, name)
    signature = sas.split("sig=")[1].split("&")[0]
    # Everything the SDK logs (urllib3's DEBUG lines quote whole URLs: keep it at INFO or above).
    caplog.set_level(logging.DEBUG, logger="azure")
    caplog.set_level(logging.DEBUG, logger="openmhsm")
    target = open_target(azurite.container_url(name), token=sas, use_managed_identity=False)
    try:
        run(target.write("mhsm-pool-1", "manifest.json", MANIFEST))
        with pytest.raises(TargetError):
            run(target.read("mhsm-pool-1", "missing.bin", 10))
    finally:
        target.close()
    assert "mhsm-pool-1" in caplog.text  # the SDK did log its requests
    assert signature not in caplog.text
