"""An Azure Blob container as a backup target, through azure-storage-blob's sync client.

The sync client keeps aiohttp out of the service; each call runs in `asyncio.to_thread`. SDK errors
become TargetError with a short message of our own: the SDK's text may quote URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

from azure.core.credentials import AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential
from azure.storage.blob import BlobPrefix, ContainerClient, ExponentialRetry

from openmhsm.backup.targets import (
    CONTAINER_NOT_FOUND,
    MANIFEST,
    PROBE_PREFIX,
    BlobLocation,
    TargetError,
    check_folder,
    check_name,
    check_prefix,
    folder_not_found,
    object_not_found,
    object_too_large,
)

log = logging.getLogger(__name__)

DENIED = (
    "Access to the storage container was denied"
    " (check the SAS token or the managed identity's role)."
)
IDENTITY_FAILED = "The pool's managed identity could not get a token for Azure Storage."
STORAGE_SCOPE = "https://storage.azure.com/.default"
UNREACHABLE = "The storage service could not be reached (a network or TLS failure)."
_ERROR_CODE = re.compile(r"[A-Za-z0-9]{1,64}")

T = TypeVar("T")


def with_sas(location: BlobLocation, token: str) -> BlobTarget:
    """The container, authenticated by a SAS token (without its leading "?")."""
    return BlobTarget(location, AzureSasCredential(token))


def with_managed_identity(location: BlobLocation) -> BlobTarget:
    """The container, authenticated as this process's managed identity (App Service or IMDS)."""
    return BlobTarget(location, ManagedIdentityCredential())


class BlobTarget:
    """A blob container: a folder is a name prefix ending in "/", an object a block blob."""

    def __init__(
        self, location: BlobLocation, credential: AzureSasCredential | ManagedIdentityCredential
    ) -> None:
        self.container_url = location.container_url
        self._identity = credential if isinstance(credential, ManagedIdentityCredential) else None
        # A few quick retries: the SDK's default backoff (15 s, then 3^n) outlasts a request.
        retry = ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1
        )
        self._client = ContainerClient(
            location.account_url, location.container, credential=credential, retry_policy=retry
        )

    def __repr__(self) -> str:
        return f"BlobTarget({self.container_url!r})"

    def folder_url(self, folder: str) -> str:
        return f"{self.container_url}/{quote(check_folder(folder))}"

    async def check_writable(self) -> None:
        probe = self._client.get_blob_client(f"{PROBE_PREFIX}{uuid.uuid4().hex}")

        def write_and_delete() -> None:
            probe.upload_blob(b"", overwrite=True)
            probe.delete_blob()

        await self._call(write_and_delete, CONTAINER_NOT_FOUND)

    async def check_readable(self, folder: str) -> None:
        if not await self.exists(folder, MANIFEST):
            raise TargetError(folder_not_found(folder))

    async def exists(self, folder: str, name: str) -> bool:
        blob = self._client.get_blob_client(_blob_name(folder, name))
        return await self._call(blob.exists, CONTAINER_NOT_FOUND)

    async def write(self, folder: str, name: str, data: bytes) -> None:
        blob = self._client.get_blob_client(_blob_name(folder, name))
        await self._call(lambda: blob.upload_blob(data, overwrite=True), CONTAINER_NOT_FOUND)

    async def read(self, folder: str, name: str, max_bytes: int) -> bytes:
        blob = self._client.get_blob_client(_blob_name(folder, name))
        too_large = TargetError(object_too_large(folder, name, max_bytes))

        def download() -> bytes:
            # The size first, so an oversized object is never fetched.
            if blob.get_blob_properties().size > max_bytes:
                raise too_large
            return blob.download_blob().readall()

        data = await self._call(download, object_not_found(folder, name))
        if len(data) > max_bytes:  # replaced by a larger one in between
            raise too_large
        return data

    async def list_folders(self, prefix: str = "mhsm-") -> list[str]:
        check_prefix(prefix)

        def list_prefixes() -> list[str]:
            items = self._client.walk_blobs(name_starts_with=prefix, delimiter="/")
            return sorted(item.name.rstrip("/") for item in items if isinstance(item, BlobPrefix))

        return await self._call(list_prefixes, CONTAINER_NOT_FOUND)

    async def delete_folder(self, folder: str) -> None:
        prefix = check_folder(folder) + "/"

        def delete_all() -> None:
            for name in self._client.list_blob_names(name_starts_with=prefix):
                with contextlib.suppress(ResourceNotFoundError):
                    self._client.delete_blob(name, delete_snapshots="include")

        await self._call(delete_all, CONTAINER_NOT_FOUND)

    def close(self) -> None:
        self._client.close()
        if self._identity is not None:
            self._identity.close()

    async def _call(self, fn: Callable[[], T], missing: str) -> T:
        identity = self._identity

        def run() -> T:
            if identity is not None:
                self._fetch_token(identity)
            return fn()

        try:
            return await asyncio.to_thread(run)
        except AzureError as exc:
            message = describe_error(exc, missing)
            status = getattr(exc, "status_code", None)
            log.warning("blob storage %s: %s (%s)", self.container_url, message, status)
            raise TargetError(message) from None

    def _fetch_token(self, identity: ManagedIdentityCredential) -> None:
        """A token first (cached after the first): the storage client would retry a failure."""
        try:
            identity.get_token(STORAGE_SCOPE)
        except AzureError as exc:
            log.warning(
                "blob storage %s: %s (%s)", self.container_url, IDENTITY_FAILED, type(exc).__name__
            )
            raise TargetError(IDENTITY_FAILED) from None


def describe_error(exc: AzureError, missing: str) -> str:
    """A short message for an SDK error, never its own text; `missing` for a missing blob."""
    if isinstance(exc, CredentialUnavailableError) or (
        isinstance(exc, ClientAuthenticationError) and exc.status_code is None
    ):
        return IDENTITY_FAILED
    # Storage errors carry the service's error code; azure-core's own types do not declare it.
    code = str(getattr(exc, "error_code", None) or "")
    if isinstance(exc, ResourceNotFoundError):
        return CONTAINER_NOT_FOUND if code == "ContainerNotFound" else missing
    if isinstance(exc, ClientAuthenticationError):
        return DENIED
    if isinstance(exc, HttpResponseError):
        if exc.status_code in (401, 403):
            return DENIED
        detail = f", {code}" if _ERROR_CODE.fullmatch(code) else ""
        return f"The storage service refused the request (HTTP {exc.status_code}{detail})."
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return UNREACHABLE
    return "The storage request failed."


def _blob_name(folder: str, name: str) -> str:
    return f"{check_folder(folder)}/{check_name(name)}"
