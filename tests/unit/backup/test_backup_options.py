"""What a backup announces and how far directory targets may reach: the folder named at start,
progress by phase, `backup_dirs` (mhsm up --backup-dir), and a retried start finding its job."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from backup_support import finished, svc
from unit_stack import Stack

from openmhsm.backup import jobs, runs
from openmhsm.backup.dir_target import DirectoryTarget
from openmhsm.backup.jobs import Job
from openmhsm.errors import Conflict, Forbidden


def test_the_backup_folder_is_named_when_the_job_starts(hsm: Any, tmp_path: Path) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("k", {"kty": "EC-HSM"})
        started = await svc(stack).start_backup(f"file://{tmp_path}/c", None, False, pre=False)
        assert started.folder_url and started.folder_url.startswith(f"file://{tmp_path}/c/mhsm-")
        assert started.wire()["azureStorageBlobContainerUri"] == started.folder_url
        done = await finished(stack, started)
        assert done.status == jobs.SUCCEEDED, done.error
        assert (tmp_path / "c" / done.folder_url.rsplit("/", 1)[1] / "manifest.json").is_file()
        assert done.wire()["progress"]["phase"] == "backup"

    hsm(body, jobs=True)


def test_a_folder_holding_a_failed_backups_files_is_never_reused(hsm: Any, tmp_path: Path) -> None:
    async def body(stack: Stack) -> None:
        first = await svc(stack).start_backup(f"file://{tmp_path}/c", None, False, pre=False)
        announced = first.folder_url
        assert announced is not None
        leftover = tmp_path / "c" / announced.rsplit("/", 1)[1]
        leftover.mkdir(parents=True)
        (leftover / "records-00000.bin").write_bytes(b"an earlier, failed backup")
        done = await finished(stack, first)
        assert done.status == jobs.SUCCEEDED, done.error
        assert done.folder_url != announced
        assert (leftover / "records-00000.bin").read_bytes() == b"an earlier, failed backup"

    hsm(body, jobs=True)


def test_restore_progress_names_its_phase(hsm: Any, tmp_path: Path) -> None:
    async def body(stack: Stack) -> None:
        for n in range(5):
            await stack.keys.create(f"k{n}", {"kty": "EC-HSM"})
        jobs_ = svc(stack)
        backup = await finished(
            stack, await jobs_.start_backup(f"file://{tmp_path}/c", None, False, pre=False)
        )
        assert backup.folder_url is not None
        container, folder = backup.folder_url.rsplit("/", 1)
        seen: list[tuple[str | None, int, int | None]] = []
        save = jobs_.store.save

        async def watching(job: Job) -> None:
            seen.append((job.phase, job.done, job.total))
            await save(job)

        jobs_.store.save = watching  # type: ignore[method-assign]
        restored = await jobs_.start_restore(
            container, None, False, folder, principal=None, pre=False
        )
        done = await finished(stack, restored)
        assert done.status == jobs.SUCCEEDED, done.error
        phases = [phase for phase, _, _ in seen if phase]
        assert phases[0] == "staging" and phases[-1] == "applying"
        assert phases == sorted(phases, key=("staging", "applying").index)
        assert all(total is None or done_ <= total for _, done_, total in seen)

    hsm(body, jobs=True)


def test_directory_targets_stay_under_the_backup_dirs(hsm: Any, tmp_path: Path) -> None:
    allowed = tmp_path / "backups"
    allowed.mkdir()

    async def body(stack: Stack) -> None:
        jobs_ = svc(stack)
        jobs_.backup_dirs = (str(allowed),)
        with pytest.raises(Forbidden) as refused:
            await jobs_.start_backup(f"file://{tmp_path}/elsewhere", None, False, pre=False)
        assert refused.value.inner_code == "BackupDirectoryNotAllowed"
        with pytest.raises(Forbidden):
            await jobs_.start_restore(
                f"file://{tmp_path}/elsewhere", None, False, "mhsm-x-1", principal=None,
                pre=False,
            )  # fmt: skip
        assert await jobs_.store.current_lock() is None
        done = await finished(
            stack, await jobs_.start_backup(f"file://{allowed}/c", None, False, pre=False)
        )
        assert done.status == jobs.SUCCEEDED, done.error

    hsm(body, jobs=True)
    assert not (tmp_path / "elsewhere").exists()


def test_a_retried_start_finds_its_running_job(hsm: Any, tmp_path: Path) -> None:
    async def body(stack: Stack) -> None:
        jobs_ = svc(stack)
        uri = f"file://{tmp_path}/c"
        gate = asyncio.Event()
        real = jobs_.runs.backup

        async def held(*args: Any) -> None:
            await gate.wait()
            await real(*args)

        jobs_.runs.backup = held  # type: ignore[method-assign]
        first = await jobs_.start_backup(uri, None, False, pre=False, request_id="r-1")
        again = await jobs_.start_backup(uri, None, False, pre=False, request_id="r-1")
        assert again.id == first.id
        with pytest.raises(Conflict):
            await jobs_.start_backup(uri, None, False, pre=False, request_id="r-2")
        with pytest.raises(Conflict):
            await jobs_.start_backup(uri, None, False, pre=False)
        gate.set()
        assert (await finished(stack, first)).status == jobs.SUCCEEDED

    hsm(body, jobs=True)


def test_a_job_ended_elsewhere_is_not_written_back_to_in_progress(hsm: Any) -> None:
    async def body(stack: Stack) -> None:
        store = svc(stack).store
        job = Job(jobs.new_job_id(), jobs.BACKUP)
        held = await store.start(job, lock=True)
        assert held is not None
        taken = await store.take_over(held)
        await store.finish(job.failed(Conflict("taken over")), taken)
        job.done = 5  # the old owner, still running, reports progress
        with pytest.raises(jobs.LockLost):
            await store.save(job)
        ended = await store.get(job.id)
        assert ended is not None and ended.status == jobs.FAILED

    hsm(body, jobs=True)


def test_selective_restore_sees_a_version_made_meanwhile(hsm: Any, tmp_path: Path) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("k", {"kty": "EC-HSM"})
        backed_up = sorted(stack.cache.iter_versions("k"))
        done = await finished(
            stack, await svc(stack).start_backup(f"file://{tmp_path}/c", None, False, pre=False)
        )
        assert done.folder_url is not None
        container, folder = done.folder_url.rsplit("/", 1)
        peer = await stack.peer()
        real = stack.cache.read_through
        rotated: list[str] = []

        async def read_then_race(name: str) -> None:
            await real(name)
            if not rotated:  # another partition rotates the key between read and write
                rotated.append((await peer.keys.rotate("k")).version)

        stack.cache.read_through = read_then_race  # type: ignore[method-assign]
        job = await svc(stack).start_selective("k", container, None, False, folder)
        assert (await finished(stack, job)).status == jobs.SUCCEEDED
        assert rotated
        assert await stack.cache.catch_up()
        assert sorted(stack.cache.iter_versions("k")) == backed_up

    hsm(body, jobs=True)


def test_a_restore_whose_backup_cannot_be_read_in_time_is_abandoned(
    hsm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(stack: Stack) -> None:
        await stack.keys.create("k", {"kty": "EC-HSM"})
        done = await finished(
            stack, await svc(stack).start_backup(f"file://{tmp_path}/c", None, False, pre=False)
        )
        assert done.folder_url is not None
        container, folder = done.folder_url.rsplit("/", 1)
        await stack.keys.create("after", {"kty": "EC-HSM"})
        original = DirectoryTarget.read

        async def trickle(self: DirectoryTarget, folder: str, name: str, limit: int) -> bytes:
            if name.startswith("records-"):
                await asyncio.sleep(3600)
            return await original(self, folder, name, limit)

        monkeypatch.setattr(DirectoryTarget, "read", trickle)
        monkeypatch.setattr(runs, "STAGING_DEADLINE", 0.05)
        job = await svc(stack).start_restore(
            container, None, False, folder, principal=None, pre=False
        )
        ended = await finished(stack, job)
        assert ended.status == jobs.FAILED and ended.details == "The pool is unchanged."
        assert await svc(stack).current_restore() is None
        assert stack.cache.names() == ["after", "k"]

    hsm(body, jobs=True)
