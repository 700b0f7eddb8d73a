"""Long-running jobs (full backup, full restore, selective key restore) and the pool-wide lock,
kept in storage so that any partition answers a status poll and takes over a dead one's job.

Records (sealed like every record):
- `joblog/<id>`: a job's status, as the status URL answers it.
- `jobs/active`: the lock. At most one full backup or restore runs in a pool; the record names
  the job, the partition running it, the phase and a heartbeat (wall-clock seconds).
- `jobs/fence`: present while a full restore runs. Every write of the pool's services carries the
  check that it is absent (`services/fence.py`), so a write commits before the restore takes over or
  not at all, and the API refuses data-plane calls while it is there.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from openmhsm.errors import Conflict, MhsmError, StorageConflict
from openmhsm.services import fence
from openmhsm.storage.base import Delete, Put, Storage, TxnOp

PREFIX = "jobs/"
ACTIVE = "jobs/active"
FENCE = fence.FENCE
LOG = "joblog/"
# Seconds, on the observing partition's own monotonic clock, that a lock may go unrenewed (its
# storage revision unchanged) before another partition takes the job over.
STALE_AFTER = 15.0
KEEP_ENDED = 7 * 86400  # seconds a job's status stays answerable after it ended
# Checks and one-key restores hold no lock: one still InProgress this long after it started has
# lost the partition running it.
LIGHT_DEADLINE = 15 * 60

IN_PROGRESS, SUCCEEDED, FAILED = "InProgress", "Succeeded", "Failed"
BACKUP, PREBACKUP = "backup", "prebackup"
RESTORE, PRERESTORE, SELECTIVE = "restore", "prerestore", "selective"
STAGING, APPLYING = "staging", "applying"


class LockLost(Exception):
    """Another partition took the job over (this one was thought dead)."""


def new_job_id() -> str:
    """32 hex digits, as Managed HSM's job ids: milliseconds since the epoch, then 80 random
    bits, so ids sort by when the jobs started."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


