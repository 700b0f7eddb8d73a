"""One partition: unseals the domain secrets, opens storage, builds the services and the ASGI app,
and serves the full API over TLS until told to stop (SIGINT/SIGTERM drain in-flight requests)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import uvicorn

from openmhsm.api.app import build_app
from openmhsm.api.context import ApiContext
from openmhsm.auth.challenge import resource_for_host
from openmhsm.auth.tokens import TokenService
from openmhsm.barrier.barrier import Barrier
from openmhsm.barrier.keyring import Keyring
from openmhsm.barrier.view import BarrierView
from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.config import PoolConfig
from openmhsm.domain.sealing import seal_to_file, unseal_from_file
from openmhsm.domain.secrets import DomainSecrets
from openmhsm.services.backup import KeyBackups
from openmhsm.services.deleted import DeletedKeyService
from openmhsm.services.key_cache import KeyCache
from openmhsm.services.key_ops import KeyOperations
from openmhsm.services.keys import KeyService
from openmhsm.services.principals import PrincipalStore
from openmhsm.storage.base import Storage
from openmhsm.storage.registry import open_storage
from openmhsm.types import SystemClock

log = logging.getLogger(__name__)
DOMAIN_META = "meta/domain"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def audience_checker(config: PoolConfig, ports: tuple[int, ...]) -> Callable[[str], bool]:
    """Tokens are valid on every endpoint of the pool: any name it serves, any of its ports."""
    accepted = {
        resource_for_host(_host_port(name, port)).rstrip("/")
        for name in config.names
        for port in ports
    }

    def audience_ok(audience: str) -> bool:
        return audience.rstrip("/") in accepted

    return audience_ok


@dataclass
class AdminCredentials:
    client_id: str
    client_secret: str


async def load_domain(
    data: DataDir, storage: Storage, prefix: str, partition_id: int
) -> DomainSecrets:
    """Unseal this partition's domain secrets, or create the domain on a brand-new pool.
    The domain metadata (`meta/domain`) is the one plaintext record in storage."""
    sealed, seal_key = data.sealed(partition_id), data.seal_key(partition_id)
    entry = await storage.get(prefix + DOMAIN_META)
    if sealed.exists():
        secrets = unseal_from_file(sealed, seal_key)
        if entry is not None and json.loads(entry.value)["domain_id"] != secrets.domain_id:
            raise RuntimeError("this partition's sealed domain does not match the pool's storage")
        return secrets
    if entry is not None:
        raise RuntimeError(
            "the pool's storage belongs to an existing security domain, but this partition "
            "holds no sealed copy of it"
        )
    secrets = DomainSecrets.generate()
    data.partition(partition_id).mkdir(parents=True, exist_ok=True)
    seal_to_file(secrets, sealed, seal_key)
    meta = {"v": 1, "domain_id": secrets.domain_id, "state": "Active"}
    await storage.put_if(prefix + DOMAIN_META, json.dumps(meta).encode(), 0)
    return secrets


class Partition:
    """The partition's services and app, over one storage connection."""

    def __init__(self, data: DataDir, config: PoolConfig, partition_id: int = 0) -> None:
        self.data = data
        self.config = config
        self.partition_id = partition_id
        self.clock = SystemClock()
        self.storage: Storage | None = None
        self.cache: KeyCache | None = None
        self.context: ApiContext | None = None
        self.admin: AdminCredentials | None = None

    async def open(self) -> ApiContext:
        raw = open_storage(self.config.storage)
        self.storage = raw
        prefix = f"/{self.config.name}/"
        secrets = await load_domain(self.data, raw, prefix, self.partition_id)
        barrier = Barrier(Keyring({1: secrets.barrier_key(1)}, 1))
        view = BarrierView(raw, barrier, prefix)
        cache = KeyCache(view)
        await cache.load()
        self.cache = cache
        keys = KeyService(cache, self.clock)
        principals = PrincipalStore(view, self.clock)
        self.admin = await self._ensure_admin(principals)
        issuer = f"{self.config.url}/{self.config.tenant_id}/v2.0"
        self.context = ApiContext(
            keys=keys,
            deleted=DeletedKeyService(keys, cache, self.clock, self.config.deletion),
            ops=KeyOperations(keys, self.clock),
            backups=KeyBackups(keys, cache, secrets.domain_id, secrets.backup_key()),
            principals=principals,
            tokens=TokenService(secrets.token_signing_key(), issuer, self.clock),
            deletion=self.config.deletion,
            tenant_id=self.config.tenant_id,
            audience_ok=audience_checker(self.config, (self.config.port,)),
            partition_id=self.partition_id,
        )
        return self.context

    async def _ensure_admin(self, principals: PrincipalStore) -> AdminCredentials:
        if self.data.admin.exists():
            saved = read_json(self.data.admin)
            if await principals.get(saved["client_id"]) is not None:
                return AdminCredentials(saved["client_id"], saved["client_secret"])
        principal, secret = await principals.create("admin", "service")
        write_json_atomic(
            self.data.admin, {"client_id": principal.client_id, "client_secret": secret}
        )
        return AdminCredentials(principal.client_id, secret)

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.close()
        if self.storage is not None:
            await self.storage.close()

    async def serve(self, on_ready: Callable[[], Awaitable[None]]) -> None:
        """Serve until SIGINT/SIGTERM; `on_ready` runs once the socket accepts connections."""
        context = self.context or await self.open()
        server = uvicorn.Server(
            uvicorn.Config(
                build_app(context),
                host=self.config.bind,
                port=self.config.port,
                ssl_certfile=str(self.data.server_cert),
                ssl_keyfile=str(self.data.server_key),
                lifespan="off",
                log_level="warning",
                access_log=False,
                http="httptools",
                timeout_graceful_shutdown=10,
                server_header=False,
            )
        )

        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.02)
            await on_ready()

        ready = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            ready.cancel()
            await self.close()

