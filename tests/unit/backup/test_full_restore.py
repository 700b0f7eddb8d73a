"""Full restore (backup/full_restore.py): staging then applying, all or nothing. The phases are
driven directly, and through BackupService with a partition dying in each of them while another
partition (`stack.peer()`) takes the job over: before applying it rolls back, after it rolls
forward."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from backup_support import finished, plaintext, raw, silent_take_over, svc
from unit_stack import Stack

from openmhsm.backup import format as fmt
from openmhsm.backup import full_restore, jobs, service
from openmhsm.backup.dir_target import DirectoryTarget
from openmhsm.backup.full_backup import read_manifest
from openmhsm.backup.jobs import Job, JobStore, LockHolder, LockLost
from openmhsm.storage.base import TxnOp

Run = Callable[..., Any]
EC = {"kty": "EC-HSM"}


# --- helpers ---------------------------------------------------------------------------------


async def wait(stack: Stack, job_id: str) -> Job:
    return await finished(stack, Job(job_id, jobs.RESTORE))


async def staging(stack: Stack) -> list[str]:
    return [e.key for e in await stack.view.list_page(full_restore.STAGING, limit=100_000)]


async def lock_and_fence(stack: Stack) -> set[str]:
    return {e.key for e in await stack.view.list_page(jobs.PREFIX)}


async def source_with_backup(a: Stack, container: Path) -> tuple[dict[str, bytes], str, str]:
    """Fill pool `a` and back it up in several files: (its records, container URI, folder)."""
    for i in range(12):
        await a.keys.create(f"k{i:02d}", {**EC, "tags": {"i": str(i)}})
    await a.keys.rotate("k01")
    await a.keys.create("gone", EC)
    await a.deleted.delete("gone")
    await a.principals.create("app")
    expected = await plaintext(a)
    job = await svc(a).start_backup(f"file://{container}", None, False, pre=False)
    done = await finished(a, job)
    assert done.status == jobs.SUCCEEDED and done.folder_url is not None
    uri, folder = done.folder_url.rsplit("/", 1)
    return expected, uri, folder


async def target_pool(a: Stack) -> Stack:
    """A pool of `a`'s domain with records of its own, some under names the backup also has."""
    b = await a.same_domain_pool()
    for name in ("mine", "k00", "zz-last"):
        await b.keys.create(name, EC)
    await b.keys.create("trash", EC)
    await b.deleted.delete("trash")
    await b.principals.create("local")
    return b


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small backup files, and restore transactions of a few operations."""
    original = fmt.ChunkWriter
    monkeypatch.setattr(
        fmt, "ChunkWriter", lambda keys, backup_id: original(keys, backup_id, chunk_bytes=1500)
    )
    monkeypatch.setattr(full_restore, "BATCH", 3)


async def make_stale(stack: Stack) -> jobs.Lock:
    """The pool lock as the dead partition left it (unrenewed from now on)."""
    lock = await svc(stack).store.current_lock()
    assert lock is not None
    return lock


# --- the phases, driven directly -------------------------------------------------------------


def test_stage_then_apply_makes_the_pool_the_backup(hsm: Run, tmp_path: Path, small: None) -> None:
    async def body(a: Stack) -> None:
        expected, uri, folder = await source_with_backup(a, tmp_path / "c")
        b = await target_pool(a)
        store = JobStore(b.view, 0)
        job = Job(jobs.new_job_id(), jobs.RESTORE)
        held = await store.start(job, lock=True, fence=True)
        assert held is not None
        holder = LockHolder(store, held)
        target = DirectoryTarget(Path(uri.removeprefix("file://")))
        keys = fmt.BackupKeys.from_backup_key(b.secrets.backup_key())
        manifest = await read_manifest(target, folder, keys, b.secrets.domain_id)
        assert len(manifest.files) >= 3
        progress: list[int] = []

        async def note(done: int) -> None:
            progress.append(done)

        override = next(k for k in expected if k.startswith("keys/k02/"))
        extra = [("settings/kept", b"extra"), (override, b"extra wins")]
        before = await raw(b)
        await full_restore.stage(holder, target, folder, manifest, keys, extra, note)
        assert progress == sorted(progress) and progress[-1] == manifest.total
        prefix = full_restore.staging_prefix(job.id)
        assert len(await staging(b)) == len(expected) + 1
        assert all(k.startswith(prefix) for k in await staging(b))
        assert {k: v for k, v in (await raw(b)).items() if "/staging/" not in k} == before

        await full_restore.apply(b.view, holder, note)
        want = {**expected, "settings/kept": b"extra", override: b"extra wins"}
        assert await plaintext(b) == want
        lock = await store.current_lock()
        assert lock is not None and lock.phase == jobs.APPLYING

        # applying again (a partition taking over) gives the same records
        await full_restore.apply(b.view, holder, note)
        assert await plaintext(b) == want

        await full_restore.drop_staging(b.view, job.id)
        assert await staging(b) == []
        await holder.finish(job.succeeded())
        assert await lock_and_fence(b) == set()

    hsm(body, jobs=True)


def test_drop_staging_of_one_job_or_all(hsm: Run, small: None) -> None:
    async def body(b: Stack) -> None:
        from openmhsm.storage.base import Put

        await b.view.txn([Put(f"staging/j1/keys/k/{i}", b"v") for i in range(7)])
        await b.view.txn([Put(f"staging/j2/keys/k/{i}", b"v") for i in range(5)])
        await b.view.txn([Put("staging-not/x", b"v"), Put("keys/k/1", b"v")])
        await full_restore.drop_staging(b.view, "j1")
        assert {k.split("/")[1] for k in await staging(b)} == {"j2"}
        store = JobStore(b.view, 0)
        held = await store.start(Job("j3", jobs.RESTORE), lock=True, fence=True)
        assert held is not None
        stale = LockHolder(store, held)
        owner = LockHolder(store, await store.take_over(held))
        with pytest.raises(LockLost):  # a job that lost its lock deletes nothing
            await full_restore.drop_staging(b.view, "j3", stale)
        assert {k.split("/")[1] for k in await staging(b)} == {"j2"}
        await full_restore.drop_staging(b.view, "j3", owner)  # under the lock: every job's
        assert await staging(b) == []
        assert await b.view.get("staging-not/x") is not None
        assert await b.view.get("keys/k/1") is not None

    hsm(body)


# --- a partition dying during the job --------------------------------------------------------


def test_a_partition_dying_while_staging_rolls_back(
    hsm: Run, tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(a: Stack) -> None:
        _, uri, folder = await source_with_backup(a, tmp_path / "c")
        b = await target_pool(a)
        before = await raw(b)
        reached = asyncio.Event()
        original = DirectoryTarget.read

        async def read(self: DirectoryTarget, folder: str, name: str, max_bytes: int) -> bytes:
            if name == "records-00002.bin":  # the partition stops here, for good
                reached.set()
                await asyncio.Event().wait()
            return await original(self, folder, name, max_bytes)

        monkeypatch.setattr(DirectoryTarget, "read", read)
        job = await svc(b).start_restore(uri, None, False, folder, principal=None, pre=False)
        await asyncio.wait_for(reached.wait(), 5)
        assert await staging(b), "nothing was staged before the partition died"
        await svc(b).close()  # it dies: its tasks end without a word to storage

        peer = await b.peer()
        assert peer.partition != b.partition
        assert await peer.cache.catch_up()
        await svc(peer).take_over_stale()  # the heartbeat is fresh: not taken over
        assert (await wait_briefly(peer, job.id)).status == jobs.IN_PROGRESS
        assert await lock_and_fence(b) == {jobs.ACTIVE, jobs.FENCE}

        lock = await make_stale(b)
        assert lock.phase == jobs.STAGING
        assert await peer.cache.catch_up()
        await silent_take_over(svc(peer))
        done = await wait(peer, job.id)
        assert done.status == jobs.FAILED and done.error is not None
        assert done.error["code"] == "ServiceUnavailable"
        assert f"Partition {b.partition} stopped" in done.error["message"]
        assert done.details == "The pool is unchanged."
        assert await raw(b) == before  # staging dropped, nothing applied
        assert await lock_and_fence(b) == set()
        assert await peer.cache.catch_up()
        assert svc(peer).restoring() is None
        await peer.keys.create("after", EC)

    hsm(body, jobs=True)


async def wait_briefly(stack: Stack, job_id: str) -> Job:
    await asyncio.sleep(0.01)
    return await svc(stack).status(job_id, "restore")


class CrashingHolder(LockHolder):
    """A LockHolder whose partition dies before its third batch of applying (once per test)."""

    armed = False
    applied = 0
    crashed: asyncio.Event | None = None

    async def beat(self, phase: str | None = None, extra: Sequence[TxnOp] = ()) -> None:
        cls = CrashingHolder
        if cls.armed and self.held.phase == jobs.APPLYING and extra:
            if cls.applied == 2:
                cls.armed = False
                assert cls.crashed is not None
                cls.crashed.set()
                raise LockLost(self.held.job)  # nothing more reaches storage from it
            cls.applied += 1
        await super().beat(phase, extra)


def test_a_partition_dying_while_applying_rolls_forward(
    hsm: Run, tmp_path: Path, small: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "LockHolder", CrashingHolder)
    monkeypatch.setattr(CrashingHolder, "armed", True)
    monkeypatch.setattr(CrashingHolder, "applied", 0)

    async def body(a: Stack) -> None:
        expected, uri, folder = await source_with_backup(a, tmp_path / "c")
        b = await target_pool(a)
        before = await plaintext(b)
        CrashingHolder.crashed = asyncio.Event()
        job = await svc(b).start_restore(uri, None, False, folder, principal=None, pre=False)
        await asyncio.wait_for(CrashingHolder.crashed.wait(), 5)
        await asyncio.sleep(0.01)
        half = await plaintext(b)
        assert half not in (before, expected)  # a mix: only rolling forward can end it
        assert (await svc(b).status(job.id, "restore")).status == jobs.IN_PROGRESS

        peer = await b.peer()
        lock = await make_stale(b)
        assert lock.phase == jobs.APPLYING
        assert await peer.cache.catch_up()
        assert svc(peer).restoring() == job.id
        await silent_take_over(svc(peer))
        done = await wait(peer, job.id)
        assert done.status == jobs.SUCCEEDED, done.error
        assert done.details is not None
        assert f"Partition {b.partition} stopped" in done.details
        assert f"partition {peer.partition} completed" in done.details
        assert await plaintext(b) == expected
        assert await lock_and_fence(b) == set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the staging goes once the job is recorded
            if not await staging(b):
                break
            await asyncio.sleep(0.002)
        assert await staging(b) == []
        for stack in (b, peer):
            assert await stack.cache.catch_up()
            assert stack.cache.names() == a.cache.names()
            assert svc(stack).restoring() is None

    hsm(body, jobs=True)
