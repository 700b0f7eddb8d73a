"""BackupService (backup/service.py) end to end over memory storage and a directory target: full
backup and restore between pools, the domain check, tampering, a backup taken while writes go
on, selective key restore, the restore fence, and the job lock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from backup_support import finished as wait
from backup_support import plaintext, raw, silent_take_over, svc
from unit_stack import Stack

from openmhsm.auth import roles
from openmhsm.backup import format as fmt
from openmhsm.backup import full_backup, full_restore, jobs
from openmhsm.backup.full_backup import BACKED_UP
from openmhsm.backup.jobs import Job
from openmhsm.errors import Conflict, NotFound
from openmhsm.services import principals, rbac, rbac_index, records
from openmhsm.storage.base import Entry
from openmhsm.types import Principal

Run = Callable[..., Any]
EC = {"kty": "EC-HSM"}
FULL = {"jobs": True, "admin": True, "rbac": True}
POLICY = {"lifetimeActions": [], "attributes": {"expiryTime": "P90D"}}


# --- helpers ---------------------------------------------------------------------------------


async def populate(stack: Stack) -> Principal:
    """Keys with several versions, tags and a policy, a deleted key, a setting, principals and
    role assignments: a record under each backed-up prefix. Returns an application principal."""
    for i in range(6):
        await stack.keys.create(f"k{i}", {**EC, "tags": {"n": str(i)}})
    await stack.keys.rotate("k1")
    await stack.keys.update("k2", None, {"tags": {"changed": "yes"}})
    await stack.keys.set_rotation_policy("k3", POLICY)
    await stack.keys.create("gone", EC)
    await stack.deleted.delete("gone")
    assert stack.ctx.settings is not None
    await stack.ctx.settings.update("AllowKeyManagementOperationsThroughARM", "true")
    app, _ = await stack.principals.create("app")
    assert stack.rbac is not None
    await stack.rbac.ensure_assignment(app.object_id, roles.CRYPTO_USER, "/keys")
    state = await plaintext(stack)
    assert {k.split("/")[0] + "/" for k in state} == set(BACKED_UP)
    return app


async def backup(stack: Stack, container: Path) -> tuple[str, str]:
    """A full backup of `stack` into `container`; returns (container URI, folder)."""
    job = await svc(stack).start_backup(f"file://{container}", None, False, pre=False)
    done = await wait(stack, job)
    assert done.status == jobs.SUCCEEDED, done.error
    assert done.folder_url is not None and done.folder_url.startswith(f"file://{container}/")
    uri, folder = done.folder_url.rsplit("/", 1)
    assert folder.startswith("mhsm-unit-")
    return uri, folder


async def restore(stack: Stack, uri: str, folder: str, principal: Principal | None = None) -> Job:
    job = await svc(stack).start_restore(uri, None, False, folder, principal=principal, pre=False)
    done = await wait(stack, job)
    await stack.cache.catch_up()
    return done


async def selective(stack: Stack, name: str, uri: str, folder: str) -> Job:
    job = await svc(stack).start_selective(name, uri, None, False, folder)
    return await wait(stack, job)


async def lock_and_fence(stack: Stack) -> dict[str, bytes]:
    return {e.key: e.value for e in await stack.view.list_page(jobs.PREFIX)}


def manifest_of(container: Path, folder: str) -> dict[str, Any]:
    return fmt.peek_manifest((container / folder / fmt.MANIFEST).read_bytes())


# --- full backup and restore -----------------------------------------------------------------


def test_restore_into_a_pool_of_the_same_domain(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        expected = await plaintext(a)
        uri, folder = await backup(a, tmp_path / "c")
        manifest = manifest_of(tmp_path / "c", folder)
        assert sum(manifest["counts"].values()) == len(expected)
        assert all(b"keys/" not in p.read_bytes() for p in (tmp_path / "c" / folder).iterdir()
                   if p.name != fmt.MANIFEST)  # fmt: skip

        b = await a.same_domain_pool()
        operator, _ = await b.principals.create("operator")
        b_rbac = rbac.RbacService(b.cache)  # an Administrator at "/" (kept) and on a key (not)
        await b_rbac.ensure_assignment(operator.object_id, roles.ADMINISTRATOR)
        await b_rbac.ensure_assignment(operator.object_id, roles.CRYPTO_USER, "/keys/extra")
        await b.keys.create("extra", EC)
        await b.keys.create("k0", EC)  # a name both have: the backup's versions win
        await b.keys.create("trash", EC)
        await b.deleted.delete("trash")
        done = await restore(b, uri, folder, operator)
        assert done.status == jobs.SUCCEEDED, done.error
        assert (done.done, done.total) == (len(expected), len(expected))

        restored = await plaintext(b)
        kept = {k: v for k, v in restored.items() if k not in expected}
        assert {k: v for k, v in restored.items() if k in expected} == expected
        # the operator keeps its principal record and its Administrator role at "/", nothing else
        record = principals.record_path(operator.client_id)
        assert record is not None and set(kept) == {record, *_assignments_of(kept, operator)}
        (assignment,) = [
            rbac_index.load_assignment(kept[p]) for p in _assignments_of(kept, operator)
        ]
        assert (assignment.principal_id, assignment.role_id, assignment.scope) == (
            operator.object_id, roles.ADMINISTRATOR, "/",
        )  # fmt: skip
        # the pool serves what it restored, and nothing of what it had
        assert b.cache.names() == a.cache.names()
        assert b.cache.deleted_names() == ["gone"]
        restored_k1, original_k1 = await b.keys.get("k1"), await a.keys.get("k1")
        assert (restored_k1.version, restored_k1.tags) == (original_k1.version, original_k1.tags)
        assert await lock_and_fence(b) == {}
        assert await b.view.list_page(full_restore.STAGING) == []
        assert svc(b).restoring() is None
        await b.keys.create("after", EC)  # writes work again

    hsm(body, **FULL)


def test_a_restorer_gains_no_role_by_restoring(hsm: Run, tmp_path: Path) -> None:
    """A principal allowed only to restore keeps what it holds at "/" (Managed HSM Restore),
    not Managed HSM Administrator."""

    async def body(a: Stack) -> None:
        await populate(a)
        uri, folder = await backup(a, tmp_path / "c")
        b = await a.same_domain_pool()
        restorer, _ = await b.principals.create("restorer")
        b_rbac = rbac.RbacService(b.cache)
        await b_rbac.ensure_assignment(restorer.object_id, roles.RESTORE)
        done = await restore(b, uri, folder, restorer)
        assert done.status == jobs.SUCCEEDED, done.error
        await b.cache.catch_up()
        held = {a.role_id for a in b_rbac.list_assignments("/", rbac.parse_filter(None))
                if a.principal_id == restorer.object_id}  # fmt: skip
        assert held == {roles.RESTORE}

    hsm(body, **FULL)


def _assignments_of(state: dict[str, bytes], who: Principal) -> list[str]:
    return [
        path
        for path, value in state.items()
        if path.startswith(rbac_index.ASSIGNMENTS)
        and rbac_index.load_assignment(value).principal_id == who.object_id
    ]


def test_restore_without_a_principal_restores_exactly_the_backup(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        expected = await plaintext(a)
        uri, folder = await backup(a, tmp_path / "c")
        b = await a.same_domain_pool()
        await b.principals.create("someone")
        done = await restore(b, uri, folder)
        assert done.status == jobs.SUCCEEDED
        assert await plaintext(b) == expected

    hsm(body, **FULL)


def test_restore_into_another_domain_fails_and_changes_nothing(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        uri, folder = await backup(a, tmp_path / "c")
        c = await a.other_domain()
        await c.keys.create("mine", EC)
        before = await raw(c)
        done = await restore(c, uri, folder, Principal("x", "y", "z", "service"))
        assert done.status == jobs.FAILED
        assert done.error is not None
        assert done.error["code"] == "BadParameter"
        assert done.error["innererror"] == {"code": "SecurityDomainMismatch"}
        assert done.details == "The pool is unchanged."
        assert await raw(c) == before
        assert await lock_and_fence(c) == {}

    hsm(body, **FULL)


def test_a_tampered_backup_fails_and_changes_nothing(
    hsm: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = _small_chunks(monkeypatch)
    monkeypatch.setattr(full_restore, "BATCH", 4)  # earlier files are staged before the bad one

    async def body(a: Stack) -> None:
        await populate(a)
        uri, folder = await backup(a, tmp_path / "c")
        files = sorted((tmp_path / "c" / folder).glob("records-*.bin"))
        assert len(files) >= 3 and small
        last = files[-1]
        data = last.read_bytes()
        last.write_bytes(data[:20] + bytes([data[20] ^ 0x10]) + data[21:])
        b = await a.same_domain_pool()
        await b.keys.create("mine", EC)
        before = await raw(b)
        done = await restore(b, uri, folder)
        assert done.status == jobs.FAILED
        assert done.error is not None and done.error["code"] == "BadParameter"
        assert last.name in done.error["message"]
        assert await raw(b) == before  # staging dropped, nothing applied
        assert await lock_and_fence(b) == {}

    hsm(body, **FULL)


def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make full backups write many small files; returns a list that grows per file."""
    original = fmt.ChunkWriter
    written: list[int] = []

    def small(keys: fmt.BackupKeys, backup_id: str) -> fmt.ChunkWriter:
        written.append(1)
        return original(keys, backup_id, chunk_bytes=2000)

    monkeypatch.setattr(fmt, "ChunkWriter", small)
    return written


