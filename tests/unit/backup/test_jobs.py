"""Job records, the pool lock and the restore fence (backup/jobs.py), over the barrier view of a
unit stack: one full job at a time, heartbeats that notice a take-over, one transaction to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from unit_stack import Stack

from openmhsm.backup import jobs
from openmhsm.backup.jobs import Job, JobIndex, JobStore, Lock, LockHolder, LockLost
from openmhsm.errors import Conflict, KeyNotFound
from openmhsm.storage.base import Put

Run = Callable[..., Any]


def restore_job() -> Job:
    return Job(jobs.new_job_id(), jobs.RESTORE)


def backup_job() -> Job:
    return Job(jobs.new_job_id(), jobs.BACKUP)


async def records(stack: Stack) -> dict[str, bytes]:
    return {e.key: e.value for e in await stack.view.list_page("jobs/")}


def test_a_second_locked_job_is_refused_and_leaves_no_record(hsm: Run) -> None:
    async def body(stack: Stack) -> None:
        store = JobStore(stack.view, 0)
        first = backup_job()
        held = await store.start(first, lock=True)
        assert held is not None and held.job == first.id and held.phase == jobs.BACKUP
        for second, fence in ((backup_job(), False), (restore_job(), True)):
            with pytest.raises(Conflict) as caught:
                await store.start(second, lock=True, fence=fence)
            assert caught.value.inner_code == "OperationInProgress"
            assert first.id in caught.value.message
            assert await store.get(second.id) is None
        assert await stack.view.get(jobs.FENCE) is None
        lock = await store.current_lock()
        assert lock is not None and lock.job == first.id

    hsm(body)


def test_unlocked_jobs_run_beside_a_locked_one(hsm: Run) -> None:
    async def body(stack: Stack) -> None:
        store = JobStore(stack.view, 0)
        await store.start(restore_job(), lock=True, fence=True)
        selective = Job(jobs.new_job_id(), jobs.SELECTIVE)
        assert await store.start(selective) is None
        assert await store.get(selective.id) == selective

    hsm(body)


def test_a_backup_cannot_start_while_a_fence_stands(hsm: Run) -> None:
    async def body(stack: Stack) -> None:
        store = JobStore(stack.view, 0)
        leftover = Lock("r1", jobs.RESTORE, 0, jobs.APPLYING, time.time())
        await stack.view.put_if(jobs.FENCE, leftover.dump())
        job = backup_job()
        with pytest.raises(Conflict) as caught:
            await store.start(job, lock=True)
        assert caught.value.inner_code == "OperationInProgress"
        assert await store.get(job.id) is None
        assert await store.current_lock() is None

    hsm(body)


def test_a_restore_holds_lock_and_fence_and_finish_releases_both(hsm: Run) -> None:
    async def body(stack: Stack) -> None:
        store = JobStore(stack.view, 0)
        job = restore_job()
        held = await store.start(job, lock=True, fence=True)
        assert held is not None and held.phase == jobs.STAGING
        assert held.fence_revision == held.revision == await store.fence_revision()
        assert set(await records(stack)) == {jobs.ACTIVE, jobs.FENCE}
        holder = LockHolder(store, held)
        await holder.beat(phase=jobs.APPLYING, extra=[Put("settings/x", b"1")])
        assert (await stack.view.get("settings/x")) is not None
        lock = await store.current_lock()
        assert lock is not None and lock.phase == jobs.APPLYING
        assert holder.held.fence_revision == await store.fence_revision() == lock.revision
        await holder.finish(job.succeeded("done"))
        assert await records(stack) == {}
        saved = await store.get(job.id)
        assert saved is not None and saved.status == jobs.SUCCEEDED and saved.details == "done"
        assert saved.end is not None
        # with both released, the next full job may start
        assert await store.start(backup_job(), lock=True) is not None

    hsm(body)


def test_beat_and_finish_after_a_take_over_raise_lock_lost(hsm: Run) -> None:
    async def body(stack: Stack) -> None:
        mine, theirs = JobStore(stack.view, 0), JobStore(stack.view, 1)
        job = restore_job()
        held = await mine.start(job, lock=True, fence=True)
        assert held is not None
        seen = await theirs.current_lock()
        assert seen is not None
        taken = await theirs.take_over(seen)
        assert taken.partition == 1 and taken.job == job.id and taken.fence_revision
        with pytest.raises(LockLost):
            await mine.beat(held)
        with pytest.raises(LockLost):
            await LockHolder(mine, held).beat(extra=[Put("keys/x/1", b"v")])
        assert await stack.view.get("keys/x/1") is None  # the batch did not commit
        with pytest.raises(LockLost):
            await mine.finish(job.failed(KeyNotFound("x")), held)
        saved = await theirs.get(job.id)
        assert saved is not None and saved.status == jobs.IN_PROGRESS
        assert set(await records(stack)) == {jobs.ACTIVE, jobs.FENCE}
        # the new owner still finishes
        await theirs.finish(job.succeeded(), taken)
        assert await records(stack) == {}

    hsm(body)


def test_take_over_of_a_lock_that_moved_on_is_lost(hsm: Run) -> None:
    async def body(stack: Stack) -> None:
        store = JobStore(stack.view, 1)
        first = backup_job()
        held = await store.start(first, lock=True)
        assert held is not None
        seen = await store.current_lock()
        assert seen is not None
        await store.finish(first.succeeded(), held)
        with pytest.raises(LockLost):  # no lock any more
            await store.take_over(seen)
        assert await store.start(backup_job(), lock=True) is not None
        with pytest.raises(LockLost):  # another job's lock
            await store.take_over(seen)

    hsm(body)


def test_two_partitions_taking_over_at_once_one_wins(hsm: Run) -> None:
    async def body(stack: Stack) -> None:
        a, b = JobStore(stack.view, 1), JobStore(stack.view, 2)
        await JobStore(stack.view, 0).start(backup_job(), lock=True)
        seen = await a.current_lock()
        assert seen is not None
        won = await a.take_over(seen)
        with pytest.raises(LockLost):
            await b.beat(seen)  # b compares on the revision it saw: a's take-over moved it
        assert won.partition == 1

    hsm(body)


def test_lock_round_trip() -> None:
    lock = Lock("j", jobs.BACKUP, 0, jobs.BACKUP, beat=1000.0)
    assert Lock.load(lock.dump(), 7) == Lock("j", jobs.BACKUP, 0, jobs.BACKUP, 1000.0, 7)


def test_job_index_reports_the_running_restore() -> None:
    index = JobIndex()
    assert index.restoring() is None and index.lock() is None
    lock = Lock("r1", jobs.RESTORE, 2, jobs.STAGING, 5.0)
    index.apply("put", jobs.ACTIVE, lock.dump(), None)
    assert index.restoring() is None  # a lock alone is a backup's, or not a restore yet
    assert index.lock() == lock
    index.apply("put", jobs.FENCE, lock.dump(), None)
    assert index.restoring() == "r1"
    index.apply("put", jobs.FENCE, b"{}", None)
    assert index.restoring() == "unknown"
    index.apply("delete", jobs.FENCE, None, None)
    assert index.restoring() is None
    index.reset()
    assert index.lock() is None


def test_job_index_follows_storage_through_the_key_cache(hsm: Run) -> None:
    async def body(stack: Stack) -> None:
        index = JobIndex()
        store = JobStore(stack.view, 0)
        job = restore_job()
        held = await store.start(job, lock=True, fence=True)
        stack.cache.attach(jobs.PREFIX, index)  # replays what the cache loaded (nothing yet)
        assert await stack.cache.catch_up()
        assert index.restoring() == job.id
        assert index.lock() is not None and index.lock().job == job.id  # type: ignore[union-attr]
        await store.finish(job.succeeded(), held)
        assert await stack.cache.catch_up()
        assert index.restoring() is None and index.lock() is None
        later = JobIndex()
        await store.start(restore_job(), lock=True, fence=True)
        assert await stack.cache.catch_up()
        stack.cache.attach(jobs.PREFIX, later)  # attached late: the replay shows the fence
        assert later.restoring() is not None

    hsm(body)


def test_job_wire_shapes() -> None:
    backup = Job("b1", jobs.BACKUP, start=10, folder_url="file:///x/c/mhsm-p-1")
    assert backup.status_path == "/backup/b1/pending"
    wire = backup.wire()
    assert wire["status"] == "InProgress" and wire["jobId"] == "b1"
    assert wire["azureStorageBlobContainerUri"] == "file:///x/c/mhsm-p-1"
    assert wire["endTime"] is None and wire["error"] is None
    for kind in (jobs.RESTORE, jobs.PRERESTORE, jobs.SELECTIVE):
        job = Job("r1", kind)
        assert job.status_path == "/restore/r1/pending"
        assert "azureStorageBlobContainerUri" not in job.wire()
    assert Job("p1", jobs.PREBACKUP).status_path == "/backup/p1/pending"
    failed = Job("r2", jobs.RESTORE).failed(KeyNotFound("gone", inner_code="X"), "why")
    assert failed.wire()["error"] == {
        "code": "KeyNotFound",
        "message": "gone",
        "innererror": {"code": "X"},
    }
    assert failed.status == jobs.FAILED and failed.details == "why" and failed.end is not None
    assert Job.load(failed.dump()) == failed
