"""How a starting partition comes to hold the domain secrets: unseal its own sealed copy, join
from a peer, or (on a brand-new pool) create the domain. The domain metadata (`meta/domain`) is
the one plaintext record in storage; whoever writes it first creates the pool's domain."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

from openmhsm.cluster.join import fetch_secrets
from openmhsm.domain.sealing import seal_to_file, unseal_from_file
from openmhsm.domain.secrets import DomainSecrets
from openmhsm.errors import StorageConflict
from openmhsm.storage.base import Storage

log = logging.getLogger(__name__)
DOMAIN_META = "meta/domain"
JOIN_TIMEOUT = 60.0


class DomainUnavailable(RuntimeError):
    """The partition cannot obtain the domain secrets (no sealed copy and no peer)."""


async def _domain_id(storage: Storage, prefix: str) -> str | None:
    entry = await storage.get(prefix + DOMAIN_META)
    return None if entry is None else str(json.loads(entry.value)["domain_id"])


async def load_domain(
    storage: Storage,
    prefix: str,
    sealed: Path,
    seal_key: Path,
    *,
    pool: str,
    peers: Sequence[tuple[str, int]] = (),
    join_context: ssl.SSLContext | None = None,
    initial_state: str = "NotActivated",
) -> DomainSecrets:
    """The domain secrets, sealed under this partition's seal key by the time this returns.
    A brand-new pool starts in `initial_state` (NotActivated, or Recovery: its secrets are then
    temporary, until a security domain is uploaded). Raises DomainUnavailable."""
    stored_id = await _domain_id(storage, prefix)
    if sealed.exists():
        secrets = unseal_from_file(sealed, seal_key)
        if stored_id is None:
            await _publish(storage, prefix, secrets, initial_state)
        if stored_id is None or stored_id == secrets.domain_id:
            return secrets
        # The pool took on an uploaded security domain while this partition was away.
        log.info("the pool's security domain changed; joining the new one from a peer")
    if stored_id is None:
        secrets = DomainSecrets.generate()
        try:
            await _publish(storage, prefix, secrets, initial_state)
            sealed.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            seal_to_file(secrets, sealed, seal_key)
            log.info("created the pool's security domain %s", secrets.domain_id)
            return secrets
        except StorageConflict:
            stored_id = await _domain_id(storage, prefix)  # another partition created it
    return await _join(sealed, seal_key, pool, peers, join_context, stored_id)


async def _publish(storage: Storage, prefix: str, secrets: DomainSecrets, state: str) -> None:
    meta = {"v": 1, "domain_id": secrets.domain_id, "state": state}
    await storage.put_if(prefix + DOMAIN_META, json.dumps(meta).encode(), 0)


async def _join(
    sealed: Path,
    seal_key: Path,
    pool: str,
    peers: Sequence[tuple[str, int]],
    context: ssl.SSLContext | None,
    domain_id: str | None,
) -> DomainSecrets:
    if context is None or not peers:
        raise DomainUnavailable(
            "the pool's storage belongs to an existing security domain, but this partition "
            "holds no sealed copy of it and has no peer to join from"
        )
    deadline = time.monotonic() + JOIN_TIMEOUT
    while time.monotonic() < deadline:
        secrets = await fetch_secrets(peers, pool, context, domain_id=domain_id)
        if secrets is not None:
            sealed.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            seal_to_file(secrets, sealed, seal_key)
            log.info("joined the pool's security domain from a peer")
            return secrets
        await asyncio.sleep(0.5)
    raise DomainUnavailable("no peer handed over the domain secrets in time")
