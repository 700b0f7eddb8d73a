"""The bodies of the jobs `BackupService` starts: each records its progress and end in the job
log and, for full jobs, renews the pool's lock while it works (DESIGN §7)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from openmhsm.backup import format as fmt
from openmhsm.backup import full_restore, selective, targets
from openmhsm.backup.full_backup import BACKED_UP, read_manifest, write_backup
from openmhsm.backup.jobs import Job, JobStore, LockHolder, LockLost
from openmhsm.domain.secrets import DomainSecrets
from openmhsm.errors import MhsmError, ServiceUnavailable, StorageConflict
from openmhsm.services.key_cache import KeyCache
from openmhsm.storage.base import Storage, StorageCompacted

log = logging.getLogger(__name__)
BEAT_EVERY = 3.0
STAGING_DEADLINE = 3600.0  # seconds a full restore may spend reading and staging the backup
UNCHANGED = "The pool is unchanged."
STAGING_DETAILS = "Checking the backup and staging its records; the pool is unchanged so far."
APPLYING_DETAILS = "Replacing the pool's records with the backup's."


def as_error(exc: BaseException) -> MhsmError:
    """What a job's status reports for an exception (never a secret: messages are ours)."""
    if isinstance(exc, MhsmError):
        return exc
    if isinstance(exc, StorageCompacted):
        return ServiceUnavailable("Storage compacted the snapshot away; start the backup again.")
    if isinstance(exc, StorageConflict):
        return ServiceUnavailable("A concurrent change interfered; start the job again.")
    return MhsmError("The job failed unexpectedly; the partition log has the details.")


