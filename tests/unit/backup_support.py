"""Helpers of the backup unit tests: the stack's BackupService, waiting for a job, and the pool's
records as the view reads them (plaintext) or as storage holds them (sealed)."""

from __future__ import annotations

import asyncio
import time

from unit_stack import Stack

from openmhsm.backup import jobs
from openmhsm.backup.full_backup import BACKED_UP
from openmhsm.backup.jobs import Job
from openmhsm.backup.service import BackupService
from openmhsm.storage.base import Entry


def svc(stack: Stack) -> BackupService:
    assert stack.jobs is not None, "build the stack with jobs=True"
    return stack.jobs


async def finished(stack: Stack, job: Job) -> Job:
    """The job once it has ended (fails the test after ten seconds: a loaded machine is slow)."""
    group = job.status_path.split("/")[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = await svc(stack).status(job.id, group)
        if current.status != jobs.IN_PROGRESS:
            return current
        await asyncio.sleep(0.002)
    raise AssertionError(f"job {job.id} did not end")


async def plaintext(stack: Stack) -> dict[str, bytes]:
    """Every backed-up record of the pool as its view reads it."""
    out: dict[str, bytes] = {}
    for prefix in BACKED_UP:
        out.update({e.key: e.value for e in await stack.view.list_page(prefix, limit=100_000)})
    return out


async def raw(stack: Stack) -> dict[str, bytes]:
    """Everything in the pool's storage (sealed), except job records and the lock."""
    page: list[Entry] = await stack.storage.list_page("", limit=100_000)
    skip = (stack.view.prefix + jobs.LOG, stack.view.prefix + jobs.PREFIX)
    return {e.key: e.value for e in page if not e.key.startswith(skip)}


async def silent_take_over(service: BackupService) -> None:
    """Look at the pool's lock twice, STALE_AFTER seconds of the partition's clock apart, as its
    watchdog does: a lock unrenewed in between is taken over."""
    now = [1_000.0]
    service.clock = lambda: now[0]
    service._observed = None  # what it saw by the real clock does not count
    await service.take_over_stale()
    now[0] += jobs.STALE_AFTER + 1
    await service.take_over_stale()
