"""`mhsm region add|remove` refusals that need no running pool (no processes, no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openmhsm.cli.main import main
from openmhsm.cli.status import print_region
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


@pytest.mark.parametrize("value", ["-1", "86401", "soon", "nan"])
def test_add_refuses_a_bad_failover_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit):
        main(["region", "add", "--primary", str(tmp_path / "a"), "--data-dir",
              str(tmp_path / "b"), "--port", "9443", "--failover-after", value])  # fmt: skip
    assert "failover" in capsys.readouterr().err


def test_promote_refuses_a_primary_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    primary = pool_dir(tmp_path / "a")
    assert main(["region", "promote", "--data-dir", str(primary)]) == 1
    assert "not an extended region" in capsys.readouterr().err


def test_status_shows_the_role_the_lag_and_the_lost_writes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_region({"role": "extended", "term": 2, "primary_url": "https://a:1", "lag_seconds": 0.25,
                   "lag_revisions": 3, "applied_revision": 40,
                   "lost_writes": {"count": 2, "names": ["keys/x", "keys/y"]}})  # fmt: skip
    out = capsys.readouterr().out
    assert "region: extended at term 2, primary https://a:1; replication lag 0.250 s" in out
    assert "2 write(s) never replicated: keys/x, keys/y" in out
    print_region({"role": "primary", "term": 3, "peer_url": "https://b:2", "lost_writes": None})
    assert capsys.readouterr().out == "region: primary at term 3, peer https://b:2\n"
