"""The chaos workload: client threads that drive a pool through the Azure SDK with a seeded random
mix of writes (create, rotate, tag/enable updates, delete, purge, role assignments), writes the
pool must refuse, and crypto (remote sign, remote unwrap), for a bounded time, journaling the
outcome of every operation for `checker.py`.

Each worker owns its keys and role assignments, so the operations on any one object are sequential
and the checker can replay them in order. How an operation ends is described in `journal.py`; a
write that ends in doubt retires its object (the worker never touches it again), so the checker
knows the in-doubt write was its last.

Clients use the SDK's default retry policy unless `retry="pool"` (openmhsm.client's policy, which
also retries idempotent POSTs on connection errors, DESIGN §2).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.polling import LROPoller
from azure.identity import ClientSecretCredential
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope
from azure.keyvault.keys import DeletedKey, KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from journal import Journal, Outcome

from openmhsm.auth.roles import CRYPTO_AUDITOR, CRYPTO_USER
from openmhsm.client import credential_from_pool, retry_policy

ASSIGN_SCOPE = KeyVaultRoleScope.KEYS  # at most 50 assignments there: see MAX_LIVE_ASSIGNMENTS
MAX_LIVE_KEYS = 6
MAX_LIVE_ASSIGNMENTS = 8  # per worker; with up to 5 workers, under the /keys limit of 50
MAX_WORKERS = 5
JOIN_TIMEOUT = 120.0

# Operation weights of the mix. Writes and the crypto operations dominate; reads check that a
# partition serves what was acknowledged.
MIX: dict[str, int] = {
    "sign": 18,
    "unwrap": 8,
    "read": 8,
    "create": 14,
    "rotate": 8,
    "update": 16,
    "delete": 6,
    "purge": 3,
    "assign": 7,
    "unassign": 5,
    "refused_create": 2,
    "refused_update": 2,
    "refused_assign": 3,
}


class Refused(Exception):
    """The pool refused an operation the way the worker expected."""

    def __init__(self, status: int | None) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class KeyState:
    name: str
    live: bool = True  # False once deleted (acknowledged)
    purged: bool = False


class Worker:
    """One client thread with its own SDK clients, keys and role assignments."""

    def __init__(self, doc: dict[str, Any], index: int, seed: int, journal: Journal, retry: str):
        self.index = index
        self.rng = random.Random(seed * 1000 + index)
        self.journal = journal
        self.credential: ClientSecretCredential = credential_from_pool(doc)
        self.ca = str(doc["ca_cert"])
        self.retry = retry
        self.keys = KeyClient(doc["url"], self.credential, **self._options())
        self.access = KeyVaultAccessControlClient(doc["url"], self.credential, **self._options())
        self.seq = 0
        self.live: list[KeyState] = []
        self.deleted: list[KeyState] = []
        self.assignments: list[str] = []
        self.made = 0
        self.sign_key: KeyVaultKey | None = None
        self.wrap_key: KeyVaultKey | None = None
        self.crypto_clients: list[CryptographyClient] = []

    # --- plumbing -----------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        """A client's options: the pool CA, and its retry policy unless azure-core's default."""
        policy = {} if self.retry == "sdk" else {"retry_policy": retry_policy()}
        return {"connection_verify": self.ca, **policy}

    def _crypto(self, key: KeyVaultKey) -> CryptographyClient:
        client = CryptographyClient(key, self.credential, **self._options())
        self.crypto_clients.append(client)
        return client

    def run_op(self, op: str, target: str, action: Callable[[], dict[str, Any]]) -> Outcome:
        """Run one operation and journal how it ended."""
        self.seq += 1
        phase = self.journal.phase
        started = time.monotonic()
        try:
            detail = action()
            status = "ack"
        except Refused as refusal:
            detail, status = {"status": refusal.status}, "refused"
        except Exception as exc:  # every other end is a client-visible error
            status = "error"
            detail = {
                "status": getattr(exc, "status_code", None),
                "error": f"{type(exc).__name__}: {str(exc)[:300]}",
            }
        outcome = Outcome(
            self.index, self.seq, op, target, status, phase, self.journal.phase, started,
            time.monotonic(), detail,
        )  # fmt: skip
        self.journal.add(outcome)
        return outcome

    def close(self) -> None:
        for client in self.crypto_clients:
            client.close()
        self.keys.close()
        self.access.close()
        self.credential.close()

    # --- the loop -----------------------------------------------------------------------------

    def setup(self) -> None:
        """The two crypto keys this worker signs and unwraps with (journaled as writes)."""
        sig = f"chaos-w{self.index}-sig"
        wrap = f"chaos-w{self.index}-wrap"
        self.run_op("create", sig, lambda: self._made(self.keys.create_ec_key(sig, curve="P-256")))
        self.run_op("create", wrap, lambda: self._made(self.keys.create_rsa_key(wrap, size=2048)))
        self.sign_key = self.keys.get_key(sig)
        self.wrap_key = self.keys.get_key(wrap)
        jwk = self.sign_key.key
        assert jwk.x is not None and jwk.y is not None
        self.sign_public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(jwk.x), int.from_bytes(jwk.y), ec.SECP256R1()
        ).public_key()
        self.signer = self._crypto(self.sign_key)
        self.wrapper = self._crypto(self.wrap_key)

    def run(self, stop: threading.Event, deadline: float) -> None:
        ops, weights = zip(*MIX.items(), strict=True)
        while not stop.is_set() and time.monotonic() < deadline:
            op = self.rng.choices(ops, weights)[0]
            getattr(self, f"_op_{op}")()

    # --- operations ---------------------------------------------------------------------------

    @staticmethod
    def _made(key: KeyVaultKey) -> dict[str, Any]:
        return {
            "version": key.properties.version,
            "tags": dict(key.properties.tags or {}),
            "enabled": key.properties.enabled,
        }

    def _tags(self) -> dict[str, str]:
        return {"op": f"w{self.index}-{self.seq + 1}"}

    def _after(self, outcome: Outcome, key: KeyState) -> None:
        """An in-doubt write retires its key: the checker accepts either end for it."""
        if outcome.status == "error" and outcome.write:
            with contextlib.suppress(ValueError):
                self.live.remove(key)
            with contextlib.suppress(ValueError):
                self.deleted.remove(key)

    def _retire_unless_refused(self, outcome: Outcome, key: KeyState) -> None:
        """A write that should have been refused and was not (in doubt, or wrongly applied)
        leaves its key to the checker."""
        if outcome.status != "refused":
            with contextlib.suppress(ValueError):
                self.deleted.remove(key)

    def _op_sign(self) -> None:
        assert self.sign_key is not None
        digest = hashlib.sha256(self.rng.randbytes(16)).digest()
        public = self.sign_public

        def sign() -> dict[str, Any]:
            signature = self.signer.sign(SignatureAlgorithm.es256, digest).signature
            r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
            public.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            return {}

        self.run_op("sign", self.sign_key.name, sign)

    def _op_unwrap(self) -> None:
        assert self.wrap_key is not None
        secret = self.rng.randbytes(32)

        def unwrap() -> dict[str, Any]:
            wrapped = self.wrapper.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, secret)  # local
            got = self.wrapper.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
            if got.key != secret:
                raise AssertionError("unwrap returned another secret")
            return {}

        self.run_op("unwrap", self.wrap_key.name, unwrap)

    def _op_read(self) -> None:
        if not self.live:
            return
        key = self.rng.choice(self.live)

        def read() -> dict[str, Any]:
            got = self.keys.get_key(key.name)
            return {"version": got.properties.version, "tags": dict(got.properties.tags or {})}

        self.run_op("read", key.name, read)

    def _op_create(self) -> None:
        if len(self.live) >= MAX_LIVE_KEYS:
            self._op_delete()
            return
        self.made += 1
        key = KeyState(f"chaos-w{self.index}-k{self.made}")
        self.live.append(key)
        tags = self._tags()
        outcome = self.run_op(
            "create",
            key.name,
            lambda: self._made(self.keys.create_ec_key(key.name, curve="P-256", tags=tags)),
        )
        outcome.detail.setdefault("tags", tags)
        self._after(outcome, key)

    def _op_rotate(self) -> None:
        if not self.live:
            return
        key = self.rng.choice(self.live)
        self._after(
            self.run_op("rotate", key.name, lambda: self._made(self.keys.rotate_key(key.name))),
            key,
        )

    def _op_update(self) -> None:
        if not self.live:
            return
        key = self.rng.choice(self.live)
        tags = self._tags()
        enabled = self.rng.random() < 0.8

        def update() -> dict[str, Any]:
            made = self.keys.update_key_properties(key.name, tags=tags, enabled=enabled)
            return self._made(made)

        outcome = self.run_op("update", key.name, update)
        outcome.detail.setdefault("tags", tags)
        outcome.detail.setdefault("enabled", enabled)
        self._after(outcome, key)

    def _op_delete(self) -> None:
        if not self.live:
            return
        key = self.rng.choice(self.live)

        pollers: list[LROPoller[DeletedKey]] = []

        def delete() -> dict[str, Any]:
            pollers.append(self.keys.begin_delete_key(key.name))  # returns once DELETE answers
            return {}

        def wait() -> dict[str, Any]:
            pollers[0].wait()  # the poller's GETs run in a thread of its own: never leave it
            return {}

        outcome = self.run_op("delete", key.name, delete)
        if outcome.status == "ack":
            self.live.remove(key)
            key.live = False
            self.deleted.append(key)
            self.run_op("delete_wait", key.name, wait)
        self._after(outcome, key)

    def _op_purge(self) -> None:
        if not self.deleted:
            return
        key = self.rng.choice(self.deleted)

        def purge() -> dict[str, Any]:
            self.keys.purge_deleted_key(key.name)
            return {}

        outcome = self.run_op("purge", key.name, purge)
        if outcome.status == "ack":
            self.deleted.remove(key)
            key.purged = True
        self._after(outcome, key)

    def _op_assign(self) -> None:
        if len(self.assignments) >= MAX_LIVE_ASSIGNMENTS:
            self._op_unassign()
            return
        name = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        principal = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

        def assign() -> dict[str, Any]:
            made = self.access.create_role_assignment(
                ASSIGN_SCOPE, CRYPTO_USER, principal, name=name
            )
            return {"role": made.properties.role_definition_id, "principal": principal}

        outcome = self.run_op("assign", name, assign)
        outcome.detail.setdefault("principal", principal)
        if outcome.status == "ack":
            self.assignments.append(name)

    def _op_unassign(self) -> None:
        if not self.assignments:
            return
        name = self.rng.choice(self.assignments)

        def unassign() -> dict[str, Any]:
            self.access.delete_role_assignment(ASSIGN_SCOPE, name)
            return {}

        self.run_op("unassign", name, unassign)
        self.assignments.remove(name)  # acknowledged gone, or in doubt: never touched again

    # --- writes the pool must refuse ------------------------------------------------------------

    def _op_refused_create(self) -> None:
        """Create on a name that is deleted but recoverable: 409, and the deleted key stays."""
        if not self.deleted:
            return
        key = self.rng.choice(self.deleted)

        def create() -> dict[str, Any]:
            try:
                made = self.keys.create_ec_key(key.name, curve="P-256", tags=self._tags())
            except ResourceExistsError as e:
                raise Refused(e.status_code) from e
            return self._made(made)

        self._retire_unless_refused(self.run_op("refused_create", key.name, create), key)

    def _op_refused_update(self) -> None:
        """Update of a deleted key: 404, and the deleted key stays as it was."""
        if not self.deleted:
            return
        key = self.rng.choice(self.deleted)

        def update() -> dict[str, Any]:
            try:
                made = self.keys.update_key_properties(key.name, tags=self._tags())
            except ResourceNotFoundError as e:
                raise Refused(e.status_code) from e
            return self._made(made)

        self._retire_unless_refused(self.run_op("refused_update", key.name, update), key)

    def _op_refused_assign(self) -> None:
        """An existing assignment's name with another role: 409, and the first role stays."""
        if not self.assignments:
            return
        name = self.rng.choice(self.assignments)
        principal = str(uuid.uuid4())

        def assign() -> dict[str, Any]:
            try:
                made = self.access.create_role_assignment(
                    ASSIGN_SCOPE, CRYPTO_AUDITOR, principal, name=name
                )
            except HttpResponseError as e:
                if e.status_code == 409:
                    raise Refused(409) from e
                raise
            return {"role": made.properties.role_definition_id}

        outcome = self.run_op("refused_assign", name, assign)
        if outcome.status != "refused":
            self.assignments.remove(name)  # in doubt (or wrongly applied): the checker judges