@dataclass
class Job:
    """A job's status. `done`/`total` count records, for progress bars."""

    id: str
    kind: str
    status: str = IN_PROGRESS
    start: int = field(default_factory=lambda: int(time.time()))
    end: int | None = None
    details: str | None = None
    error: dict[str, Any] | None = None
    folder_url: str | None = None
    done: int = 0
    total: int | None = None
    partition: int = 0
    request_id: str | None = None  # the client's x-ms-client-request-id: a retry finds its job
    phase: str | None = None  # "backup"; a restore's "staging", then "applying"

    @property
    def status_path(self) -> str:
        group = "backup" if self.kind in (BACKUP, PREBACKUP) else "restore"
        return f"/{group}/{self.id}/pending"

    def wire(self) -> dict[str, Any]:
        """The status body of Azure's polling contract (API §3.2), plus progress counts."""
        body: dict[str, Any] = {
            "status": self.status,
            "statusDetails": self.details,
            "error": self.error,
            "startTime": self.start,
            "endTime": self.end,
            "jobId": self.id,
            "progress": {"phase": self.phase, "done": self.done, "total": self.total},
        }
        if self.kind in (BACKUP, PREBACKUP):
            body["azureStorageBlobContainerUri"] = self.folder_url
        return body

    def succeeded(self, details: str | None = None) -> Job:
        return replace(self, status=SUCCEEDED, end=int(time.time()), details=details)

    def failed(self, error: MhsmError, details: str | None = None) -> Job:
        inner = {"code": error.inner_code} if error.inner_code else None
        body = {"code": error.code, "message": error.message, "innererror": inner}
        return replace(self, status=FAILED, end=int(time.time()), details=details, error=body)

    def dump(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def load(cls, data: bytes) -> Job:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class Lock:
    """The lock record of a running job, with the revisions its owner compares on."""

    job: str
    kind: str
    partition: int
    phase: str
    beat: float
    revision: int = 0
    fence_revision: int = 0  # a full restore's fence, 0 for other jobs

    def dump(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k not in ("revision", "fence_revision")}
        return json.dumps(body).encode()

    @classmethod
    def load(cls, data: bytes, revision: int) -> Lock:
        return cls(**json.loads(data), revision=revision)


def _last_moved(job: Job) -> int:
    return job.end or job.start


class JobIndex:
    """The lock and fence records as the partition's key cache last saw them (`KeyCache.attach`
    at `jobs/`): what the API's restore gate and the watchdog read without touching storage."""

    def __init__(self) -> None:
        self.active: bytes | None = None
        self.fence: bytes | None = None

    def reset(self) -> None:
        self.active = None
        self.fence = None

    def apply(self, kind: str, path: str, value: bytes | None, parsed: Any) -> None:
        del parsed
        if path == ACTIVE:
            self.active = value
        elif path == FENCE:
            self.fence = value

    def restoring(self) -> str | None:
        """The id of the full restore running now, or None."""
        if self.fence is None:
            return None
        job = json.loads(self.fence).get("job")
        return str(job) if job else "unknown"

    def lock(self) -> Lock | None:
        if self.active is None:
            return None
        return Lock.load(self.active, 0)


class JobStore:
    """Job records and the lock, over the partition's barrier view."""

    def __init__(self, view: Storage, partition: int) -> None:
        self._view = view
        self.partition = partition

    async def get(self, job_id: str) -> Job | None:
        entry = await self._view.get(LOG + job_id)
        return None if entry is None else Job.load(entry.value)

    async def save(self, job: Job) -> None:
        """Record a job's progress or end, unless its record says it has ended already (another
        partition took it over and ended it). Raises LockLost then."""
        entry = await self._view.get(LOG + job.id)
        if entry is not None and Job.load(entry.value).status != IN_PROGRESS:
            raise LockLost(job.id)
        try:
            await self._view.put_if(LOG + job.id, job.dump(), entry.mod_revision if entry else 0)
        except StorageConflict:
            raise LockLost(job.id) from None

    async def prune(self, now: float) -> None:
        """Forget jobs that ended more than KEEP_ENDED seconds ago."""
        start: str | None = None
        while True:
            page = await self._view.list_page(LOG, start_after=start, limit=500)
            old = [e for e in page if _last_moved(Job.load(e.value)) < now - KEEP_ENDED]
            if old:
                await self._view.txn([Delete(e.key, e.mod_revision) for e in old[:100]])
            if len(page) < 500:
                return
            start = page[-1].key

    async def list_jobs(self) -> list[Job]:
        """Every job the log holds (jobs are pruned a week after they end)."""
        found: list[Job] = []
        start: str | None = None
        while True:
            page = await self._view.list_page(LOG, start_after=start, limit=500)
            found += [Job.load(entry.value) for entry in page]
            if len(page) < 500:
                return found
            start = page[-1].key

    async def running_job(self) -> Job | None:
        """The job holding the lock now, if any."""
        lock = await self.current_lock()
        return None if lock is None else await self.get(lock.job)

    async def start(self, job: Job, *, lock: bool = False, fence: bool = False) -> Lock | None:
        """Record a new job; with `lock`, take the pool's lock for it (and with `fence`, the
        restore fence too). Raises Conflict while another full backup or restore runs."""
        ops: list[TxnOp] = [Put(LOG + job.id, job.dump(), 0)]
        held = None
        if lock:
            phase = STAGING if fence else job.kind
            held = Lock(job.id, job.kind, self.partition, phase, time.time())
            ops.append(Put(ACTIVE, held.dump(), 0))
            ops.append(Put(FENCE, held.dump(), 0) if fence else Delete(FENCE, 0))
        try:
            revision = await self._view.txn(ops)
        except StorageConflict:
            running = await self._view.get(ACTIVE)
            other = Lock.load(running.value, 0).job if running is not None else "unknown"
            raise Conflict(
                f"Another full backup or restore (job {other}) is running in this pool; "
                "one runs at a time.",
                inner_code="OperationInProgress",
            ) from None
        if held is None:
            return None
        return replace(held, revision=revision, fence_revision=revision if fence else 0)

    async def current_lock(self) -> Lock | None:
        entry = await self._view.get(ACTIVE)
        return None if entry is None else Lock.load(entry.value, entry.mod_revision)

    async def fence_revision(self) -> int:
        entry = await self._view.get(FENCE)
        return 0 if entry is None else entry.mod_revision

    async def beat(self, held: Lock, phase: str | None = None, extra: Sequence[TxnOp] = ()) -> Lock:
        """Renew the heartbeat (and maybe move to `phase`), with `extra` operations in the same
        transaction. Raises LockLost if another partition holds the lock now."""
        moved = replace(held, beat=time.time(), phase=phase or held.phase, partition=self.partition)
        ops: list[TxnOp] = [Put(ACTIVE, moved.dump(), held.revision), *extra]
        if held.fence_revision:
            ops.append(Put(FENCE, moved.dump(), held.fence_revision))
        try:
            revision = await self._view.txn(ops)
        except StorageConflict:
            raise LockLost(held.job) from None
        fence = revision if held.fence_revision else 0
        return replace(moved, revision=revision, fence_revision=fence)

    async def take_over(self, seen: Lock) -> Lock:
        """Claim the lock as it was read from storage (`seen`, with its revision). Raises
        LockLost when it has changed since: renewed by its owner or claimed by another."""
        fence = await self.fence_revision()
        return await self.beat(replace(seen, fence_revision=fence))

    async def finish(self, job: Job, held: Lock | None) -> None:
        """Record the job's end and release the lock and fence it held, in one transaction.
        Raises LockLost."""
        ops: list[TxnOp] = [Put(LOG + job.id, job.dump())]
        if held is not None:
            ops.append(Delete(ACTIVE, held.revision))
            if held.fence_revision:
                ops.append(Delete(FENCE, held.fence_revision))
        try:
            await self._view.txn(ops)
        except StorageConflict:
            raise LockLost(job.id) from None


class LockHolder:
    """The one owner of a held lock's revisions: the job's batches and its heartbeat renew the
    lock through here, one at a time, so they never race each other."""

    def __init__(self, store: JobStore, held: Lock) -> None:
        self._store = store
        self.held = held
        self._mutex = asyncio.Lock()

    async def beat(self, phase: str | None = None, extra: Sequence[TxnOp] = ()) -> None:
        """Raises LockLost."""
        async with self._mutex:
            self.held = await self._store.beat(self.held, phase, extra)

    async def finish(self, job: Job) -> None:
        """Raises LockLost."""
        async with self._mutex:
            await self._store.finish(job, self.held)
