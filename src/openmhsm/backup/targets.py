"""Where a full backup is written and read back: a blob container or a directory (DESIGN §7).

A target is a container of folders, each holding whole named objects. Its URL names an Azure Blob
container, host-style (`https://<account>.blob.core.windows.net/<container>`) or path-style as
emulators serve it (`http://127.0.0.1:10000/<account>/<container>`), or a directory
(`file:///<absolute path>/<container>`). Everything a client sends is checked here, before any I/O;
no message or repr quotes a SAS token.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

from openmhsm.errors import BadParameter, MhsmError

MAX_URI_CHARS = 2048
MAX_FOLDER_CHARS = 1024
MAX_NAME_CHARS = 255
MAX_TOKEN_CHARS = 4096
_AZURE_STORAGE_SUFFIXES = (
    ".blob.core.windows.net",
    ".blob.core.chinacloudapi.cn",
    ".blob.core.usgovcloudapi.net",
    ".blob.storage.azure.net",
)
MANIFEST = "manifest.json"
PROBE_PREFIX = ".openmhsm-probe-"
CONTAINER_NOT_FOUND = "The storage container was not found."

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_SAS = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@/?%-]+")

T = TypeVar("T")


class TargetError(MhsmError):
    """The backup storage could not be used: access denied, not found or unreachable."""

    code = "StorageAccessFailed"
    status = 400


class BackupTarget(Protocol):
    """A container of backup folders. Methods raise TargetError, or BadParameter for bad names."""

    container_url: str

    def folder_url(self, folder: str) -> str:
        """The folder's URL: `container_url/folder`, without any SAS."""
        ...

    async def check_writable(self) -> None:
        """Prove that objects can be written to and deleted from the container."""
        ...

    async def check_readable(self, folder: str) -> None:
        """Prove that `folder` holds a backup (its manifest.json)."""
        ...

    async def exists(self, folder: str, name: str) -> bool: ...

    async def write(self, folder: str, name: str, data: bytes) -> None:
        """Write one whole object, replacing any previous one."""
        ...

    async def read(self, folder: str, name: str, max_bytes: int) -> bytes:
        """One whole object; TargetError if it is missing or larger than `max_bytes`."""
        ...

    async def list_folders(self, prefix: str = "mhsm-") -> list[str]:
        """Sorted names of the folders directly in the container that start with `prefix`."""
        ...

    async def delete_folder(self, folder: str) -> None:
        """Delete every object under `folder`; a missing folder is not an error."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BlobLocation:
    """An Azure Blob container; `account` is set for a path-style (emulator) URL."""

    scheme: str
    netloc: str
    account: str | None
    container: str

    @property
    def account_url(self) -> str:
        base = f"{self.scheme}://{self.netloc}"
        return base if self.account is None else f"{base}/{self.account}"

    @property
    def container_url(self) -> str:
        return f"{self.account_url}/{self.container}"


Location = BlobLocation | Path


def open_target(
    storage_resource_uri: str, *, token: str | None, use_managed_identity: bool
) -> BackupTarget:
    """The container a backup is written to (`storageResourceUri` of a backup request).

    Raises BadParameter for a malformed URI or token, and for a blob URI with neither a SAS token
    nor the managed identity, or with both. A directory needs neither and ignores them.
    """
    parts, segments = _split_uri(storage_resource_uri)
    location, rest = _split_location(parts, segments, with_folder=False)
    if rest:
        raise BadParameter("The storage URI must name a blob container, not a path inside it.")
    return _open(location, token, use_managed_identity)


def open_folder(
    storage_resource_uri: str, folder: str, *, token: str | None, use_managed_identity: bool
) -> tuple[BackupTarget, str]:
    """The container and folder of a backup to restore, as (target, folder name).

    SDK clients cut the folder URL after its first path segment, whatever the URL's form; so the
    two halves are joined and cut again where this form puts the container (DESIGN §7).
    Raises BadParameter like `open_target`, and for a malformed folder.
    """
    _check_chars(folder, MAX_FOLDER_CHARS, "folder")
    if "?" in folder or "#" in folder:
        raise BadParameter("The folder name is malformed.")
    parts, segments = _split_uri(storage_resource_uri)
    segments += [_check_segment(unquote(s), "folder") for s in folder.strip("/").split("/")]
    location, rest = _split_location(parts, segments, with_folder=True)
    return _open(location, token, use_managed_identity), check_folder("/".join(rest))


def check_folder(folder: str) -> str:
    """`folder` if it is a relative path of safe segments; else BadParameter."""
    _check_chars(folder, MAX_FOLDER_CHARS, "folder")
    for segment in folder.split("/"):
        _check_segment(segment, "folder")
    return folder


def check_name(name: str) -> str:
    """`name` if it is one safe path segment; else BadParameter."""
    _check_chars(name, MAX_NAME_CHARS, "object")
    return _check_segment(name, "object")


def check_prefix(prefix: str) -> str:
    """`prefix` if it can start a folder name (it may be empty); else BadParameter."""
    return check_name(prefix) if prefix else prefix


def folder_not_found(folder: str) -> str:
    return f"The backup folder {folder} was not found in the storage container."


def object_not_found(folder: str, name: str) -> str:
    return f"The backup object {folder}/{name} was not found in the storage container."


def object_too_large(folder: str, name: str, max_bytes: int) -> str:
    return f"The backup object {folder}/{name} is larger than {max_bytes} bytes."


def _open(location: Location, token: str | None, use_managed_identity: bool) -> BackupTarget:
    if isinstance(location, Path):
        from openmhsm.backup.dir_target import DirectoryTarget

        return DirectoryTarget(location)
    sas = _sas_token(token)
    if sas is not None and use_managed_identity:
        raise BadParameter("Give a SAS token or useManagedIdentity, not both.")
    # azure-storage-blob (and azure-identity) load only when a blob container is used.
    from openmhsm.backup import blob_target

    if sas is not None:
        return blob_target.with_sas(location, sas)
    if not use_managed_identity:
        raise BadParameter("A blob storage URI needs a SAS token or useManagedIdentity.")
    if location.scheme != "https":
        raise BadParameter("The managed identity can authenticate to storage only over https.")
    if not _is_storage_host(location.netloc):
        # Its token is good for every storage account the identity may use: it goes only to
        # Azure Storage (or an emulator on this machine), never to a host a caller names.
        raise BadParameter(
            "The managed identity authenticates only to Azure Storage "
            "(<account>.blob.core.windows.net and the sovereign clouds' equivalents) or to an "
            "emulator on this machine."
        )
    return blob_target.with_managed_identity(location)


def _is_storage_host(netloc: str) -> bool:
    host = urlsplit(f"//{netloc}").hostname or ""
    return host.endswith(_AZURE_STORAGE_SUFFIXES) or _is_loopback(host)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_uri(uri: str) -> tuple[SplitResult, list[str]]:
    """The URI's parts and its percent-decoded path segments."""
    _check_chars(uri, MAX_URI_CHARS, "storage URI")
    if " " in uri:
        raise BadParameter("The storage URI must not contain spaces (percent-encode them).")
    try:
        parts = urlsplit(uri)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError:
        raise BadParameter("The storage URI is malformed.") from None
    if parts.query or parts.fragment or parts.username is not None or parts.password is not None:
        raise BadParameter(
            "The storage URI must not carry a query, fragment or credentials;"
            " pass the SAS token on its own."
        )
    path = parts.path.strip("/")
    raw = path.split("/") if path else []
    return parts, [_check_segment(unquote(s), "storage URI") for s in raw]


