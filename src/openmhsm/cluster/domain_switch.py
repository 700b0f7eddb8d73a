"""Taking on an uploaded security domain (a pool in recovery mode, DESIGN §5).

The partition that receives the upload re-seals every record of the pool under the new domain's
keys and marks the pool Active in one storage transaction, then switches over: barrier, token
signing key (earlier tokens stay valid until they expire), backup key, sealed file, join server.
The other partitions notice the new domain id in `meta/domain`, fetch the new secrets from a peer
over mutual TLS, and switch the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openmhsm.auth.tokens import TokenService
from openmhsm.barrier.barrier import Barrier
from openmhsm.barrier.keyring import Keyring
from openmhsm.barrier.view import BarrierView
from openmhsm.cluster.join import JoinServer, fetch_secrets
from openmhsm.domain.sealing import seal_to_file
from openmhsm.domain.secrets import DomainSecrets
from openmhsm.services.backup import KeyBackups
from openmhsm.services.security_domain import (
    DOMAIN_META,
    EXCHANGE,
    SecurityDomainService,
)
from openmhsm.storage.base import Delete, Put, TxnOp

log = logging.getLogger(__name__)
FOLLOW_EVERY = 1.0
PAGE = 500


def barrier_for(secrets: DomainSecrets) -> Barrier:
    return Barrier(Keyring({1: secrets.barrier_key(1)}, 1))


@dataclass
class DomainHolder:
    """Everything in a partition that depends on which security domain it holds."""

    view: BarrierView
    secrets: DomainSecrets
    tokens: TokenService
    backups: KeyBackups
    sealed: Path
    seal_key: Path
    pool: str
    peers: Sequence[tuple[str, int]] = ()
    join_context: ssl.SSLContext | None = None
    join_server: JoinServer | None = None
    service: SecurityDomainService | None = None
    _follower: asyncio.Task[None] | None = field(default=None, repr=False)

    async def install(self, new: DomainSecrets) -> None:
        """Re-seal the pool's records under `new`, mark the pool Active, and switch over."""
        old = self.view
        fresh = BarrierView(old.storage, barrier_for(new), old.prefix)
        ops: list[TxnOp] = []
        start: str | None = None
        while True:
            page = await old.list_page("", start_after=start, limit=PAGE)
            for entry in page:
                if entry.key == EXCHANGE:
                    ops.append(Delete(entry.key, entry.mod_revision))
                elif not entry.key.startswith("meta/"):
                    ops.append(Put(entry.key, entry.value, entry.mod_revision))
            if len(page) < PAGE:
                break
            start = page[-1].key
        meta = await old.get(DOMAIN_META)
        active = json.dumps(SecurityDomainService.active_meta(new)).encode()
        ops.append(Put(DOMAIN_META, active, meta.mod_revision if meta else 0))
        await fresh.txn(ops)
        self.switch(new)
        log.warning("the pool took on the uploaded security domain %s", new.domain_id)

    def switch(self, new: DomainSecrets) -> None:
        self.view.use_barrier(barrier_for(new))
        self.tokens.rotate(new.token_signing_key())
        self.backups.use_domain(new.domain_id, new.backup_key())
        seal_to_file(new, self.sealed, self.seal_key)
        if self.join_server is not None:
            self.join_server.secrets = new
        if self.service is not None:
            self.service.note_active(new)
        self.secrets = new

    def start_following(self) -> None:
        self._follower = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower

    async def _follow(self) -> None:
        """Switch when another partition installed an uploaded domain."""
        while True:
            await asyncio.sleep(FOLLOW_EVERY)
            try:
                if self.service is not None:
                    await self.service.state()  # another partition may have activated the pool
                meta = await self.view.get(DOMAIN_META)
                if meta is None:
                    continue
                domain_id = json.loads(meta.value).get("domain_id")
                if domain_id == self.secrets.domain_id or self.join_context is None:
                    continue
                new = await fetch_secrets(
                    self.peers, self.pool, self.join_context, domain_id=domain_id
                )
                if new is not None:
                    self.switch(new)
                    log.warning("switched to the pool's new security domain %s", domain_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the pool's security domain failed; retrying")
