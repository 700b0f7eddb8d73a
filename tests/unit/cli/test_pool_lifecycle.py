"""`mhsm pool delete|recover|purge|list-deleted` and `mhsm up`'s refusals, on data dirs made by
hand (no processes, no sockets): the registry, the time rules, and what each command refuses."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from openmhsm.cli import pool_lifecycle
from openmhsm.cli.main import build_parser, main
from openmhsm.cli.pool_lifecycle import start_refusal
from openmhsm.cluster.deleted_pools import (
    DAY,
    DeletedPool,
    DeletedPoolRegistry,
    clock_offset,
    locked,
    read_marker,
    state_dir,
)
from openmhsm.cluster.layout import DataDir, write_json_atomic
from openmhsm.config import DeletionPolicy, PoolConfig


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("MHSM_STATE_DIR", str(folder))
    monkeypatch.delenv("MHSM_CLOCK_OFFSET", raising=False)
    return folder


@pytest.fixture
def mhsm(state: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    def run(*argv: str | Path, days_later: float = 0) -> Run:
        with pytest.MonkeyPatch.context() as env:
            if days_later:
                env.setenv("MHSM_CLOCK_OFFSET", str(days_later * DAY))
            code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    yield run


def make_pool(
    root: Path, name: str = "hsm1", retention: int = 7, protection: bool = False, **extra: Any
) -> Path:
    """A data dir as `mhsm up` leaves it, with a link out of it that purge must not follow."""
    config = PoolConfig(
        name=name,
        tenant_id="tenant",
        port=8443,
        deletion=DeletionPolicy(retention, protection),
        **extra,
    )
    write_json_atomic(root / "config.json", config.to_json())
    for relative in ("partitions/0/sealed", "tls/ca.pem", "security-domain/sd.json", "store.db"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("secret")
    (root / "pool.json").write_text(json.dumps({"name": name, "pid": None}))
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    (outside / "keep").write_text("not the pool's")
    (root / "backups").symlink_to(outside)
    return root


def up_args(data_dir: Path, *flags: str) -> Any:
    return build_parser().parse_args(["up", "--dev", "--data-dir", str(data_dir), *flags])


# --- where state lives, and the clock --------------------------------------------------------


def test_state_dir_prefers_mhsm_state_dir_then_xdg_then_home(tmp_path: Path) -> None:
    assert state_dir({"MHSM_STATE_DIR": "/s", "XDG_STATE_HOME": "/x"}) == Path("/s")
    assert state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/openmhsm")
    home = Path.home() / ".local" / "state" / "openmhsm"
    assert state_dir({"XDG_STATE_HOME": "relative"}) == home
    assert state_dir({}) == home


def test_clock_offset_variable_wins_over_the_pool_offset() -> None:
    assert clock_offset({}, 5.0) == 5.0
    assert clock_offset({"MHSM_CLOCK_OFFSET": "86400"}, 5.0) == 86400.0
    with pytest.raises(ValueError, match="MHSM_CLOCK_OFFSET"):
        clock_offset({"MHSM_CLOCK_OFFSET": "91d"}, 0.0)


def test_time_rules_follow_retention_and_purge_protection(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    protected = DeletedPool.new("a", data, DeletionPolicy(7, True), 1000.5)
    assert (protected.deleted, protected.scheduled_purge) == (1000, 1000 + 7 * DAY)
    end = protected.scheduled_purge
    assert protected.recoverable(end - 1) and not protected.recoverable(end)
    assert not protected.purgeable(end - 1) and protected.purgeable(end)
    assert not protected.due(end - 1) and protected.due(end)
    unprotected = DeletedPool.new("a", data, DeletionPolicy(90, False), 1000)
    assert unprotected.purgeable(1000)
    assert unprotected.summary() == {
        "name": "a",
        "deletedDate": "1970-01-01T00:16:40+00:00",
        "scheduledPurgeDate": "1970-04-01T00:16:40+00:00",
        "purgeProtection": False,
    }


# --- delete ----------------------------------------------------------------------------------


def test_delete_marks_the_pool_and_registers_its_name(
    tmp_path: Path, state: Path, mhsm: Any
) -> None:
    pool = make_pool(tmp_path / "p1", retention=30, protection=True)
    deleted = mhsm("pool", "delete", "--data-dir", pool)
    assert deleted.code == 0, deleted.err
    body = deleted.json  # stdout is the result only; `mhsm down`'s words go to stderr
    assert body["name"] == "hsm1" and body["purgeProtection"] is True
    assert "not running" in deleted.err
    marker = read_marker(DataDir(pool))
    assert marker is not None and marker.scheduled_purge - marker.deleted == 30 * DAY
    assert DeletedPoolRegistry(state).entries() == [marker]
    assert stat.S_IMODE((state / "deleted-pools.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert (pool / "store.db").exists()  # data kept for the retention period

    again = mhsm("pool", "delete", "--data-dir", pool)
    assert again.code == 1 and "already deleted" in again.err


def test_delete_refuses_a_dir_without_a_pool_or_with_a_live_one(
    tmp_path: Path, mhsm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_lifecycle, "STOPPED_LOCK_WAIT", 0.05)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no pool in" in mhsm("pool", "delete", "--data-dir", empty).err
    pool = make_pool(tmp_path / "p1")
    with locked(DataDir(pool)):  # as a starting `mhsm up` holds it
        busy = mhsm("pool", "delete", "--data-dir", pool)
    assert busy.code == 1 and "mhsm down" in busy.err
    assert read_marker(DataDir(pool)) is None


def test_two_deleted_pools_may_share_a_name(tmp_path: Path, state: Path, mhsm: Any) -> None:
    first, second = make_pool(tmp_path / "p1"), make_pool(tmp_path / "p2")
    assert mhsm("pool", "delete", "--data-dir", first).code == 0
    assert mhsm("pool", "delete", "--data-dir", second).code == 0
    listed = mhsm("pool", "list-deleted").json
    assert [e["dataDir"] for e in listed] == [str(first), str(second)]


# --- mhsm up ---------------------------------------------------------------------------------


def test_up_refuses_a_deleted_pool_and_says_how_to_recover(tmp_path: Path, mhsm: Any) -> None:
    pool = make_pool(tmp_path / "p1")
    scheduled = mhsm("pool", "delete", "--data-dir", pool).json["scheduledPurgeDate"]
    refused = mhsm("up", "--dev", "--data-dir", pool)
    assert refused.code == 1
    assert refused.err.count("\n") == 1
    assert scheduled in refused.err and f"mhsm pool recover --data-dir {pool}" in refused.err


def test_up_refuses_a_new_pool_under_a_deleted_name(tmp_path: Path, mhsm: Any) -> None:
    pool = make_pool(tmp_path / "p1", protection=True)
    mhsm("pool", "delete", "--data-dir", pool)
    fresh = tmp_path / "fresh"
    refused = mhsm("up", "--dev", "--data-dir", fresh, "--name", "hsm1")
    assert refused.code == 1 and "the name 'hsm1'" in refused.err
    assert "recover|purge" not in refused.err  # under purge protection only recover helps
    assert not (fresh / "config.json").exists()
    assert start_refusal(up_args(fresh, "--name", "other"), sweep=True) is None
    assert start_refusal(up_args(fresh), sweep=True) is None  # default name "local"


def test_an_existing_pool_of_the_same_name_still_starts(tmp_path: Path, mhsm: Any) -> None:
    deleted, kept = make_pool(tmp_path / "p1"), make_pool(tmp_path / "p2")
    mhsm("pool", "delete", "--data-dir", deleted)
    assert start_refusal(up_args(kept), sweep=True) is None


def test_up_with_a_clock_offset_judges_other_pools_by_the_real_clock(
    tmp_path: Path, mhsm: Any
) -> None:
    pool = make_pool(tmp_path / "p1", protection=True)
    mhsm("pool", "delete", "--data-dir", pool)
    fresh = tmp_path / "fresh"
    assert start_refusal(up_args(fresh, "--name", "hsm1"), sweep=False) is not None
    later = up_args(fresh, "--name", "hsm1", "--clock-offset", str(8 * DAY))
    # A pool's own shifted clock frees no other pool's name and purges no other pool: those
    # are machine-wide matters, judged by the real clock (or $MHSM_CLOCK_OFFSET).
    assert start_refusal(later, sweep=True) is not None
    assert read_marker(DataDir(pool)) is not None and (pool / "store.db").exists()


# --- recover ---------------------------------------------------------------------------------


def test_recover_undoes_the_delete(tmp_path: Path, state: Path, mhsm: Any) -> None:
    pool = make_pool(tmp_path / "p1", protection=True)
    mhsm("pool", "delete", "--data-dir", pool)
    recovered = mhsm("pool", "recover", "--data-dir", pool, days_later=6.9)
    assert recovered.code == 0, recovered.err
    assert recovered.json == {"name": "hsm1", "dataDir": str(pool), "recovered": True}
    assert read_marker(DataDir(pool)) is None
    assert DeletedPoolRegistry(state).entries() == []
    assert (pool / "partitions/0/sealed").read_text() == "secret"
    assert start_refusal(up_args(pool), sweep=True) is None
    assert start_refusal(up_args(tmp_path / "fresh", "--name", "hsm1"), sweep=True) is None


def test_recover_fails_once_the_retention_has_ended(tmp_path: Path, mhsm: Any) -> None:
    pool = make_pool(tmp_path / "p1")
    mhsm("pool", "delete", "--data-dir", pool)
    late = mhsm("pool", "recover", "--data-dir", pool, days_later=7)
    assert late.code == 1 and "purged" in late.err
    assert not (pool / "store.db").exists()
    never = mhsm("pool", "recover", "--data-dir", make_pool(tmp_path / "p2"))
    assert never.code == 1 and "not deleted" in never.err


# --- purge -----------------------------------------------------------------------------------


def test_purge_is_refused_under_purge_protection_until_retention_ends(
    tmp_path: Path, state: Path, mhsm: Any
) -> None:
    pool = make_pool(tmp_path / "p1", protection=True)
    mhsm("pool", "delete", "--data-dir", pool)
    refused = mhsm("pool", "purge", "--data-dir", pool, days_later=6.9)
    assert refused.code == 1
    assert "(Forbidden)" in refused.err and "purge protection is enabled" in refused.err
    assert (pool / "store.db").exists()

    purged = mhsm("pool", "purge", "--data-dir", pool, days_later=7)
    assert purged.code == 0, purged.err
    assert purged.out == ""
    assert [p.name for p in pool.iterdir()] == ["backups"]  # not the pool's: left
    assert (tmp_path / "p1-outside" / "keep").exists()  # a link is removed, not followed
    assert DeletedPoolRegistry(state).read() == []


def test_purge_without_protection_works_at_once(tmp_path: Path, mhsm: Any) -> None:
    pool = make_pool(tmp_path / "p1", retention=90)
    mhsm("pool", "delete", "--data-dir", pool)
    assert mhsm("pool", "purge", "--data-dir", pool).code == 0
    assert [p.name for p in pool.iterdir()] == ["backups"]  # not the pool's: left
    assert mhsm("pool", "list-deleted").json == []
    assert start_refusal(up_args(tmp_path / "fresh", "--name", "hsm1"), sweep=True) is None


def test_purge_refuses_a_pool_that_is_not_deleted(tmp_path: Path, mhsm: Any) -> None:
    pool = make_pool(tmp_path / "p1")
    refused = mhsm("pool", "purge", "--data-dir", pool)
    assert refused.code == 1 and "mhsm pool delete" in refused.err
    assert (pool / "store.db").exists()


# --- automatic purge -------------------------------------------------------------------------


def test_any_pool_command_purges_pools_past_retention(tmp_path: Path, mhsm: Any) -> None:
    short, long = (
        make_pool(tmp_path / "p1", retention=7, protection=True),
        make_pool(tmp_path / "p2", name="hsm2", retention=30),
    )
    mhsm("pool", "delete", "--data-dir", short)
    mhsm("pool", "delete", "--data-dir", long)
    listed = mhsm("pool", "list-deleted", days_later=8)
    assert [e["name"] for e in listed.json] == ["hsm2"]
    assert f"purged pool 'hsm1' in {short}" in listed.err
    assert [p.name for p in short.iterdir()] == ["backups"] and (long / "store.db").exists()


def test_the_pools_own_clock_offset_counts_without_the_variable(tmp_path: Path, mhsm: Any) -> None:
    pool = make_pool(tmp_path / "p1", protection=True, clock_offset=8.0 * DAY)
    mhsm("pool", "delete", "--data-dir", pool)
    assert mhsm("pool", "purge", "--data-dir", pool).code == 1  # deleted and asked at +8 days
    assert mhsm("pool", "purge", "--data-dir", pool, days_later=16).code == 0


def test_a_locked_pool_waits_for_the_next_sweep(tmp_path: Path, state: Path) -> None:
    pool = make_pool(tmp_path / "p1")
    entry = DeletedPool.new("hsm1", DataDir(pool), DeletionPolicy(7), 0)
    (pool / "deleted.json").write_text(json.dumps(entry.to_json()))
    registry = DeletedPoolRegistry(state)
    registry.record(entry)
    with locked(DataDir(pool)):
        assert registry.sweep(8 * DAY) == []
    assert registry.entries() == [entry]
    assert registry.sweep(8 * DAY) == [entry]
    assert registry.read() == []


def test_entries_whose_data_dir_is_gone_are_stale(tmp_path: Path, state: Path) -> None:
    registry = DeletedPoolRegistry(state)
    gone = DeletedPool.new("hsm1", DataDir(tmp_path / "gone"), DeletionPolicy(7), 0)
    registry.record(gone)
    assert registry.entries() == [] and registry.holding_name("hsm1", 0) is None
    assert registry.sweep(8 * DAY) == []  # dropped, not purged
    assert registry.read() == []


def test_nothing_is_written_when_nothing_is_deleted(tmp_path: Path, state: Path, mhsm: Any) -> None:
    assert mhsm("pool", "list-deleted", days_later=100).json == []
    assert start_refusal(up_args(tmp_path / "fresh"), sweep=True) is None
    assert not state.exists()
    assert os.environ["MHSM_STATE_DIR"] == str(state)