def _split_location(
    parts: SplitResult, segments: list[str], *, with_folder: bool
) -> tuple[Location, list[str]]:
    """The container named by the leading segments, and the segments after it."""
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise BadParameter("A file:// storage URI must name a local absolute path.")
        cut = len(segments) - 1 if with_folder else len(segments)
        if cut < 1:
            raise BadParameter("A file:// storage URI must name a directory below the root.")
        return Path("/", *segments[:cut]), segments[cut:]
    if parts.scheme not in ("https", "http"):
        raise BadParameter("The storage URI must be an https:// blob container or a file:// path.")
    path_style = _is_path_style(parts.hostname or "")
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        # Not to other hosts: the SAS token would travel in clear, and a caller could make the
        # pool send requests into its own network.
        raise BadParameter("Plain http is allowed only for a storage emulator on this machine.")
    cut = 2 if path_style else 1
    if len(segments) < cut + with_folder:
        form = "<account>/<container>" if path_style else "<container>"
        raise BadParameter(f"The storage URI's path must start with /{form}.")
    account = segments[0] if path_style else None
    if account is not None and not _ACCOUNT.fullmatch(account):
        raise BadParameter("The storage account name in the URI is malformed.")
    if not _CONTAINER.fullmatch(segments[cut - 1]):
        raise BadParameter("The blob container name in the URI is malformed.")
    location = BlobLocation(parts.scheme, parts.netloc.lower(), account, segments[cut - 1])
    return location, segments[cut:]


def _is_path_style(host: str) -> bool:
    """Emulators take the account from the path: an IP literal or a single-label host name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if len(host) > 253 or not _HOST.fullmatch(host):
            raise BadParameter("The storage URI's host is malformed.") from None
        return "." not in host
    return True


def _sas_token(token: str | None) -> str | None:
    token = (token or "").removeprefix("?")
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS or not _SAS.fullmatch(token):
        raise BadParameter("The SAS token is malformed.")
    return token


def _check_chars(value: str, max_chars: int, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= max_chars:
        raise BadParameter(f"The {what} must be 1 to {max_chars} characters.")
    if _CONTROL.search(value) or "\\" in value:
        raise BadParameter(f"The {what} must not contain control characters or '\\'.")


def _check_segment(segment: str, what: str) -> str:
    if segment in ("", ".", "..") or "/" in segment or len(segment) > MAX_NAME_CHARS:
        raise BadParameter(f"The {what} has an empty, '.', '..' or overlong path segment.")
    if _CONTROL.search(segment) or "\\" in segment:
        raise BadParameter(f"The {what} must not contain control characters or '\\'.")
    return segment