class Workload:
    """`workers` threads running the mix until `stop()` or `seconds` have passed."""

    def __init__(
        self, doc: dict[str, Any], *, workers: int, seed: int, seconds: float, retry: str = "sdk"
    ) -> None:
        if not 0 < workers <= MAX_WORKERS:
            raise ValueError(f"1 to {MAX_WORKERS} workers")
        self.journal = Journal()
        self.seconds = seconds
        self.workers = [Worker(doc, i, seed, self.journal, retry) for i in range(workers)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0
        self.stopped = 0.0
        self.crashed: list[str] = []

    def start(self) -> None:
        for worker in self.workers:
            worker.setup()
        self.journal.phase = "steady"
        self.started = time.monotonic()
        deadline = self.started + self.seconds
        for worker in self.workers:
            thread = threading.Thread(
                target=self._guarded, args=(worker, deadline), name=f"chaos-w{worker.index}"
            )
            thread.start()
            self._threads.append(thread)

    def _guarded(self, worker: Worker, deadline: float) -> None:
        try:
            worker.run(self._stop, deadline)
        except BaseException as exc:  # a bug in the workload itself, not a pool error
            self.crashed.append(f"worker {worker.index}: {type(exc).__name__}: {exc}")

    def set_phase(self, phase: str) -> None:
        self.journal.phase = phase

    def stop(self) -> None:
        """Stop the threads (each finishes its operation in flight) and close the clients.
        Raises AssertionError if a thread is still running after JOIN_TIMEOUT."""
        self._stop.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.stopped = time.monotonic()
        hung = [t.name for t in self._threads if t.is_alive()]
        if hung:
            raise AssertionError(f"workload threads still running after {JOIN_TIMEOUT} s: {hung}")
        for worker in self.workers:
            worker.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Workload]:
        self.start()
        try:
            yield self
        finally:
            self.stop()
