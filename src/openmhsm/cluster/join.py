"""Hand-over of the domain secrets to a partition that has none, over mutual TLS (DESIGN §5).

Every partition runs a small TLS server on its join port. Both sides present certificates issued
by the pool CA: the server its partition certificate, the client its own; the server requires a
client certificate whose subject names a partition of this pool, and only then sends the
secrets. The secrets never touch disk or storage unsealed: the joiner seals them under its own
seal key as soon as it has them.

Wire format (one exchange per connection): the client sends `JOIN1 <pool name>\\n`; the server
answers `[u32 big-endian length][DomainSecrets.to_bytes()]`, or closes without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from openmhsm.domain.secrets import DomainSecrets

log = logging.getLogger(__name__)

MAGIC = b"JOIN1 "
MAX_SECRETS = 4096
PARTITION_CN_PREFIX = "openmhsm-partition-"


def partition_common_name(pool: str, partition_id: int) -> str:
    return f"{PARTITION_CN_PREFIX}{pool}-{partition_id}"


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=ca)
    return ctx


def _peer_is_partition(writer: asyncio.StreamWriter, pool: str) -> bool:
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return False
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    prefix = f"{PARTITION_CN_PREFIX}{pool}-"
    return any(str(n.value).startswith(prefix) for n in names)


class JoinServer:
    """Serves this partition's domain secrets to other partitions of the same pool."""

    def __init__(self, secrets: DomainSecrets, pool: str, context: ssl.SSLContext) -> None:
        self.secrets = secrets  # replaced when the pool takes on an uploaded security domain
        self._pool = pool
        self._context = context
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, ssl=self._context)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            wanted = MAGIC + self._pool.encode() + b"\n"
            if line != wanted or not _peer_is_partition(writer, self._pool):
                log.warning("join refused: not a partition of pool %s", self._pool)
                return
            payload = self.secrets.to_bytes()
            writer.write(struct.pack(">I", len(payload)) + payload)
            await writer.drain()
            log.info("domain secrets handed to a joining partition")
        except (TimeoutError, OSError, ssl.SSLError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def fetch_secrets(
    peers: Sequence[tuple[str, int]],
    pool: str,
    context: ssl.SSLContext,
    timeout: float = 5.0,
    domain_id: str | None = None,
) -> DomainSecrets | None:
    """The domain secrets from the first peer that hands over those of `domain_id` (any, if
    None), or None."""
    for host, port in peers:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout
            )
        except (OSError, TimeoutError, ssl.SSLError):
            continue
        try:
            writer.write(MAGIC + pool.encode() + b"\n")
            await writer.drain()
            header = await asyncio.wait_for(reader.readexactly(4), timeout)
            (size,) = struct.unpack(">I", header)
            if size > MAX_SECRETS:
                continue
            data = await asyncio.wait_for(reader.readexactly(size), timeout)
            secrets = DomainSecrets.from_bytes(data)
            if domain_id is None or secrets.domain_id == domain_id:
                return secrets
        except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
            continue
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return None