class JobRuns:
    def __init__(
        self,
        view: Storage,
        cache: KeyCache,
        store: JobStore,
        secrets: Callable[[], DomainSecrets],
        pool: str,
    ) -> None:
        self.view = view
        self.cache = cache
        self.store = store
        self._secrets = secrets
        self.pool = pool

    def _keys(self) -> tuple[str, fmt.BackupKeys]:
        secrets = self._secrets()
        return secrets.domain_id, fmt.BackupKeys.from_backup_key(secrets.backup_key())

    async def _progress(self, job: Job, done: int) -> None:
        if job.phase == "backup":
            job.total = max(job.total or 0, done)  # the total was the cache's estimate
        elif job.total is not None:
            done = min(done, job.total)  # applying also counts the restorer's kept records
        job.done = done
        await self.store.save(job)

    async def pre_backup(self, job: Job, target: targets.BackupTarget) -> None:
        try:
            await target.check_writable()
            await self.store.save(job.succeeded("The storage container is writable."))
        except Exception as exc:
            await self.store.save(job.failed(as_error(exc)))
        finally:
            target.close()

    async def pre_restore(self, job: Job, target: targets.BackupTarget, folder: str) -> None:
        try:
            domain_id, keys = self._keys()
            manifest = await read_manifest(target, folder, keys, domain_id)
            job.total = manifest.total
            await self.store.save(job.succeeded(f"The backup holds {manifest.total} records."))
        except Exception as exc:
            await self.store.save(job.failed(as_error(exc)))
        finally:
            target.close()

    async def with_heartbeat(self, holder: LockHolder, work: Coroutine[Any, Any, None]) -> None:
        async def beat() -> None:
            while True:
                await asyncio.sleep(BEAT_EVERY)
                try:
                    await holder.beat()
                except LockLost:
                    raise
                except Exception as exc:  # storage briefly unavailable: the next beat may do
                    log.warning("renewing the lock of job %s failed: %s", holder.held.job, exc)

        beating = asyncio.create_task(beat())
        working = asyncio.create_task(work)
        try:
            await asyncio.wait({beating, working}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            beating.cancel()
            if not working.done():  # the lock was lost: another partition runs the job now
                working.cancel()
            for task in (beating, working):
                try:
                    await task
                except (asyncio.CancelledError, LockLost):
                    pass
                except Exception:
                    log.exception("job %s stopped", holder.held.job)

    async def backup(self, job: Job, holder: LockHolder, target: targets.BackupTarget) -> None:
        try:
            domain_id, keys = self._keys()
            folder = await self._free_folder(target, job)
            job.total = self.cache.count(BACKED_UP)
            job.phase = "backup"
            await self.store.save(job)
            manifest = await write_backup(
                self.view, target, folder, pool=self.pool, domain_id=domain_id, keys=keys,
                backup_id=uuid.uuid4().hex, on_progress=lambda n: self._progress(job, n),
            )  # fmt: skip
            job.done = job.total = manifest.total
            await holder.finish(job.succeeded(f"Backed up {manifest.total} records."))
        except LockLost:
            raise
        except Exception as exc:
            log.warning("backup job %s failed: %s", job.id, exc)
            await holder.finish(job.failed(as_error(exc), "No backup was completed."))
        finally:
            target.close()

    async def _free_folder(self, target: targets.BackupTarget, job: Job) -> str:
        """The folder the job announced, or the next second's while that one is taken (also by a
        failed backup's first file: files of two backups are never mixed)."""
        when = datetime.now(UTC)
        folder = job.folder_url.rsplit("/", 1)[1] if job.folder_url else ""
        while not folder or await self._taken(target, folder):
            folder = fmt.folder_name(self.pool, when)
            when += timedelta(seconds=1)
        job.folder_url = target.folder_url(folder)
        return folder

    @staticmethod
    async def _taken(target: targets.BackupTarget, folder: str) -> bool:
        for name in (fmt.MANIFEST, fmt.file_name(0)):
            if await target.exists(folder, name):
                return True
        return False

    async def restore(
        self,
        job: Job,
        holder: LockHolder,
        target: targets.BackupTarget,
        folder: str,
        keep: list[tuple[str, bytes]],
    ) -> None:
        try:
            await full_restore.drop_staging(self.view, job.id, holder)  # a crashed rollback's
            domain_id, keys = self._keys()
            manifest = await read_manifest(target, folder, keys, domain_id)
            job.total = manifest.total
            job.details = STAGING_DETAILS
            job.phase = "staging"
            await self.store.save(job)
            progress = lambda n: self._progress(job, n)  # noqa: E731
            async with asyncio.timeout(STAGING_DEADLINE):  # a trickling store can't hold the fence
                await full_restore.stage(holder, target, folder, manifest, keys, keep, progress)
        except LockLost:
            raise
        except TimeoutError:
            late = ServiceUnavailable(
                "Reading the backup took too long; the restore was abandoned."
            )
            await self.roll_back(job, holder, late, UNCHANGED)
            return
        except Exception as exc:
            log.warning("restore job %s failed before applying: %s", job.id, exc)
            await self.roll_back(job, holder, as_error(exc), UNCHANGED)
            return
        finally:
            target.close()
        await self.roll_forward(job, holder, f"Restored {job.total} records.")

    async def roll_back(self, job: Job, holder: LockHolder, error: MhsmError, details: str) -> None:
        await full_restore.drop_staging(self.view, job.id, holder)
        await holder.finish(job.failed(error, details))

    async def roll_forward(self, job: Job, holder: LockHolder, details: str) -> None:
        """Apply until it succeeds: once applying began, the only way out is forward."""
        job.details = APPLYING_DETAILS
        job.phase, job.done = "applying", 0
        while True:
            try:
                await full_restore.apply(self.view, holder, lambda n: self._progress(job, n))
                job.done = job.total or job.done
                await holder.finish(job.succeeded(details))
                break
            except LockLost:
                raise
            except Exception:
                log.exception("applying restore job %s failed; retrying", job.id)
                await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):
            await full_restore.drop_staging(self.view, job.id)

    async def run_selective(
        self, job: Job, target: targets.BackupTarget, folder: str, name: str
    ) -> None:
        try:
            domain_id, keys = self._keys()
            manifest = await read_manifest(target, folder, keys, domain_id)
            versions = await selective.restore_key(self.cache, target, folder, manifest, keys, name)
            job.done = job.total = versions
            await self.store.save(job.succeeded(f"Restored key '{name}' ({versions} versions)."))
        except Exception as exc:
            await self.store.save(job.failed(as_error(exc)))
        finally:
            target.close()