def test_a_missing_folder_fails_the_restore(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        before = await raw(a)
        done = await restore(a, f"file://{tmp_path}/c", "mhsm-unit-20240101000000")
        assert done.status == jobs.FAILED and done.error is not None
        assert done.error["code"] == "StorageAccessFailed"
        assert await raw(a) == before

    hsm(body, **FULL)


def test_a_backup_taken_during_writes_holds_the_state_at_its_revision(
    hsm: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(full_backup, "PAGE", 2)

    async def body(a: Stack) -> None:
        await populate(a)
        expected = await plaintext(a)
        start_revision = await a.storage.revision()
        original = a.view.snapshot_page
        pages = 0

        async def writes_between_pages(*args: Any, **kwargs: Any) -> list[Entry]:
            nonlocal pages
            pages += 1
            if pages > 1:  # after the backup fixed its revision
                await a.keys.create(f"during{pages}", EC)
                if pages == 3:
                    await a.keys.rotate("k0")
                    await a.deleted.delete("k4")
                    await a.deleted.purge("gone")
                    await a.principals.create(f"p{pages}")
            return await original(*args, **kwargs)

        monkeypatch.setattr(a.view, "snapshot_page", writes_between_pages)
        uri, folder = await backup(a, tmp_path / "c")
        monkeypatch.setattr(a.view, "snapshot_page", original)
        assert pages > 5
        revision = manifest_of(tmp_path / "c", folder)["revision"]
        assert start_revision <= revision < await a.storage.revision()
        assert await plaintext(a) != expected

        b = await a.same_domain_pool()
        done = await restore(b, uri, folder)
        assert done.status == jobs.SUCCEEDED
        assert await plaintext(b) == expected

    hsm(body, **FULL)


def test_status_of_unknown_jobs_and_wrong_groups(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        job = await svc(a).start_backup(f"file://{tmp_path}/c", None, False, pre=False)
        for job_id, group in (("nope", "backup"), (job.id, "restore"), ("x" * 65, "backup")):
            with pytest.raises(NotFound) as caught:
                await svc(a).status(job_id, group)
            assert caught.value.inner_code == "JobNotFound"
        assert (await wait(a, job)).status == jobs.SUCCEEDED
        peer = await a.peer()
        assert (await svc(peer).status(job.id, "backup")).status == jobs.SUCCEEDED

    hsm(body, **FULL)


def test_one_full_job_at_a_time(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        uri, folder = await backup(a, tmp_path / "c")
        gate = asyncio.Event()
        original = full_backup.write_backup

        async def held(*args: Any, **kwargs: Any) -> fmt.Manifest:
            await gate.wait()
            return await original(*args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("openmhsm.backup.runs.write_backup", held)
            first = await svc(a).start_backup(f"file://{tmp_path}/c", None, False, pre=False)
            peer = await a.peer()
            for start in (
                svc(a).start_backup(f"file://{tmp_path}/c", None, False, pre=False),
                svc(peer).start_backup(f"file://{tmp_path}/c", None, False, pre=False),
                svc(a).start_restore(uri, None, False, folder, principal=None, pre=False),
            ):
                with pytest.raises(Conflict) as caught:
                    await start
                assert caught.value.inner_code == "OperationInProgress"
            # the pre-checks and selective restores take no lock
            pre = await svc(a).start_backup(f"file://{tmp_path}/c", None, False, pre=True)
            assert (await wait(a, pre)).status == jobs.SUCCEEDED
            gate.set()
            assert (await wait(a, first)).status == jobs.SUCCEEDED
        assert await lock_and_fence(a) == {}

    hsm(body, **FULL)


def test_a_stalled_backup_is_failed_by_another_partition(
    hsm: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached = asyncio.Event()

    async def stuck(*args: Any, **kwargs: Any) -> fmt.Manifest:
        reached.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    monkeypatch.setattr("openmhsm.backup.runs.write_backup", stuck)

    async def body(a: Stack) -> None:
        job = await svc(a).start_backup(f"file://{tmp_path}/c", None, False, pre=False)
        await asyncio.wait_for(reached.wait(), 5)
        assert await a.cache.catch_up()
        await silent_take_over(svc(a))  # its own job, still running here: left alone
        assert (await svc(a).status(job.id, "backup")).status == jobs.IN_PROGRESS
        await svc(a).close()  # the partition dies

        peer = await a.peer()
        assert await peer.cache.catch_up()
        await silent_take_over(svc(peer))
        done = await svc(peer).status(job.id, "backup")
        assert done.status == jobs.FAILED and done.error is not None
        assert done.error["code"] == "ServiceUnavailable"
        assert done.details == "No backup was completed."
        assert await lock_and_fence(a) == {}
        assert await svc(peer).store.start(Job(jobs.new_job_id(), jobs.BACKUP), lock=True)

    hsm(body, **FULL)


def test_pre_restore_checks_the_backup_without_changing_anything(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        uri, folder = await backup(a, tmp_path / "c")
        before = await raw(a)
        job = await svc(a).start_restore(uri, None, False, folder, principal=None, pre=True)
        assert job.kind == jobs.PRERESTORE
        done = await wait(a, job)
        assert done.status == jobs.SUCCEEDED and done.total == len(await plaintext(a))
        other = await a.other_domain()
        job = await svc(other).start_restore(uri, None, False, folder, principal=None, pre=True)
        failed = await wait(other, job)
        assert failed.error is not None
        assert failed.error["innererror"] == {"code": "SecurityDomainMismatch"}
        assert await raw(a) == before

    hsm(body, **FULL)


def test_a_second_backup_in_the_same_second_gets_its_own_folder(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        folders = {(await backup(a, tmp_path / "c"))[1] for _ in range(3)}
        assert len(folders) == 3

    hsm(body, **FULL)


# --- selective key restore -------------------------------------------------------------------


async def key_records(stack: Stack, name: str) -> dict[str, bytes]:
    page = await stack.view.list_page(records.key_prefix(name))
    return {e.key: e.value for e in page}


def test_selective_restore_of_a_purged_key(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        saved = await key_records(a, "k1")
        uri, folder = await backup(a, tmp_path / "c")
        await a.deleted.delete("k1")
        await a.deleted.purge("k1")
        done = await selective(a, "k1", uri, folder)
        assert done.status == jobs.SUCCEEDED, done.error
        assert done.done == done.total == 2  # two versions
        assert await key_records(a, "k1") == saved
        assert (await a.keys.get("k1")).version in {p.rsplit("/", 1)[1] for p in saved}

    hsm(body, **FULL)


def test_selective_restore_rolls_a_changed_key_back(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        saved = await key_records(a, "k3")
        others = await plaintext(a)
        uri, folder = await backup(a, tmp_path / "c")
        await a.keys.rotate("k3")
        await a.keys.update("k3", None, {"tags": {"new": "1"}})
        await a.keys.create("k30", EC)  # a name that starts like k3's: untouched
        assert await key_records(a, "k3") != saved
        done = await selective(a, "K3", uri, folder)
        assert done.status == jobs.SUCCEEDED, done.error
        assert await key_records(a, "k3") == saved
        now = await plaintext(a)
        assert {k: v for k, v in now.items() if not k.startswith("keys/k30/")} == others
        assert (await a.keys.get("k3")).tags == {"n": "3"}

    hsm(body, **FULL)


def test_selective_restore_of_a_soft_deleted_key_is_refused(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        uri, folder = await backup(a, tmp_path / "c")
        await a.deleted.delete("k2")
        before = await raw(a)
        done = await selective(a, "k2", uri, folder)
        assert done.status == jobs.FAILED and done.error is not None
        assert done.error["code"] == "Conflict"
        assert done.error["innererror"] == {"code": "KeyDeleted"}
        assert await raw(a) == before

    hsm(body, **FULL)


@pytest.mark.parametrize("name", ["never", "k", "k1x"])
def test_selective_restore_of_a_key_the_backup_lacks(hsm: Run, tmp_path: Path, name: str) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        uri, folder = await backup(a, tmp_path / "c")
        before = await raw(a)
        done = await selective(a, name, uri, folder)
        assert done.status == jobs.FAILED and done.error is not None
        assert done.error["code"] == "KeyNotFound"
        assert await raw(a) == before

    hsm(body, **FULL)


def test_selective_restore_from_another_domain_is_refused(hsm: Run, tmp_path: Path) -> None:
    async def body(a: Stack) -> None:
        await populate(a)
        uri, folder = await backup(a, tmp_path / "c")
        c = await a.other_domain()
        done = await selective(c, "k1", uri, folder)
        assert done.error is not None
        assert done.error["innererror"] == {"code": "SecurityDomainMismatch"}
        assert c.cache.names() == []

    hsm(body, **FULL)


# --- the fence -------------------------------------------------------------------------------


class Restoring:
    """Pool `b` (and a peer partition of it) while a full restore of `a`'s backup is held in
    staging, with the fence up, until `release()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = asyncio.Event()
        self.staged = asyncio.Event()
        original = full_restore.stage

        async def held(*args: Any, **kwargs: Any) -> None:
            self.staged.set()
            await self.gate.wait()
            await original(*args, **kwargs)

        monkeypatch.setattr(full_restore, "stage", held)

    async def start(self, a: Stack, b: Stack, container: Path) -> Job:
        await populate(a)
        uri, folder = await backup(a, container)
        self.peer = await b.peer()
        job = await svc(b).start_restore(uri, None, False, folder, principal=None, pre=False)
        await asyncio.wait_for(self.staged.wait(), 5)
        for stack in (b, self.peer):
            assert await stack.cache.catch_up()
            assert svc(stack).restoring() == job.id
        return job

    async def finish(self, b: Stack, job: Job) -> None:
        assert (await svc(self.peer).status(job.id, "restore")).status == jobs.IN_PROGRESS
        self.gate.set()
        assert (await wait(b, job)).status == jobs.SUCCEEDED
        for stack in (b, self.peer):
            assert await stack.cache.catch_up()
            assert svc(stack).restoring() is None


async def outcomes(writes: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, str]:
    """What each write came to: the name of the error it raised, or "committed"."""
    out: dict[str, str] = {}
    for what, write in writes.items():
        try:
            await write()
        except Exception as exc:
            out[what] = type(exc).__name__
        else:
            out[what] = "committed"
    return out


def test_writes_during_a_full_restore_are_refused(
    hsm: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restoring = Restoring(monkeypatch)

    async def body(a: Stack) -> None:
        b = await a.same_domain_pool()
        await b.keys.create("mine", EC)
        await b.keys.create("deleted", EC)
        await b.deleted.delete("deleted")
        app, _ = await b.principals.create("app")
        job = await restoring.start(a, b, tmp_path / "c")
        peer, settings = restoring.peer, b.ctx.settings
        assert settings is not None
        before = await raw(b)
        writes: dict[str, Callable[[], Awaitable[Any]]] = {
            "create": lambda: b.keys.create("new", EC),
            "rotate": lambda: b.keys.rotate("mine"),
            "update on a peer": lambda: peer.keys.update("mine", None, {"tags": {"t": "1"}}),
            "policy": lambda: b.keys.set_rotation_policy("mine", POLICY),
            "delete": lambda: b.deleted.delete("mine"),
            "recover": lambda: b.deleted.recover("deleted"),
            "setting": lambda: settings.update("AllowKeyManagementOperationsThroughARM", "true"),
            "principal": lambda: b.principals.create("other"),
            "principal delete": lambda: b.principals.delete(app.client_id),
        }
        assert await outcomes(writes) == dict.fromkeys(writes, "ServiceUnavailable")
        assert await raw(b) == before
        await restoring.finish(b, job)
        assert "mine" not in b.cache.names()
        await peer.keys.create("new", EC)
        await settings.update("AllowKeyManagementOperationsThroughARM", "true")

    hsm(body, **FULL)


def test_purge_and_key_backup_restore_during_a_full_restore_are_unavailable_not_conflicts(
    hsm: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """These two commit without `KeyCache.write`, so the fenced commit's StorageConflict reaches
    their own handlers, which read it as a lost race or a taken name (409). A partition whose
    watch has not yet shown it the fence lets such calls past the RestoreGate."""
    restoring = Restoring(monkeypatch)

    async def body(a: Stack) -> None:
        b = await a.same_domain_pool()
        await b.keys.create("purgeable", EC)
        await b.deleted.delete("purgeable")
        await b.keys.create("backed-up", EC)
        blob = await b.backups.backup("backed-up")
        await b.deleted.delete("backed-up")
        await b.deleted.purge("backed-up")
        job = await restoring.start(a, b, tmp_path / "c")
        before = await raw(b)
        writes: dict[str, Callable[[], Awaitable[Any]]] = {
            "purge": lambda: b.deleted.purge("purgeable"),
            "restore a key backup": lambda: b.backups.restore(blob),
        }
        assert await outcomes(writes) == dict.fromkeys(writes, "ServiceUnavailable")
        assert await raw(b) == before
        await restoring.finish(b, job)

    hsm(body, **FULL)


def test_the_restore_gate_reads_the_fence_record(hsm: Run) -> None:
    async def body(a: Stack) -> None:
        await a.view.put_if(jobs.FENCE, json.dumps({"job": "j9"}).encode())
        assert await a.cache.catch_up()
        assert svc(a).restoring() == "j9"

    hsm(body, **FULL)
