"""Failover by command (issue 8): the primary region is stopped, `mhsm region promote` makes the
extended region the primary at once (its automatic failover is off): it has every replicated
key, signs with them, and accepts writes; `region remove` no longer applies to it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from dev_pool import free_port
from keys_support import sdk_key_client
from pool_support import PoolProcess, child_pids, kill_leftovers, mhsm
from region_support import extended_view, wait_for_key

from openmhsm.cli import pool

pytestmark = pytest.mark.integration


def test_promote_after_losing_the_primary(tmp_path: Path) -> None:
    primary = PoolProcess(tmp_path / "a" / "pool", free_port())
    (tmp_path / "a").mkdir()
    primary.start()
    region_dir = tmp_path / "b"
    seen: set[int] = set()
    try:
        with sdk_key_client(primary) as keys:
            keys.create_ec_key("replicated", curve="P-256")
        added = mhsm("region", "add", "--primary", str(primary.data_dir),
                     "--data-dir", str(region_dir), "--port", str(free_port()),
                     "--failover-after", "0")  # fmt: skip
        assert added.code == 0, added.stderr
        with sdk_key_client(extended_view(region_dir)) as region_keys:
            wait_for_key(region_keys, "replicated")
        seen.update(p for p in child_pids(extended_view(region_dir).doc) if p)
        primary.stop()  # the primary region is lost

        promoted = mhsm("region", "promote", "--data-dir", str(region_dir))
        assert promoted.code == 0, promoted.stdout + promoted.stderr
        assert "promoted" in promoted.stdout and "term 2" in promoted.stdout
        region = extended_view(region_dir)
        seen.update(p for p in child_pids(region.doc) if p)
        with sdk_key_client(region) as region_keys:
            assert region_keys.get_key("replicated").name == "replicated"
            made = region_keys.create_ec_key("after-promotion", curve="P-256")
            assert made.name == "after-promotion"
        removed = mhsm("region", "remove", "--data-dir", str(region_dir))
        assert removed.code == 1 and "not an extended region" in removed.stderr
    finally:
        if (region_dir / "pool.json").exists():
            pool.run_down(argparse.Namespace(data_dir=region_dir))
        if primary.proc is not None and primary.proc.poll() is None:
            primary.stop()
        assert not kill_leftovers(seen, str(region_dir.resolve()))
