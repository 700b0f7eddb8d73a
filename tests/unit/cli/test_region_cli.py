"""`mhsm region add|remove` refusals that need no running pool (no processes, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmhsm.cli.main import main
from openmhsm.cluster.layout import write_json_atomic
from openmhsm.config import PoolConfig, RegionConfig


def pool_dir(path: Path, region: RegionConfig | None = None) -> Path:
    config = PoolConfig(name="p", tenant_id="t", port=1, mode="pool", region=region)
    write_json_atomic(path / "config.json", config.to_json())
    return path


def test_add_needs_a_running_primary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    primary = pool_dir(tmp_path / "a")
    code = main(["region", "add", "--primary", str(primary),
                 "--data-dir", str(tmp_path / "b"), "--port", "9443"])  # fmt: skip
    assert code == 1
    assert "is not running" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_remove_refuses_a_primary_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    primary = pool_dir(tmp_path / "a")
    assert main(["region", "remove", "--data-dir", str(primary)]) == 1
    assert "not an extended region" in capsys.readouterr().err
    assert (primary / "config.json").exists()


def test_remove_purges_a_stopped_extended_region(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    region = pool_dir(tmp_path / "b", RegionConfig("https://127.0.0.1:1", ("127.0.0.1:2",), ()))
    assert main(["region", "remove", "--data-dir", str(region)]) == 0
    assert not region.exists()
    assert "removed" in capsys.readouterr().out
