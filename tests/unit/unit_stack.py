"""Unit-test fixtures: the whole key stack in-process (no processes, no sockets: DESIGN §10).

- `clock`: a `FakeClock` the services and the token service share; tests move it.
- `hsm`: runs `async def body(stack)` in a fresh event loop (`asyncio.run`) against a freshly
  built `Stack` (memory storage → barrier view → key cache → services → ApiContext) and closes it
  afterwards. pytest-asyncio is not installed, so this is how service tests await.
- `make_api` / `api`: the ASGI app behind a `starlette.testclient.TestClient` for
  `https://127.0.0.1:8443`, carrying a valid admin token.
- `jobs=True` (build_stack, open_api, make_api): also a `BackupService` (pool "unit") as
  `stack.jobs` and `ctx.jobs`, so the backup/restore routes and the restore gate exist. Its
  watchdog is not started (tests call `take_over_stale` themselves); it closes with the stack.
- `release=True` (build_stack, open_api, make_api): also a `KeyRelease` as `stack.release` and
  `ctx.release`, signing with an in-memory pool chain (`pool_signer()`) and trusting one
  `AttestationAuthority` (`stack.attestation`: its JWKS is served without sockets, and it mints
  attestation tokens).

Event loops: `KeyCache.load()` starts a watch task in the running loop, and the memory storage's
watch waits on loop-bound events, so the stack must live in the loop that serves requests. The
TestClient is therefore opened first (as a context manager, so one blocking portal = one loop
serves every request of the test) around a late-bound ASGI app; the stack is then built *inside*
that loop with `client.portal.call(...)`, the real app is plugged in, and at teardown the cache's
watcher is cancelled in the same loop before the portal closes. This keeps the real `load()` +
watch path under test instead of skipping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import json
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import Receive, Scope, Send

from openmhsm.api.app import build_app
from openmhsm.api.context import ApiContext
from openmhsm.auth.attestation import AttestationIssuers, PoolSigner
from openmhsm.auth.challenge import resource_for_host
from openmhsm.auth.external import IssuerKeys
from openmhsm.auth.roles import ADMINISTRATOR
from openmhsm.auth.tokens import TokenService
from openmhsm.backup.service import BackupService
from openmhsm.barrier.barrier import Barrier
from openmhsm.barrier.keyring import Keyring
from openmhsm.barrier.view import BarrierView
from openmhsm.config import DeletionPolicy
from openmhsm.crypto.jwk import KeyMaterial, b64u_encode, public_jwk
from openmhsm.domain.secrets import DomainSecrets
from openmhsm.services.backup import KeyBackups
from openmhsm.services.deleted import DeletedKeyService
from openmhsm.services.key_cache import KeyCache
from openmhsm.services.key_ops import KeyOperations
from openmhsm.services.keys import KeyService
from openmhsm.services.principals import PrincipalStore
from openmhsm.services.rbac import RbacService
from openmhsm.services.release import KeyRelease
from openmhsm.services.settings import SettingsStore
from openmhsm.storage.memory import MemoryStorage
from openmhsm.types import Principal

with warnings.catch_warnings():
    # Starlette 1.10 prefers httpx2 for its TestClient; the project's dev extra pins httpx.
    warnings.filterwarnings(
        "ignore", message="Using `httpx` with", category=StarletteDeprecationWarning
    )
    from starlette.testclient import TestClient

T = TypeVar("T")

START = 1_700_000_000.0
HOST = "127.0.0.1:8443"
BASE_URL = f"https://{HOST}"
RESOURCE = resource_for_host(HOST)  # https://0.0.1:8443
TENANT = "7f3e8a52-0c1d-4b8e-9a6f-2d5c4b3a1e0f"
ISSUER = f"{BASE_URL}/{TENANT}/v2.0"
PREFIX = "/t/"
CHEAP_SCRYPT_N = 2**4
TOKEN_LIFETIME = 400 * 86400  # outlives every clock move a test makes
ATTESTATION_ISSUER = "https://attest.unit.test"


class FakeClock:
    """A `Clock` that stands still until a test moves it."""

    def __init__(self, start: float = START) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@functools.cache
def pool_signer() -> PoolSigner:
    """A signer like a partition's: an EC P-256 leaf issued by an in-memory pool CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit pool CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )

    return PoolSigner(
        leaf_key, [cert("127.0.0.1", leaf_key, False), cert("unit pool CA", ca_key, True)]
    )


