"""One partition: unseals the domain secrets, opens storage, builds the services and the ASGI app,
and serves the full API over TLS until told to stop (SIGINT/SIGTERM drain in-flight requests)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import uvicorn

from openmhsm.api.app import build_app
from openmhsm.api.context import ApiContext
from openmhsm.api.limits import LimitedHttpToolsProtocol
from openmhsm.auth import roles
from openmhsm.auth.attestation import AttestationIssuers, PoolSigner
from openmhsm.auth.audiences import Audiences
from openmhsm.auth.external import IssuerKeys, TrustedIssuers
from openmhsm.auth.tokens import TokenService
from openmhsm.backup.service import BackupService
from openmhsm.barrier.view import BarrierView
from openmhsm.cluster import join
from openmhsm.cluster.domain_loader import load_domain
from openmhsm.cluster.domain_switch import DomainHolder, barrier_for
from openmhsm.cluster.draining import DrainingServer
from openmhsm.cluster.join import JoinServer
from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.listeners import harden_tls, listening_socket
from openmhsm.config import PoolConfig
from openmhsm.region.follower import read_lag
from openmhsm.region.forwarder import Forwarder, ReplicaWait
from openmhsm.region.link import Peer, RegionLink
from openmhsm.region.replicator import LOCAL_PREFIXES, Lag
from openmhsm.region.role import OnChange, RegionRole
from openmhsm.services import fence, scheduler
from openmhsm.services.audit import AuditLog
from openmhsm.services.backup import KeyBackups
from openmhsm.services.deleted import DeletedKeyService
from openmhsm.services.key_cache import KeyCache
from openmhsm.services.key_ops import KeyOperations
from openmhsm.services.keys import KeyService
from openmhsm.services.leader import LeaderLease
from openmhsm.services.principals import PrincipalStore
from openmhsm.services.rbac import RbacService
from openmhsm.services.release import KeyRelease
from openmhsm.services.security_domain import (
    NOT_ACTIVATED,
    RECOVERY,
    SecurityDomainService,
)
from openmhsm.services.settings import SettingsStore
from openmhsm.storage.base import Storage
from openmhsm.storage.registry import open_storage
from openmhsm.types import SystemClock

log = logging.getLogger(__name__)

KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open


def region_lag(data: DataDir) -> Callable[[], Lag | None]:
    """The extended region's replication lag, as its supervisor last published it."""
    return lambda: read_lag(data.region_state, time.time())


@dataclass
class AdminCredentials:
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class PartitionSettings:
    """Where one partition listens and what it talks to.

    In dev mode the partition serves the pool port alone. In pool mode it shares the pool port
    with its peers (SO_REUSEPORT), serves the full API on its own port too, and runs a join
    server for peers that need the domain secrets."""

    partition_id: int
    storage: str
    own_port: int
    pool_port: int | None = None
    join_port: int | None = None
    peers: tuple[tuple[str, int], ...] = ()
    bootstrap_admin: bool = True
    pool_ports: tuple[int, ...] = ()  # every port of the pool: a token is good on each


