"""Full backup, full restore and selective key restore as jobs: started by one partition, polled
on any, taken over by another when the one running it dies (DESIGN §7, API §3.2)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openmhsm.auth import roles
from openmhsm.backup import format as fmt
from openmhsm.backup import jobs, targets
from openmhsm.backup.dir_target import DirectoryTarget
from openmhsm.backup.jobs import Job, JobIndex, JobStore, Lock, LockHolder, LockLost
from openmhsm.backup.runs import UNCHANGED, JobRuns
from openmhsm.domain.secrets import DomainSecrets
from openmhsm.errors import Conflict, Forbidden, NotFound, ServiceUnavailable
from openmhsm.services import principals, rbac_index
from openmhsm.services.key_cache import KeyCache
from openmhsm.storage.base import Storage
from openmhsm.types import Principal

log = logging.getLogger(__name__)
WATCH_EVERY = 2.0
PRUNE_EVERY = 600.0
MAX_LIGHT_JOBS = 4  # checks and one-key restores running at once on a partition
LIGHT_KINDS = (jobs.PREBACKUP, jobs.PRERESTORE, jobs.SELECTIVE)


class BackupService:
    """One per partition. `secrets` gives the domain the pool holds now (it may take on another
    by upload)."""

    def __init__(
        self,
        view: Storage,
        cache: KeyCache,
        secrets: Callable[[], DomainSecrets],
        *,
        pool: str,
        partition: int,
        backup_dirs: tuple[str, ...] = (),
    ) -> None:
        self.view = view
        self.cache = cache
        self._secrets = secrets
        self.pool = pool
        self.partition = partition
        self.backup_dirs = backup_dirs
        self.store = JobStore(view, partition)
        self.runs = JobRuns(view, cache, self.store, secrets, pool)
        self.index = JobIndex()
        cache.attach(jobs.PREFIX, self.index)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()
        self.clock: Callable[[], float] = time.monotonic
        self._observed: tuple[int, float] | None = None  # (lock revision, when first seen)

    # --- starting jobs -------------------------------------------------------------------

    def _check_dir(self, target: targets.BackupTarget) -> targets.BackupTarget:
        """A directory target must lie under one of the pool's backup directories, when the
        pool names any (`mhsm up --backup-dir`). Raises Forbidden."""
        if self.backup_dirs and isinstance(target, DirectoryTarget):
            root = target.root.resolve()
            if not any(root.is_relative_to(Path(d).resolve()) for d in self.backup_dirs):
                target.close()
                raise Forbidden(
                    "Backups to a directory must go under one of the pool's backup "
                    "directories (mhsm up --backup-dir).",
                    inner_code="BackupDirectoryNotAllowed",
                )
        return target

    def _new_job(self, kind: str, request_id: str | None) -> Job:
        return Job(jobs.new_job_id(), kind, partition=self.partition, request_id=request_id)

    async def start_backup(
        self,
        uri: str,
        token: str | None,
        managed: bool,
        *,
        pre: bool,
        request_id: str | None = None,
    ) -> Job:
        """Raises BadParameter (malformed target), Conflict (another full job runs)."""
        target = self._check_dir(
            targets.open_target(uri, token=token, use_managed_identity=managed)
        )
        job = self._new_job(jobs.PREBACKUP if pre else jobs.BACKUP, request_id)
        if pre:
            self._admit(job.kind)
            await self.store.start(job)
            self._spawn(job, self.runs.pre_backup(job, target))
            return job
        job.folder_url = target.folder_url(fmt.folder_name(self.pool, datetime.now(UTC)))
        held = await self._start_locked(job, target, fence=False)
        if held is None:
            return await self._retried(job)
        holder = LockHolder(self.store, held)
        self._spawn(job, self.runs.with_heartbeat(holder, self.runs.backup(job, holder, target)))
        return job

    async def start_restore(
        self,
        uri: str,
        token: str | None,
        managed: bool,
        folder: str,
        *,
        principal: Principal | None,
        pre: bool,
        request_id: str | None = None,
    ) -> Job:
        """Raises BadParameter, Conflict."""
        target, folder = targets.open_folder(uri, folder, token=token, use_managed_identity=managed)
        self._check_dir(target)
        job = self._new_job(jobs.PRERESTORE if pre else jobs.RESTORE, request_id)
        if pre:
            self._admit(job.kind)
            await self.store.start(job)
            self._spawn(job, self.runs.pre_restore(job, target, folder))
            return job
        keep = await self._keeper_records(principal)
        held = await self._start_locked(job, target, fence=True)
        if held is None:
            return await self._retried(job)
        holder = LockHolder(self.store, held)
        work = self.runs.restore(job, holder, target, folder, keep)
        self._spawn(job, self.runs.with_heartbeat(holder, work))
        return job

    async def start_selective(
        self, name: str, uri: str, token: str | None, managed: bool, folder: str
    ) -> Job:
        """Raises BadParameter."""
        target, folder = targets.open_folder(uri, folder, token=token, use_managed_identity=managed)
        self._check_dir(target)
        job = self._new_job(jobs.SELECTIVE, None)
        self._admit(job.kind)
        await self.store.start(job)
        self._spawn(job, self.runs.run_selective(job, target, folder, name))
        return job

    async def _start_locked(
        self, job: Job, target: targets.BackupTarget, *, fence: bool
    ) -> Lock | None:
        """Take the lock for `job`; None when the running job is this one's retry (the same
        client request id). Raises Conflict."""
        try:
            await self.store.prune(time.time())
            held = await self.store.start(job, lock=True, fence=fence)
        except Conflict:
            target.close()
            running = await self.store.running_job()
            same = running is not None and (running.request_id, running.kind) == (
                job.request_id,
                job.kind,
            )
            if job.request_id and same:
                return None
            raise
        except BaseException:
            target.close()
            raise
        assert held is not None
        if fence:  # refuse calls here at once, not when the watch brings the fence back
            self.index.fence = held.dump()
        return held

    async def _retried(self, job: Job) -> Job:
        running = await self.store.running_job()
        if running is None:  # it ended in the meantime
            raise Conflict("The job this request started has ended; poll its status URL.")
        return running

    async def status(self, job_id: str, group: str) -> Job:
        """Raises NotFound."""
        job = await self.store.get(job_id) if len(job_id) <= 64 else None
        if job is None or job.status_path.split("/")[1] != group:
            raise NotFound(f"No {group} job '{job_id[:64]}' was found.", inner_code="JobNotFound")
        lost = job.kind in LIGHT_KINDS and job.status == jobs.IN_PROGRESS
        if lost and job.id not in self._running and time.time() - job.start > jobs.LIGHT_DEADLINE:
            job = job.failed(ServiceUnavailable("The partition running the job stopped."))
            with contextlib.suppress(LockLost):
                await self.store.save(job)
        return job

    def restoring(self) -> str | None:
        """The full restore running now, as this partition's watch last saw it."""
        return self.index.restoring()

    async def current_restore(self) -> str | None:
        """The full restore running now; when the watch says one runs, storage confirms it (the
        restore may have just ended), so no call is refused a moment too long."""
        if self.index.restoring() is None:
            return None
        entry = await self.view.get(jobs.FENCE)
        if entry is None:
            return None
        self.index.fence = entry.value
        return self.index.restoring()

    # --- running them --------------------------------------------------------------------

    def _admit(self, kind: str) -> None:
        """Raise ServiceUnavailable (the SDKs retry it) when too many lock-free jobs run here:
        each reads backup files into memory."""
        light = sum(1 for t in self._tasks if t.get_name().startswith("light-"))
        if kind in LIGHT_KINDS and light >= MAX_LIGHT_JOBS:
            raise ServiceUnavailable(
                "Too many backup checks and key restores are running; try again shortly.",
                inner_code="TooManyJobs",
            )

    def _spawn(self, job: Job, work: Coroutine[Any, Any, None]) -> None:
        kind = "light" if job.kind in LIGHT_KINDS else "job"
        task = asyncio.create_task(work, name=f"{kind}-{job.id}")
        self._running.add(job.id)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._running.discard(job.id)

        task.add_done_callback(done)

    async def _keeper_records(self, principal: Principal | None) -> list[tuple[str, bytes]]:
        """The records that keep the restoring principal what it is now: its own record (one of
        ours) and its role assignments at `/` with any custom roles they name. Never more: a
        principal allowed only to restore gains nothing by restoring."""
        if principal is None:
            return []
        keep: list[tuple[str, bytes]] = []
        path = principals.record_path(principal.client_id)  # None: not one of ours
        entry = await self.view.get(path) if path is not None else None
        if entry is not None:
            keep.append((entry.key, entry.value))
        me = rbac_index.principal_key(principal.object_id)
        start: str | None = None
        while True:
            page = await self.view.list_page(rbac_index.ASSIGNMENTS, start_after=start, limit=500)
            for found in page:
                assignment = rbac_index.load_assignment(found.value)
                if (
                    assignment.scope != "/"
                    or rbac_index.principal_key(assignment.principal_id) != me
                ):
                    continue
                keep.append((found.key, found.value))
                if assignment.role_id not in roles.BUILT_IN_ROLES:
                    role = await self.view.get(rbac_index.definition_path(assignment.role_id))
                    keep += [(role.key, role.value)] if role is not None else []
            if len(page) < 500:
                return keep
            start = page[-1].key

    # --- taking over a dead partition's job ---------------------------------------------

    def start(self) -> None:
        task = asyncio.create_task(self._watch(), name="job-watchdog")
        self._tasks.add(task)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self) -> None:
        pruned = self.clock()
        while True:
            await asyncio.sleep(WATCH_EVERY)
            try:
                await self.take_over_stale()
                if self.clock() - pruned > PRUNE_EVERY:
                    pruned = self.clock()
                    await self.store.prune(time.time())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking for a stalled job failed")

    async def take_over_stale(self) -> None:
        """If the pool's full job is run by another partition that has stopped renewing its
        lock (the same lock revision for STALE_AFTER seconds of this partition's clock: no
        trust in other hosts' clocks or in this one's watch), end the job: roll a restore
        forward once it began applying; otherwise fail it, pool unchanged."""
        if self.index.lock() is None:
            self._observed = None
            return
        seen = await self.store.current_lock()  # from storage: the watch may lag
        if seen is None or seen.job in self._running:
            self._observed = None
            return
        now = self.clock()
        if self._observed is None or self._observed[0] != seen.revision:
            self._observed = (seen.revision, now)  # renewed since we last looked
            return
        if now - self._observed[1] < jobs.STALE_AFTER:
            return
        self._observed = None
        try:
            held = await self.store.take_over(seen)
        except LockLost:
            return
        holder = LockHolder(self.store, held)
        job = await self.store.get(held.job) or Job(held.job, held.kind)
        gone = f"Partition {seen.partition} stopped while running the job"
        log.warning("taking over job %s of partition %s (%s)", job.id, seen.partition, seen.phase)
        if held.phase == jobs.APPLYING:
            details = f"{gone}; partition {self.partition} completed the restore."
            work = self.runs.roll_forward(job, holder, details)
            self._spawn(job, self.runs.with_heartbeat(holder, work))
        elif held.kind == jobs.RESTORE:
            await self.runs.roll_back(job, holder, ServiceUnavailable(gone + "."), UNCHANGED)
        else:
            await holder.finish(
                job.failed(ServiceUnavailable(gone + "."), "No backup was completed.")
            )
