"""Soft-delete of a real dev pool: `mhsm pool delete` stops it and keeps its data, `mhsm up`
refuses it and its name, `mhsm pool recover` brings it back with its keys, and once the retention
period has passed (the clock shifted by MHSM_CLOCK_OFFSET) the next `mhsm up` purges it and the
name is free again. The CLI runs in-process; the pools are real processes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from dev_pool import DevPool, free_port, start_pool
from keys_support import sdk_key_client

from openmhsm.cli.main import main

pytestmark = pytest.mark.integration
DAY = 86_400

Mhsm = Callable[..., tuple[int, str, str]]


@pytest.fixture
def mhsm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Mhsm:
    """`mhsm("pool", "delete", ...)` -> (exit code, stdout, stderr), with a state dir of this
    test's own (pools started from here inherit it too)."""
    monkeypatch.setenv("MHSM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MHSM_CLOCK_OFFSET", raising=False)

    def run(*argv: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def protected_pool(tmp_path: Path) -> tuple[DevPool, str]:
    name = f"hsm-{uuid.uuid4().hex[:8]}"
    pool = start_pool(tmp_path, "--name", name, "--retention-days", "7", "--purge-protection")
    return pool, name


def test_deleted_pool_is_refused_until_recovered(tmp_path: Path, mhsm: Mhsm) -> None:
    pool, name = protected_pool(tmp_path)
    try:
        with sdk_key_client(pool) as keys:
            keys.create_ec_key("survivor")

        code, out, err = mhsm("pool", "delete", "--data-dir", pool.data_dir)
        assert code == 0, err
        assert pool.proc is not None and pool.proc.wait(timeout=5) is not None
        deleted = json.loads(out)
        assert (deleted["name"], deleted["purgeProtection"]) == (name, True)
        span = datetime.fromisoformat(deleted["scheduledPurgeDate"]) - datetime.fromisoformat(
            deleted["deletedDate"]
        )
        assert span.total_seconds() == 7 * DAY

        code, _, err = mhsm("up", "--dev", "--data-dir", pool.data_dir)
        assert code == 1 and "pool recover" in err and deleted["scheduledPurgeDate"] in err
        other = tmp_path / "other"
        code, _, err = mhsm("up", "--dev", "--data-dir", other, "--name", name)
        assert code == 1 and f"the name '{name}'" in err
        assert not (other / "config.json").exists()
        code, _, err = mhsm("pool", "purge", "--data-dir", pool.data_dir)
        assert code == 1 and "purge protection is enabled" in err
        code, out, _ = mhsm("pool", "list-deleted")
        assert [e["name"] for e in json.loads(out)] == [name]

        code, _, err = mhsm("pool", "recover", "--data-dir", pool.data_dir)
        assert code == 0, err
        again = DevPool(pool.data_dir, free_port()).start()
        try:
            with sdk_key_client(again) as keys:
                assert keys.get_key("survivor").name == "survivor"
        finally:
            again.stop()
    finally:
        pool.stop()


def test_retention_end_purges_the_pool_and_frees_its_name(
    tmp_path: Path, mhsm: Mhsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, name = protected_pool(tmp_path)
    try:
        code, _, err = mhsm("pool", "delete", "--data-dir", pool.data_dir)
        assert code == 0, err
    finally:
        pool.stop()
    monkeypatch.setenv("MHSM_CLOCK_OFFSET", str(7 * DAY + 60))
    successor = DevPool(tmp_path / "successor", free_port(), ["--name", name]).start()
    try:
        assert successor.doc["name"] == name
        assert list(pool.data_dir.iterdir()) == []  # purged by that `mhsm up`
        assert f"purged pool '{name}'" in successor.log_text()
        assert json.loads(mhsm("pool", "list-deleted")[1]) == []
    finally:
        successor.stop()
