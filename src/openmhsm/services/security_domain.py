"""The security domain (DESIGN §5, API §4): activation by download, recovery mode, upload.

State lives in the one plaintext record `meta/domain`: `{"domain_id", "state", "download",
"upload"}` with state `NotActivated` → (download) → `Active`, or `Recovery` (transfer key
published) → (upload) → `Active`. The download file wraps the domain secrets (datum
`hsm_backup`) to a quorum of the administrators' RSA keys; an upload hands a pool in recovery
the secrets of the pool the blob was made from.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from openmhsm.domain import blob
from openmhsm.domain.certificates import certificate_pem, new_rsa_certificate, private_key_pem
from openmhsm.domain.failures import SecurityDomainError
from openmhsm.domain.secrets import DomainSecrets
from openmhsm.errors import BadParameter, Forbidden, StorageConflict
from openmhsm.storage.base import Storage

DOMAIN_META = "meta/domain"
EXCHANGE = "domain/exchange"
ACTIVE, NOT_ACTIVATED, RECOVERY = "Active", "NotActivated", "Recovery"
MIN_CERTS, MAX_CERTS = 3, 10
MIN_QUORUM, MAX_QUORUM = 2, 10
MAX_BLOB = 1024 * 1024

Installer = Callable[[DomainSecrets], Awaitable[None]]


def _status(status: str, details: str) -> dict[str, str]:
    return {"status": status, "status_details": details}


def _new_exchange_key() -> tuple[bytes, bytes]:
    """A fresh RSA-2048 transfer key and its self-signed certificate (PEM)."""
    key, cert = new_rsa_certificate("openmhsm security domain transfer", days=365)
    return private_key_pem(key), certificate_pem(cert)


class SecurityDomainService:
    """One partition's view of the pool's security domain.

    `secrets` is the partition's current domain; `install` (given by the partition) re-seals the
    pool's records under an uploaded domain and switches the partition over to it."""

    def __init__(self, storage: Storage, secrets: DomainSecrets, install: Installer) -> None:
        self.storage = storage
        self.secrets = secrets
        self.install = install
        self._state = NOT_ACTIVATED

    # --- state ------------------------------------------------------------------------------

    async def meta(self) -> tuple[dict[str, Any], int]:
        entry = await self.storage.get(DOMAIN_META)
        if entry is None:
            raise Forbidden("This pool has no security domain yet.")
        meta: dict[str, Any] = json.loads(entry.value)
        self._state = str(meta.get("state", NOT_ACTIVATED))
        return meta, entry.mod_revision

    def cached_state(self) -> str:
        return self._state

    def note_active(self, secrets: DomainSecrets) -> None:
        """The partition switched to an uploaded domain (the pool is Active from then on)."""
        self.secrets = secrets
        self._state = ACTIVE

    async def state(self) -> str:
        """The pool's state; reads storage unless already known to be Active (it never leaves
        Active)."""
        if self._state != ACTIVE:
            await self.meta()
        return self._state

    async def _update_meta(self, changes: Mapping[str, Any]) -> None:
        for _ in range(5):
            meta, revision = await self.meta()
            meta.update(changes)
            try:
                await self.storage.put_if(DOMAIN_META, json.dumps(meta).encode(), revision)
                self._state = str(meta["state"])
                return
            except StorageConflict:
                continue
        raise StorageConflict("meta/domain kept changing")

    # --- download ---------------------------------------------------------------------------

    async def download(self, body: Mapping[str, Any]) -> str:
        """The security-domain file for the given certificates and quorum; activates the pool.
        Raises BadParameter, Forbidden (in recovery mode)."""
        state = await self.state()
        if state == RECOVERY:
            raise Forbidden("A pool in recovery mode takes an upload, not a download.")
        certificates = self._certificates(body.get("certificates"))
        required = body.get("required")
        if isinstance(required, bool) or not isinstance(required, int):
            raise BadParameter("required must be an integer quorum.")
        if not MIN_QUORUM <= required <= min(MAX_QUORUM, len(certificates)):
            raise BadParameter(
                f"required must be from {MIN_QUORUM} to the number of certificates "
                f"({len(certificates)})."
            )
        data = {
            "hsm_backup": self.secrets.to_bytes(),
            "base_enclave_backup": json.dumps(
                {"format": 1, "domain_id": self.secrets.domain_id}
            ).encode(),
            "partition_enclave_backup": b"{}",
        }
        text = blob.build_download_file(data, certificates, required)
        await self._update_meta(
            {"state": ACTIVE, "download": _status("Success", "The resource is active.")}
        )
        return text

    @staticmethod
    def _certificates(value: Any) -> list[x509.Certificate]:
        if not isinstance(value, list) or not MIN_CERTS <= len(value) <= MAX_CERTS:
            raise BadParameter(
                f"certificates must be a list of {MIN_CERTS} to {MAX_CERTS} RSA certificates."
            )
        certs = []
        for jwk in value:
            if not isinstance(jwk, Mapping):
                raise BadParameter("Each certificate must be a JWK with x5c.")
            certs.append(blob.certificate_from_jwk(jwk))  # SecurityDomainError is a 400
        if len({blob.thumbprint_s256(c) for c in certs}) != len(certs):
            raise BadParameter("The certificates must be distinct.")
        return certs

    async def download_status(self) -> dict[str, str]:
        meta, _ = await self.meta()
        if meta.get("state") == ACTIVE:
            return dict(meta.get("download") or _status("Success", "The resource is active."))
        return _status(
            "InProgress",
            f"The security domain has not been downloaded yet (state: {meta.get('state')}).",
        )

    # --- recovery: transfer key and upload --------------------------------------------------

    async def _exchange(self) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        entry = await self.storage.get(EXCHANGE)
        if entry is None:
            key_pem, cert_pem = _new_exchange_key()
            record = json.dumps({"key": key_pem.decode(), "cert": cert_pem.decode()}).encode()
            with contextlib.suppress(StorageConflict):  # another partition made it first
                await self.storage.put_if(EXCHANGE, record, 0)
            entry = await self.storage.get(EXCHANGE)
            assert entry is not None
        saved = json.loads(entry.value)
        key = serialization.load_pem_private_key(saved["key"].encode(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key, x509.load_pem_x509_certificate(saved["cert"].encode())

    async def transfer_key(self) -> str:
        """The exchange key as a JSON-encoded JWK string (API §4.1). Raises Forbidden unless the
        pool is in recovery mode."""
        if await self.state() != RECOVERY:
            raise Forbidden("The pool is not in recovery mode: there is no transfer key.")
        _, cert = await self._exchange()
        return json.dumps(dict(blob.certificate_jwk(cert)))

    async def upload(self, body: Mapping[str, Any]) -> dict[str, str]:
        """Take on the security domain in a restore blob. Raises BadParameter, Forbidden."""
        if await self.state() != RECOVERY:
            raise Forbidden(
                "The pool is not in recovery mode: a security domain upload is only "
                "accepted by a pool started with --recovery."
            )
        text = body.get("value")
        if not isinstance(text, str) or not text or len(text) > MAX_BLOB:
            raise BadParameter("value must be the restore blob's JSON text.")
        key, cert = await self._exchange()
        try:
            data = blob.read_restore_blob(text, key, cert)
            secrets = DomainSecrets.from_bytes(data["hsm_backup"])
        except SecurityDomainError as exc:
            await self._record_upload_failure(exc.message)
            raise
        except (KeyError, ValueError):
            message = "The restore blob does not hold an OpenMHSM security domain."
            await self._record_upload_failure(message)
            raise BadParameter(message) from None
        await self.install(secrets)
        return _status("Success", "The security domain was restored; the pool is active.")

    async def _record_upload_failure(self, message: str) -> None:
        await self._update_meta({"upload": _status("Failed", message)})

    async def upload_status(self) -> dict[str, str]:
        meta, _ = await self.meta()
        if meta.get("state") == ACTIVE:
            return dict(meta.get("upload") or _status("Success", "The resource is active."))
        return dict(meta.get("upload") or _status("InProgress", "Waiting for an upload."))

    @staticmethod
    def active_meta(secrets: DomainSecrets) -> dict[str, Any]:
        """`meta/domain` after an upload: the uploaded domain, active."""
        done = _status("Success", "The security domain was restored; the pool is active.")
        return {"v": 1, "domain_id": secrets.domain_id, "state": ACTIVE, "upload": done}