class Partition:
    """The partition's services and app, over one storage connection."""

    def __init__(self, data: DataDir, config: PoolConfig, settings: PartitionSettings) -> None:
        self.data = data
        self.config = config
        self.settings = settings
        self.partition_id = settings.partition_id
        self.clock = SystemClock(config.clock_offset)
        self.storage: Storage | None = None
        self.cache: KeyCache | None = None
        self.context: ApiContext | None = None
        self.admin: AdminCredentials | None = None
        self.join_server: JoinServer | None = None
        self.domain: DomainHolder | None = None
        self.audit = AuditLog(data.audit, settings.partition_id)
        self.external: TrustedIssuers | None = None
        self.attestation: AttestationIssuers | None = None
        self.jobs: BackupService | None = None
        self.scheduler: scheduler.Scheduler | None = None
        self.region: RegionRole | None = None
        self.forwarder: Forwarder | None = None

    def _join_context(self, server: bool) -> ssl.SSLContext | None:
        n = self.partition_id
        cert, key = self.data.partition_cert(n), self.data.partition_key(n)
        if not cert.exists():
            return None
        make = join.server_context if server else join.client_context
        # An extended region's partition certificates come from the primary's CA (DESIGN §8).
        ca = self.data.join_ca if self.data.join_ca.exists() else self.data.ca_cert
        return make(cert, key, ca)

    async def open(self) -> ApiContext:
        raw = open_storage(self.settings.storage)
        self.storage = raw
        prefix = f"/{self.config.name}/"
        n = self.partition_id
        secrets = await load_domain(
            raw,
            prefix,
            self.data.sealed(n),
            self.data.seal_key(n),
            pool=self.config.name,
            peers=self.settings.peers,
            join_context=self._join_context(server=False),
            initial_state=RECOVERY if self.config.activation == "recovery" else NOT_ACTIVATED,
        )
        view = BarrierView(raw, barrier_for(secrets), prefix)
        view.local_prefixes = LOCAL_PREFIXES
        cache = KeyCache(view)
        await cache.load()
        self.cache = cache
        keys = KeyService(cache, self.clock)
        principals = PrincipalStore(view, self.clock)
        rbac = RbacService(cache)
        if self.settings.bootstrap_admin:
            # While a full restore is under way nothing may be written; this partition's job
            # watchdog finishes the restore if the partition running it died.
            fenced = await view.get(fence.FENCE) is not None
            self.admin = (
                self._saved_admin() if fenced else await self._ensure_admin(principals, rbac)
            )
        issuer = f"{self.config.url}/{self.config.tenant_id}/v2.0"
        tokens = TokenService(secrets.token_signing_key(), issuer, self.clock)
        audiences = Audiences(self.config.names)
        backups = KeyBackups(keys, cache, secrets.domain_id, secrets.backup_key())
        holder = DomainHolder(
            view=view,
            secrets=secrets,
            tokens=tokens,
            backups=backups,
            sealed=self.data.sealed(n),
            seal_key=self.data.seal_key(n),
            pool=self.config.name,
            peers=self.settings.peers,
            join_context=self._join_context(server=False),
        )
        holder.service = SecurityDomainService(view, secrets, holder.install)
        await holder.service.state()
        self.domain = holder
        self.jobs = BackupService(
            view,
            cache,
            lambda: holder.secrets,
            pool=self.config.name,
            partition=n,
            backup_dirs=self.config.backup_dirs,
        )
        deleted = DeletedKeyService(keys, cache, self.clock, self.config.deletion)
        lease = LeaderLease(view, scheduler.LEASE_KEY, n)
        self.scheduler = scheduler.Scheduler(keys, deleted, self.clock, lease)
        signer = PoolSigner.from_pem(
            self.data.server_key.read_bytes(),
            self.data.server_cert.read_bytes(),
            self.data.ca_cert.read_bytes(),
        )
        release = KeyRelease(keys, self.clock, signer, await self._attestation_issuers())
        self.forwarder = Forwarder(self._forward_tls(), ReplicaWait(raw, prefix, cache))
        self.context = ApiContext(
            keys=keys,
            deleted=deleted,
            ops=KeyOperations(keys, self.clock, offload_rsa=self._spare_cores()),
            backups=backups,
            principals=principals,
            tokens=tokens,
            deletion=self.config.deletion,
            tenant_id=self.config.tenant_id,
            audience_ok=audiences,
            partition_id=n,
            security_domain=holder.service,
            rbac=rbac,
            settings=SettingsStore(view),
            audit=self.audit,
            external_issuers=await self._trusted_issuers(),
            jobs=self.jobs,
            release=release,
            forwarder=self.forwarder,
            last_write=lambda: view.last_write,
        )
        self.region = RegionRole(
            raw, prefix, self._linked(tokens, audiences), self._configured_link()
        )
        await self.region.refresh()
        region = self.region
        self.context.forwards_to = lambda: region.forwards_to
        join_ctx = self._join_context(server=True)
        if self.settings.join_port is not None and join_ctx is not None:
            self.join_server = JoinServer(secrets, self.config.name, join_ctx)
            holder.join_server = self.join_server
            await self.join_server.start(self.config.bind, self.settings.join_port)
        holder.start_following()
        self.jobs.start()
        self.scheduler.restoring = self.jobs.restoring
        # Rotation and purge are writes: the primary's to make.
        self.scheduler.standby = lambda: region.forwards_to is not None
        self.scheduler.start()
        self.region.start()
        self.context.metrics.replication_lag = region_lag(self.data)
        self.context.metrics.scheduler_leading = lambda: lease.leading
        return self.context

    def _spare_cores(self) -> bool:
        """Whether this host has more cores than partitions (then RSA goes to threads)."""
        partitions_here = max(1, len(self.settings.pool_ports))
        return (os.cpu_count() or 1) > partitions_here

    def _configured_link(self) -> RegionLink | None:
        """An extended region's link as config.json has it, until its supervisor stores one."""
        region = self.config.region
        if region is None:
            return None
        peer = Peer(region.primary_url, region.primary_etcd, region.primary_join)
        return RegionLink(role="extended", term=1, url=self.config.url, peer=peer)

    def _linked(self, tokens: TokenService, audiences: Audiences) -> OnChange:
        """What follows a change of the region link: the peer region's tokens are good here."""
        tenant = self.config.tenant_id

        def apply(link: RegionLink | None) -> None:
            peer = None if link is None else link.peer.url
            tokens.trust_peer(None if peer is None else f"{peer}/{tenant}/v2.0")
            audiences.trust_peer(peer)
            if link is not None:
                log.info("region role %s at term %d (peer %s)", link.role, link.term, peer)

        return apply

    def _forward_tls(self) -> ssl.SSLContext:
        """TLS for forwarding to the peer region: the pool CA, and the primary's CA that
        issued an extended region's partition certificates (one and the same since regions
        share the pool CA)."""
        tls = ssl.create_default_context(cafile=str(self.data.ca_cert))
        if self.data.join_ca.exists():
            tls.load_verify_locations(cafile=str(self.data.join_ca))
        return tls

    def _issuer_tls(self) -> ssl.SSLContext:
        """TLS for reaching issuers: the system's roots, plus --trusted-issuer-ca if given (one
        private issuer must not cut the pool off from public ones such as Azure Attestation)."""
        tls = ssl.create_default_context()
        if self.config.trusted_issuer_ca:
            tls.load_verify_locations(cafile=self.config.trusted_issuer_ca)
        return tls

    async def _trusted_issuers(self) -> TrustedIssuers | None:
        if not self.config.trusted_issuers:
            return None
        self.external = TrustedIssuers(self.config.trusted_issuers, self.clock, self._issuer_tls())
        await self.external.start()
        return self.external

    async def _attestation_issuers(self) -> AttestationIssuers | None:
        if not self.config.attestation_issuers:
            return None
        keys = IssuerKeys(
            self.config.attestation_issuers, self._issuer_tls(), label="attestation issuer"
        )
        self.attestation = AttestationIssuers(keys, self.clock)
        await self.attestation.start()
        return self.attestation

    def _saved_admin(self) -> AdminCredentials | None:
        if not self.data.admin.exists():
            return None
        saved = read_json(self.data.admin)
        return AdminCredentials(saved["client_id"], saved["client_secret"])

    async def _ensure_admin(
        self, principals: PrincipalStore, rbac: RbacService
    ) -> AdminCredentials:
        """The bootstrap administrator holds Managed HSM Administrator at `/`, and nothing more,
        as Managed HSM's initial administrators do. A pool with no role assignment at all (one
        made before RBAC) gives it that role again rather than leave nobody in charge."""
        if self.data.admin.exists():
            saved = read_json(self.data.admin)
            principal = await principals.get(saved["client_id"])
            if principal is None and saved.get("preset"):  # made ahead by `mhsm deploy init`
                principal, _ = await principals.create("admin", "service", preset=saved)
            if principal is not None:
                if not rbac.has_assignments():
                    await rbac.ensure_assignment(principal.object_id, roles.ADMINISTRATOR)
                return AdminCredentials(saved["client_id"], saved["client_secret"])
        principal, secret = await principals.create("admin", "service")
        await rbac.ensure_assignment(principal.object_id, roles.ADMINISTRATOR)
        write_json_atomic(
            self.data.admin,
            {
                "client_id": principal.client_id,
                "client_secret": secret,
                "object_id": principal.object_id,
            },
        )
        return AdminCredentials(principal.client_id, secret)

    async def close(self) -> None:
        if self.region is not None:
            await self.region.stop()
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.scheduler is not None:
            await self.scheduler.close()
        if self.jobs is not None:
            await self.jobs.close()
        if self.external is not None:
            await self.external.stop()
        if self.attestation is not None:
            await self.attestation.stop()
        if self.domain is not None:
            await self.domain.stop()
        if self.join_server is not None:
            await self.join_server.close()
        if self.cache is not None:
            await self.cache.close()
        if self.storage is not None:
            await self.storage.close()
        self.audit.close()

    def _sockets(self) -> list[socket.socket]:
        bind = self.config.bind
        settings = self.settings
        if settings.pool_port is None:
            return [listening_socket(bind, settings.own_port, reuse_port=False)]
        return [
            listening_socket(bind, settings.pool_port, reuse_port=True),
            listening_socket(bind, settings.own_port, reuse_port=False),
        ]

    async def serve(self, on_ready: Callable[[], Awaitable[None]]) -> None:
        """Serve until SIGINT/SIGTERM, then drain in-flight requests; `on_ready` runs once the
        sockets accept connections."""
        context = self.context or await self.open()
        config = uvicorn.Config(
            build_app(context),
            ssl_certfile=str(self.data.server_cert),
            ssl_keyfile=str(self.data.server_key),
            lifespan="off",
            log_level="warning",
            access_log=False,
            http=LimitedHttpToolsProtocol,  # httptools with head limits and deadlines
            ws="none",  # no WebSocket route: an upgrade request is served as plain HTTP
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=10,
            server_header=False,
            proxy_headers=False,  # no trusted proxy sets X-Forwarded-*: skip it per request
            backlog=1024,
        )
        config.load()  # makes the TLS context from the certificate files, hardened here
        assert config.ssl is not None
        harden_tls(config.ssl)
        server = DrainingServer(config)

        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.02)
            await on_ready()

        ready = asyncio.create_task(announce())
        try:
            await server.serve(sockets=self._sockets())
        finally:
            ready.cancel()
            await self.close()
