"""Write forwarding from an extended region to its primary (DESIGN §8).

The extended region sends a write on as it came: method, path, query, body and headers, the
caller's own bearer token included (the primary trusts its peer's tokens: one domain-derived
signing key), and the `Host` the client used, so the URLs in the answer (key ids, operation
locations) name the region the client called. The primary marks its answer with the newest
revision it wrote (`x-openmhsm-revision`); before answering, the extended region waits, up to
`REPLICA_WAIT`, until its replica holds that revision, so a client reads its own write in the
region it wrote through.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import httpx

from openmhsm.errors import ServiceUnavailable, StorageUnavailable
from openmhsm.region.replicator import CHECKPOINT, parse_checkpoint
from openmhsm.services.key_cache import KeyCache
from openmhsm.storage.base import Storage

log = logging.getLogger(__name__)

FORWARDED_HEADER: Final = "x-openmhsm-forwarded"
REVISION_HEADER: Final = "x-openmhsm-revision"
TIMEOUT: Final = 30.0  # a forwarded create of an RSA-4096 key takes its time
REPLICA_WAIT: Final = 2.0
POLL: Final = 0.005
# Hop-by-hop headers (RFC 9110 §7.6.1) and those the HTTP layers set for themselves.
NOT_FORWARDED: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "server",
        FORWARDED_HEADER,
        REVISION_HEADER,
    }
)

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Answer:
    """The primary's answer, as the extended region passes it on."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Sender(Protocol):
    """What the region gate forwards through (`Forwarder`)."""

    async def send(
        self, primary_url: str, method: str, target: str, headers: Headers, body: bytes
    ) -> Answer: ...


class ReplicaWait:
    """Waits until this region's replica holds a primary revision and the cache has seen it."""

    def __init__(self, storage: Storage, prefix: str, cache: KeyCache) -> None:
        self._storage = storage
        self._checkpoint = prefix + CHECKPOINT
        self._cache = cache

    async def reach(self, revision: int, timeout: float = REPLICA_WAIT) -> bool:
        """True once the replica holds source `revision` and the cache has caught up with it;
        False after `timeout` seconds or when storage cannot answer."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                entry = await self._storage.get(self._checkpoint)
                if entry is not None and parse_checkpoint(entry.value) >= revision:
                    return await self._cache.catch_up(max(0.0, deadline - time.monotonic()))
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(POLL)
        except (StorageUnavailable, ValueError):
            return False


class Forwarder:
    """An HTTPS client of the primary region, one connection pool per partition."""

    def __init__(self, tls: ssl.SSLContext, replica: ReplicaWait) -> None:
        self._client = httpx.AsyncClient(verify=tls, timeout=TIMEOUT, follow_redirects=False)
        self._replica = replica

    async def send(
        self, primary_url: str, method: str, target: str, headers: Headers, body: bytes
    ) -> Answer:
        """Send the request to the primary and return its answer once the replica has caught
        up. `target` is the path with its query. Raises ServiceUnavailable when the primary
        cannot be reached (the client retries; a failover may be under way)."""
        sent = [(k, v) for k, v in headers if k.lower() not in NOT_FORWARDED]
        sent.append((FORWARDED_HEADER, "1"))
        try:
            response = await self._client.request(
                method, primary_url + target, headers=sent, content=body
            )
        except httpx.HTTPError as exc:
            log.warning("the primary region did not answer a forwarded write: %s", type(exc))
            raise ServiceUnavailable(
                "The primary region of this pool cannot be reached to take the write; "
                "retry later (the extended region is promoted if the primary stays lost)."
            ) from None
        revision = response.headers.get(REVISION_HEADER, "")
        wrote = int(revision) if revision.isascii() and revision.isdigit() else 0
        if wrote > 0 and not await self._replica.reach(wrote):
            log.info("replica not at primary revision %d after %.1f s", wrote, REPLICA_WAIT)
        # httpx hands over the body decoded: its encoding header must not travel with it.
        kept = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k not in NOT_FORWARDED and k != "content-encoding"
        ]
        return Answer(response.status_code, kept, response.content)

    async def close(self) -> None:
        await self._client.aclose()
