"""Backup targets without I/O beyond tmp_path: URL parsing and splitting, the SDK's folder-URL cut,
validation, the directory target, and error messages that never quote a SAS token."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.identity import CredentialUnavailableError
from azure.keyvault.administration._internal import parse_folder_url

from openmhsm.backup import blob_target
from openmhsm.backup.blob_target import BlobTarget, describe_error
from openmhsm.backup.dir_target import DirectoryTarget
from openmhsm.backup.targets import (
    BackupTarget,
    TargetError,
    check_folder,
    check_name,
    check_prefix,
    open_folder,
    open_target,
)
from openmhsm.errors import BadParameter

T = TypeVar("T")
SAS = "sv=2025-01-05&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=rwdl&sig=SECRETSIGNATURE%3D"
HOST = "https://acct.blob.core.windows.net"
EMULATOR = "http://127.0.0.1:10000/devstoreaccount1"


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def sas_target(uri: str) -> BackupTarget:
    target = open_target(uri, token=SAS, use_managed_identity=False)
    target.close()
    return target


# --- open_target: the container URL ----------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "container_url"),
    [
        (f"{HOST}/backups", f"{HOST}/backups"),
        (f"{HOST}/backups/", f"{HOST}/backups"),
        ("https://ACCT.Blob.Core.Windows.Net/backups", f"{HOST}/backups"),
        (f"{EMULATOR}/backups", f"{EMULATOR}/backups"),
        (
            "http://localhost:10000/devstoreaccount1/c-1",
            "http://localhost:10000/devstoreaccount1/c-1",
        ),
        (
            "https://azurite:10000/devstoreaccount1/abc",
            "https://azurite:10000/devstoreaccount1/abc",
        ),
        ("http://[::1]:10000/devstoreaccount1/abc", "http://[::1]:10000/devstoreaccount1/abc"),
        (
            "https://127.0.0.1:443/devstoreaccount1/abc",
            "https://127.0.0.1:443/devstoreaccount1/abc",
        ),
    ],
)
def test_blob_container_urls(uri: str, container_url: str) -> None:
    target = sas_target(uri)
    assert isinstance(target, BlobTarget)
    assert target.container_url == container_url
    assert target.folder_url("mhsm-p-20260101000000") == f"{container_url}/mhsm-p-20260101000000"


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "backups",
        "ftp://acct.blob.core.windows.net/backups",
        "http://acct.blob.core.windows.net/backups",  # plain http only for an emulator
        f"{HOST}",
        f"{HOST}/",
        f"{HOST}/backups/extra",
        f"{HOST}/Backups",
        f"{HOST}/ab",
        f"{HOST}/back--ups",
        f"{HOST}/-backups",
        f"{HOST}/backups?sv=1&sig=x",
        f"{HOST}/backups#frag",
        "https://user:pw@acct.blob.core.windows.net/backups",
        "https://acct.blob.core.windows.net:99999/backups",
        "https://acct..blob.core.windows.net/backups",
        "https://acct_x.blob.core.windows.net/backups",
        "https:///backups",
        f"{EMULATOR}",
        "http://127.0.0.1:10000/Dev/backups",
        f"{EMULATOR}/backups/x",
        f"{HOST}/back ups",
        f"{HOST}/backups\n",
        f"{HOST}/%2e%2e",
        "https://" + "a" * 2048 + ".example/backups",
    ],
)
def test_malformed_blob_uris(uri: str) -> None:
    with pytest.raises(BadParameter):
        open_target(uri, token=SAS, use_managed_identity=False)


def test_a_blob_uri_needs_exactly_one_credential() -> None:
    with pytest.raises(BadParameter, match="SAS token or useManagedIdentity"):
        open_target(f"{HOST}/c12", token=None, use_managed_identity=False)
    with pytest.raises(BadParameter, match="not both"):
        open_target(f"{HOST}/c12", token=SAS, use_managed_identity=True)
    with pytest.raises(BadParameter, match="SAS token or useManagedIdentity"):
        open_target(f"{HOST}/c12", token="?", use_managed_identity=False)


def test_managed_identity_only_over_https() -> None:
    with pytest.raises(BadParameter, match="https"):
        open_target(f"{EMULATOR}/c12", token=None, use_managed_identity=True)
    target = open_target(f"{HOST}/c12", token=None, use_managed_identity=True)
    target.close()
    assert isinstance(target, BlobTarget)


def test_the_leading_question_mark_of_a_token_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = blob_target.with_sas

    def spy(location: Any, token: str) -> BlobTarget:
        seen.append(token)
        return real(location, token)

    monkeypatch.setattr(blob_target, "with_sas", spy)
    open_target(f"{HOST}/c12", token="?" + SAS, use_managed_identity=False).close()
    assert seen == [SAS]


@pytest.mark.parametrize("token", [SAS + " x", SAS + "\n", SAS + "#x", "x" * 4097 + "sig=SECRET"])
def test_malformed_tokens_are_refused_without_being_quoted(token: str) -> None:
    with pytest.raises(BadParameter) as caught:
        open_target(f"{HOST}/c12", token=token, use_managed_identity=False)
    assert "SECRET" not in str(caught.value)
    assert "sig" not in caught.value.message


def test_no_message_or_repr_quotes_the_token() -> None:
    target = open_target(f"{HOST}/c12", token=SAS, use_managed_identity=False)
    target.close()
    assert "SECRET" not in repr(target)
    assert "SECRET" not in target.folder_url("mhsm-x")
    with pytest.raises(BadParameter) as caught:
        open_target(f"{HOST}/c12?{SAS}", token=None, use_managed_identity=False)
    assert "SECRET" not in caught.value.message


@pytest.mark.parametrize(
    ("uri", "root"),
    [
        ("file:///srv/backups", "/srv/backups"),
        ("file:///srv/backups/", "/srv/backups"),
        ("file://localhost/srv/backups", "/srv/backups"),
        ("file:///srv/my%20backups", "/srv/my backups"),
    ],
)
def test_directory_urls(uri: str, root: str) -> None:
    # A directory needs no credential and ignores any it is given.
    for token, mi in [(None, False), (SAS, False), (None, True), (SAS, True)]:
        target = open_target(uri, token=token, use_managed_identity=mi)
        assert isinstance(target, DirectoryTarget)
        assert target.root == Path(root)
    assert open_folder(uri, "mhsm-x", token=None, use_managed_identity=False)[1] == "mhsm-x"


@pytest.mark.parametrize(
    "uri",
    [
        "file:///",
        "file://",
        "file:relative/dir",
        "file://otherhost/srv/backups",
        "file:///srv/../etc",
        "file:///srv/./backups",
        "file:///srv//backups",
        "file:///srv/%2e%2e/etc",
        "file:///srv/a%2Fb",
        "file:///srv/a%5Cb",
        "file:///srv/a\\b",
        "file:///srv/a%00b",
        "file:///srv/backups?x=1",
    ],
)
def test_malformed_directory_uris(uri: str) -> None:
    with pytest.raises(BadParameter):
        open_target(uri, token=None, use_managed_identity=False)


# --- open_folder: joining and re-cutting what the SDK split -----------------------------------


@pytest.mark.parametrize(
    ("folder_url", "container_url", "folder"),
    [
        (f"{HOST}/backups/mhsm-p-20260101000000", f"{HOST}/backups", "mhsm-p-20260101000000"),
        (f"{HOST}/backups/old/mhsm-p-2026", f"{HOST}/backups", "old/mhsm-p-2026"),
        (f"{EMULATOR}/backups/mhsm-p-2026", f"{EMULATOR}/backups", "mhsm-p-2026"),
        (f"{EMULATOR}/backups/a/mhsm-p-2026", f"{EMULATOR}/backups", "a/mhsm-p-2026"),
        ("https://azurite:10000/acct1/c12/mhsm-x", "https://azurite:10000/acct1/c12", "mhsm-x"),
        ("file:///tmp/x/backups/mhsm-p-2026", "file:///tmp/x/backups", "mhsm-p-2026"),
        ("file:///backups/mhsm-p-2026", "file:///backups", "mhsm-p-2026"),
        ("file:///tmp/my%20dir/c/mhsm-p-2026", "file:///tmp/my%20dir/c", "mhsm-p-2026"),
        ("file://localhost/tmp/c/mhsm-p-2026", "file:///tmp/c", "mhsm-p-2026"),
    ],
)
def test_open_folder_undoes_the_sdk_split(folder_url: str, container_url: str, folder: str) -> None:
    sent_uri, sent_folder = parse_folder_url(folder_url)  # what KeyVaultBackupClient sends
    target, name = open_folder(sent_uri, sent_folder, token=SAS, use_managed_identity=False)
    target.close()
    assert (target.container_url, name) == (container_url, folder)
    assert target.folder_url(name) == folder_url.replace("file://localhost/", "file:///")


def test_the_sdk_cuts_every_url_after_its_first_segment() -> None:
    """What DESIGN §7 is about: only host-style blob URLs cut at the container."""
    assert parse_folder_url(f"{EMULATOR}/c12/mhsm-x") == (EMULATOR, "c12/mhsm-x")
    assert parse_folder_url("file:///tmp/x/c12/mhsm-x") == ("file:///tmp", "x/c12/mhsm-x")
    assert parse_folder_url(f"{HOST}/c12/mhsm-x") == (f"{HOST}/c12", "mhsm-x")


def test_open_folder_also_takes_the_container_url_and_folder() -> None:
    target, name = open_folder(
        f"{EMULATOR}/c12/", "/mhsm-x/", token=SAS, use_managed_identity=False
    )
    target.close()
    assert (target.container_url, name) == (f"{EMULATOR}/c12", "mhsm-x")


@pytest.mark.parametrize(
    ("uri", "folder"),
    [
        (f"{HOST}/c12", ""),
        (f"{HOST}/c12", "/"),
        (f"{HOST}/c12", ".."),
        (f"{HOST}/c12", "a/../mhsm-x"),
        (f"{HOST}/c12", "a//mhsm-x"),
        (f"{HOST}/c12", "a\\mhsm-x"),
        (f"{HOST}/c12", "mhsm-x\x00"),
        (f"{HOST}/c12", "mhsm-x?sv=1"),
        (f"{HOST}/c12", "mhsm-x#f"),
        (f"{HOST}/c12", "%2e%2e"),
        (f"{HOST}/c12", "a%2Fb"),
        (f"{HOST}/c12", "a" * 1025),
        (f"{HOST}/c12", "a" * 256),
        (EMULATOR, "c12"),  # the account and container, but no folder
        (HOST, "c12"),
        ("file:///", "mhsm-x"),
        (f"{HOST}/c12?sig=x", "mhsm-x"),
    ],
)
def test_open_folder_refuses_malformed_folders(uri: str, folder: str) -> None:
    with pytest.raises(BadParameter):
        open_folder(uri, folder, token=SAS, use_managed_identity=False)


def test_names_and_prefixes() -> None:
    assert check_folder("a/mhsm-x") == "a/mhsm-x"
    assert check_folder("old backups/mhsm-x") == "old backups/mhsm-x"
    assert check_name("records-00000.bin") == "records-00000.bin"
    assert check_prefix("") == ""
    assert check_prefix("mhsm-") == "mhsm-"
    for bad in ["", "a/b", "..", "a\\b", "a\tb", "x" * 256]:
        with pytest.raises(BadParameter):
            check_name(bad)
    for bad in ["a/b", "..", "x" * 256]:
        with pytest.raises(BadParameter):
            check_prefix(bad)


# --- the directory target ---------------------------------------------------------------------


def directory(tmp_path: Path) -> DirectoryTarget:
    target = open_target(f"file://{tmp_path}/backups", token=None, use_managed_identity=False)
    assert isinstance(target, DirectoryTarget)
    return target


def test_directory_round_trip(tmp_path: Path) -> None:
    target = directory(tmp_path)

    async def scenario() -> None:
        await target.check_writable()
        assert await target.list_folders() == []
        await target.write("mhsm-p-2", "manifest.json", b"{}")
        await target.write("mhsm-p-1", "records-00000.bin", b"old")
        await target.write("mhsm-p-1", "records-00000.bin", b"new")
        await target.write("mhsm-p-1", "manifest.json", b"")
        assert await target.read("mhsm-p-1", "records-00000.bin", 3) == b"new"
        assert await target.read("mhsm-p-1", "manifest.json", 0) == b""
        assert await target.exists("mhsm-p-1", "manifest.json")
        assert not await target.exists("mhsm-p-1", "records-00001.bin")
        assert not await target.exists("mhsm-p-9", "manifest.json")
        await target.check_readable("mhsm-p-1")
        assert await target.list_folders() == ["mhsm-p-1", "mhsm-p-2"]
        assert await target.list_folders("mhsm-p-2") == ["mhsm-p-2"]
        await target.delete_folder("mhsm-p-1")
        await target.delete_folder("mhsm-p-1")  # already gone: no error
        assert await target.list_folders() == ["mhsm-p-2"]

    run(scenario())
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == ["mhsm-p-2"]  # no probe
    assert [p.name for p in (tmp_path / "backups" / "mhsm-p-2").iterdir()] == ["manifest.json"]


def test_directory_lists_only_folders(tmp_path: Path) -> None:
    target = directory(tmp_path)
    (tmp_path / "backups" / "mhsm-dir").mkdir(parents=True)
    (tmp_path / "backups" / "mhsm-file").write_bytes(b"")
    (tmp_path / "backups" / "other").mkdir()
    assert run(target.list_folders()) == ["mhsm-dir"]
    assert run(target.list_folders("")) == ["mhsm-dir", "other"]


def test_directory_errors(tmp_path: Path) -> None:
    target = directory(tmp_path)
    with pytest.raises(TargetError, match="not found"):
        run(target.list_folders())  # the container does not exist yet
    run(target.write("mhsm-p-1", "records-00000.bin", b"12345"))
    with pytest.raises(TargetError, match="larger than 4 bytes"):
        run(target.read("mhsm-p-1", "records-00000.bin", 4))
    with pytest.raises(TargetError, match=r"mhsm-p-1/manifest\.json was not found"):
        run(target.read("mhsm-p-1", "manifest.json", 100))
    with pytest.raises(TargetError, match="mhsm-p-1 was not found"):
        run(target.check_readable("mhsm-p-1"))
    with pytest.raises(BadParameter):
        run(target.write("../escape", "manifest.json", b""))
    with pytest.raises(BadParameter):
        run(target.read("mhsm-p-1", "../../x", 10))
    assert TargetError("x").status == 400
    assert TargetError("x").code == "StorageAccessFailed"


def test_directory_parent_must_exist(tmp_path: Path) -> None:
    target = open_target(
        f"file://{tmp_path}/missing/backups", token=None, use_managed_identity=False
    )
    with pytest.raises(TargetError, match="parent"):
        run(target.check_writable())
    with pytest.raises(TargetError):
        run(target.write("mhsm-p-1", "manifest.json", b""))
    assert not (tmp_path / "missing").exists()


def test_directory_refuses_a_file_as_container(tmp_path: Path) -> None:
    (tmp_path / "backups").write_bytes(b"")
    with pytest.raises(TargetError, match="could not be used"):
        run(directory(tmp_path).check_writable())


# --- SDK errors become short messages of our own ----------------------------------------------


def storage_error(cls: type[HttpResponseError], status: int, code: str) -> HttpResponseError:
    exc = cls(f"GET {HOST}/c12/x?{SAS} failed")
    exc.status_code = status
    exc.error_code = code  # type: ignore[attr-defined]  # set by azure-storage-blob
    return exc


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (storage_error(ResourceNotFoundError, 404, "ContainerNotFound"), "container was not found"),
        (storage_error(ResourceNotFoundError, 404, "BlobNotFound"), "MISSING"),
        (storage_error(ClientAuthenticationError, 403, "AuthenticationFailed"), "denied"),
        (storage_error(HttpResponseError, 403, "AuthorizationPermissionMismatch"), "denied"),
        (storage_error(HttpResponseError, 500, "InternalError"), "HTTP 500, InternalError"),
        (storage_error(HttpResponseError, 409, f"x&{SAS}"), "HTTP 409)"),
        (ClientAuthenticationError(f"token for {SAS}"), "managed identity"),
        (CredentialUnavailableError(f"no identity {SAS}"), "managed identity"),
        (ServiceRequestError(f"connect {HOST}/c12?{SAS}"), "could not be reached"),
    ],
)
def test_storage_errors_are_described_without_their_text(exc: AzureError, message: str) -> None:
    described = describe_error(exc, "MISSING")
    assert message in described
    assert "SECRET" not in described
    assert "sig" not in described


@pytest.mark.parametrize(
    "uri",
    [
        "https://attacker.example/c12",
        "https://acct.blob.core.windows.net.attacker.example/c12",
        "https://10.0.0.5/acct1/c12",
    ],
)
def test_the_managed_identity_token_goes_only_to_azure_storage(uri: str) -> None:
    with pytest.raises(BadParameter, match="managed identity"):
        open_target(uri, token=None, use_managed_identity=True)


@pytest.mark.parametrize(
    "uri",
    [
        "https://acct.blob.core.windows.net/c12",
        "https://acct.blob.core.usgovcloudapi.net/c12",
        "https://127.0.0.1:10000/devstoreaccount1/c12",
        "https://localhost:10000/devstoreaccount1/c12",
    ],
)
def test_the_managed_identity_may_reach_azure_storage_and_local_emulators(uri: str) -> None:
    open_target(uri, token=None, use_managed_identity=True).close()


@pytest.mark.parametrize(
    "uri", ["http://10.0.0.5:10000/acct1/c12", "http://azurite:10000/acct1/c12"]
)
def test_plain_http_only_to_this_machine(uri: str) -> None:
    with pytest.raises(BadParameter, match="this machine"):
        open_target(uri, token=SAS, use_managed_identity=False)
    open_target("http://127.0.0.1:10000/acct1/c12", token=SAS, use_managed_identity=False).close()