@functools.cache
def _attestation_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class AttestationAuthority:
    """A trusted attestation issuer without sockets: its JWKS is handed to `IssuerKeys` as its
    fetch, and it signs attestation tokens (RS256) with any claims."""

    kid = "unit-attestation-key"

    def __init__(self, clock: FakeClock, issuer: str = ATTESTATION_ISSUER) -> None:
        self.clock = clock
        self.issuer = issuer
        self.key = _attestation_key()

    async def fetch(self, issuer: str) -> Mapping[str, Any]:
        return {"keys": [{**public_jwk(KeyMaterial("RSA", self.key)), "kid": self.kid}]}

    def token(
        self,
        claims: Mapping[str, Any],
        *,
        lifetime: int = 600,
        issuer: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """An attestation token with `claims` (plus iss, iat, nbf, exp unless given)."""
        now = int(self.clock.now())
        body = {"iss": issuer or self.issuer, "iat": now, "nbf": now, "exp": now + lifetime}
        body.update(claims)
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signing_input = ".".join(b64u_encode(json.dumps(part).encode()) for part in (header, body))
        signature = (key or self.key).sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{b64u_encode(signature)}"


def audience_ok(audience: str) -> bool:
    """What the partition accepts for host 127.0.0.1:8443: its challenge resource."""
    return audience.rstrip("/") == RESOURCE


@dataclass
class Stack:
    """One partition's services over one storage, built as `cluster/partition.py` does."""

    storage: MemoryStorage
    secrets: DomainSecrets
    clock: FakeClock
    deletion: DeletionPolicy
    view: BarrierView
    cache: KeyCache
    keys: KeyService
    deleted: DeletedKeyService
    ops: KeyOperations
    backups: KeyBackups
    principals: PrincipalStore
    tokens: TokenService
    ctx: ApiContext
    owns_storage: bool = True
    admin: Principal | None = None
    rbac: RbacService | None = None
    jobs: BackupService | None = None
    release: KeyRelease | None = None
    attestation: AttestationAuthority | None = None
    partition: int = 0
    others: list[Stack] = field(default_factory=list)

    async def peer(self, *, load: bool = True) -> Stack:
        """Another partition on the same storage and security domain (closed with this one),
        numbered after this one's other partitions; with a BackupService if this has one."""
        other = await build_stack(
            self.storage,
            secrets=self.secrets,
            clock=self.clock,
            deletion=self.deletion,
            load=load,
            jobs=self.jobs is not None,
            partition=self.partition + 1 + len(self.others),
        )
        other.owns_storage = False
        self.others.append(other)
        return other

    async def other_domain(self) -> Stack:
        """A pool with its own storage and a different security domain."""
        other = await build_stack(
            clock=self.clock, deletion=self.deletion, jobs=self.jobs is not None
        )
        self.others.append(other)
        return other

    async def same_domain_pool(self) -> Stack:
        """A pool with its own storage but this pool's security domain (a restored pool)."""
        other = await build_stack(
            secrets=self.secrets,
            clock=self.clock,
            deletion=self.deletion,
            jobs=self.jobs is not None,
        )
        self.others.append(other)
        return other

    def admin_token(self, audience: str = RESOURCE) -> str:
        assert self.admin is not None, "build the stack with admin=True"
        token, _ = self.tokens.issue(
            principal=self.admin, audience=audience, tenant_id=TENANT, lifetime=TOKEN_LIFETIME
        )
        return token

    async def close(self) -> None:
        for other in self.others:
            await other.close()
        if self.jobs is not None:
            await self.jobs.close()
        if self.release is not None and self.release.issuers is not None:
            await self.release.issuers.stop()
        await self.cache.close()
        if self.owns_storage:
            await self.storage.close()


async def build_stack(
    storage: MemoryStorage | None = None,
    *,
    secrets: DomainSecrets | None = None,
    clock: FakeClock | None = None,
    deletion: DeletionPolicy | None = None,
    load: bool = True,
    admin: bool = False,
    rbac: bool = False,
    jobs: bool = False,
    release: bool = False,
    partition: int = 0,
) -> Stack:
    """storage → BarrierView → KeyCache (loaded, watching) → services → ApiContext
    (→ BackupService with `jobs`, KeyRelease with `release`)."""
    storage = MemoryStorage() if storage is None else storage
    secrets = DomainSecrets.generate() if secrets is None else secrets
    clock = FakeClock() if clock is None else clock
    deletion = DeletionPolicy() if deletion is None else deletion
    view = BarrierView(storage, Barrier(Keyring({1: secrets.barrier_key(1)}, 1)), PREFIX)
    cache = KeyCache(view)
    if load:
        await cache.load()
    keys = KeyService(cache, clock)
    deleted = DeletedKeyService(keys, cache, clock, deletion)
    ops = KeyOperations(keys, clock)
    backups = KeyBackups(keys, cache, secrets.domain_id, secrets.backup_key())
    principals = PrincipalStore(view, clock, scrypt_n=CHEAP_SCRYPT_N)
    tokens = TokenService(secrets.token_signing_key(), ISSUER, clock)
    ctx = ApiContext(
        keys=keys,
        deleted=deleted,
        ops=ops,
        backups=backups,
        principals=principals,
        tokens=tokens,
        deletion=deletion,
        tenant_id=TENANT,
        audience_ok=audience_ok,
        settings=SettingsStore(view),
        last_write=lambda: view.last_write,
    )
    stack = Stack(
        storage=storage,
        secrets=secrets,
        clock=clock,
        deletion=deletion,
        view=view,
        cache=cache,
        keys=keys,
        deleted=deleted,
        ops=ops,
        backups=backups,
        principals=principals,
        tokens=tokens,
        ctx=ctx,
        partition=partition,
    )
    if jobs:  # before build_app, which reads ctx.jobs for the routes and the restore gate
        service = BackupService(view, cache, lambda: secrets, pool="unit", partition=partition)
        stack.jobs = ctx.jobs = service
    if release:
        stack.attestation = AttestationAuthority(clock)
        keys_of = IssuerKeys([ATTESTATION_ISSUER], fetch=stack.attestation.fetch)
        await keys_of.refresh(ATTESTATION_ISSUER)
        issuers = AttestationIssuers(keys_of, clock)
        stack.release = ctx.release = KeyRelease(keys, clock, pool_signer(), issuers)
    if rbac:  # enforced, with the admin holding Managed HSM Administrator as a pool's does
        stack.rbac = ctx.rbac = RbacService(cache)
    if admin:
        stack.admin, _ = await principals.create("admin")
        if stack.rbac is not None:
            await stack.rbac.ensure_assignment(stack.admin.object_id, ADMINISTRATOR)
    return stack


class _LateApp:
    """An ASGI app whose real app is plugged in once the stack exists in the client's loop.
    It answers the TestClient's lifespan messages itself."""

    def __init__(self) -> None:
        self.app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.app is not None, "the stack is not built yet"
        await self.app(scope, receive, send)


@dataclass
class ApiHarness:
    """The app behind an authorized TestClient, and the stack serving it."""

    client: TestClient
    stack: Stack
    token: str

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a coroutine function in the app's event loop (for direct service access)."""
        assert self.client.portal is not None
        return self.client.portal.call(fn, *args)

    def send_anonymous(self, method: str, url: str, **kwargs: Any) -> Any:
        """A request without the Authorization header, on the same client and loop."""
        request = self.client.build_request(method, url, **kwargs)
        del request.headers["Authorization"]
        return self.client.send(request)


@contextlib.contextmanager
def open_api(
    clock: FakeClock,
    deletion: DeletionPolicy | None = None,
    *,
    rbac: bool = False,
    jobs: bool = False,
    release: bool = False,
    **client_options: Any,
) -> Iterator[ApiHarness]:
    late = _LateApp()
    with TestClient(late, base_url=BASE_URL, **client_options) as client:
        assert client.portal is not None
        builder = functools.partial(
            build_stack,
            clock=clock,
            deletion=deletion,
            admin=True,
            rbac=rbac,
            jobs=jobs,
            release=release,
        )
        stack: Stack = client.portal.call(builder)
        try:
            late.app = build_app(stack.ctx)
            token = stack.admin_token()
            client.headers["Authorization"] = f"Bearer {token}"
            yield ApiHarness(client, stack, token)
        finally:
            client.portal.call(stack.close)


def writer_skips_catch_up(s: Stack) -> None:
    """The writer of a test that must outrun its peer's watch (a write normally waits for its
    own watch first, which lets the peer's run too): it is the only writer, its cache is
    current, and here it does not wait."""

    async def caught_up(timeout: float = 0.0) -> bool:
        return True

    s.cache.catch_up = caught_up  # type: ignore[method-assign]


async def stall_watch(s: Stack) -> None:
    """The partition's watch stops delivering, as when its etcd member hangs (SIGSTOP)."""
    follower = s.cache._follower
    assert follower is not None
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
