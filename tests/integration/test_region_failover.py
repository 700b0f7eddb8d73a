"""Failover (issue 8): the link between the regions is cut, the primary acknowledges writes the
extended region never gets, and then the primary region is killed outright; the extended region
promotes itself after its detection time and takes writes, with every replicated key. The old
primary, started again, learns that its peer took over before its partitions start, steps down,
reports the writes it had acknowledged but never replicated (count and names), resyncs from the
new primary and forwards writes to it. Then `mhsm region promote` fails back by command, without
restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from dev_pool import free_port
from keys_support import release_connections, sdk_key_client
from link_proxy import LinkProxy
from pool_support import PoolProcess, child_pids, kill_leftovers, mhsm, runs
from region_support import extended_view, wait_for_key

from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.region_setup import link_primary, prepare_extended

pytestmark = pytest.mark.integration

FAILOVER_AFTER = 3
TIMEOUT = 60.0


def _pids(doc: dict[str, Any]) -> list[int]:
    return [pid for pid in [doc.get("pid"), *child_pids(doc)] if pid]


def _kill(pids: list[int], marker: str) -> None:
    for pid in pids:
        if runs(pid, marker):
            os.kill(pid, signal.SIGKILL)


def _region_state(data_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((data_dir / "region.json").read_text())
    except (OSError, ValueError):
        return {}
    return state


def _wait_role(data_dir: Path, role: str, term: int) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        state = _region_state(data_dir)
        if state.get("role") == role and state.get("term") == term:
            return state
        time.sleep(0.1)
    raise AssertionError(f"{data_dir} never became {role} at term {term}: {state}")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[PoolProcess, Path, LinkProxy, list[PoolProcess]]]:
    """A primary and its extended region, set up as `mhsm region add --failover-after 3` does,
    but with the region's replication and its watch on the primary through a `LinkProxy`."""
    (tmp_path / "a").mkdir()
    primary = PoolProcess(tmp_path / "a" / "pool", free_port()).start()
    region_dir = tmp_path / "b"
    seen: set[int] = set(_pids(primary.doc))
    link = LinkProxy()
    started = [primary]
    try:
        extended = DataDir(region_dir.resolve())
        prepare_extended(DataDir(primary.data_dir.resolve()), extended, free_port(),
                         FAILOVER_AFTER)  # fmt: skip
        config = read_json(extended.config)
        config["region"]["primary_etcd"] = [
            f"127.0.0.1:{link.relay(*_host_port(endpoint))}"
            for endpoint in config["region"]["primary_etcd"]
        ]
        write_json_atomic(extended.config, config)
        asyncio.run(link_primary(DataDir(primary.data_dir.resolve()), extended))
        region = PoolProcess(region_dir, config["port"]).start()
        started.append(region)
        seen.update(_pids(region.doc))
        yield primary, region_dir, link, started
    finally:
        link.close()
        for each in started:
            if each.proc is not None and each.proc.poll() is None:
                each.stop()
            elif each.proc is not None:
                each.proc.wait()
        for data_dir in (region_dir, primary.data_dir):
            if (data_dir / "pool.json").exists():
                seen.update(_pids(extended_view(data_dir).doc))
                mhsm("down", "--data-dir", str(data_dir))
        seen.update(primary.seen_pids)
        kill_leftovers(seen, str(tmp_path.resolve()))


def _host_port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def test_failover_step_down_and_failback(
    pair: tuple[PoolProcess, Path, LinkProxy, list[PoolProcess]],
) -> None:
    primary, region_dir, link, started = pair
    region = extended_view(region_dir)
    with sdk_key_client(primary) as keys, sdk_key_client(region) as region_keys:
        keys.create_ec_key("replicated", curve="P-256")
        wait_for_key(region_keys, "replicated")

        # The link fails: what the primary acknowledges now never reaches the region. Then
        # the whole primary region dies.
        link.cut()
        keys.create_ec_key("lost-1", curve="P-256")
        keys.create_ec_key("lost-2", curve="P-256")
        _kill(_pids(primary.reload()), str(primary.data_dir.resolve()))
        promoted = _wait_role(region_dir, "primary", 2)
        assert promoted["promoted"]["term"] == 2

        # The promoted region has every replicated key and takes writes.
        assert region_keys.get_key("replicated").name == "replicated"
        with pytest.raises(ResourceNotFoundError):
            region_keys.get_key("lost-1")
        region_keys.create_ec_key("after-failover", curve="P-256")
    release_connections()

    # The old primary comes back, and so does the link: the old primary steps down before it
    # serves and reports what it lost.
    link.heal()
    old = PoolProcess(primary.data_dir, primary.port).start()
    started.append(old)
    primary.seen_pids.update(_pids(old.doc))
    stepped = _wait_role(primary.data_dir, "extended", 2)
    lost = stepped["lost_writes"]
    assert lost["names"] == ["keys/lost-1", "keys/lost-2"]
    assert lost["count"] == 2
    log = (primary.data_dir.parent / "pool.log").read_text(errors="replace")
    assert "2 write(s)" in log and "keys/lost-1" in log
    status = mhsm("status", "--data-dir", str(primary.data_dir), "--output", "json")
    assert status.code == 0, status.stderr
    assert status.json()["region"]["lost_writes"]["count"] == 2
    with sdk_key_client(old) as old_keys:
        wait_for_key(old_keys, "after-failover")  # resynced from the new primary
        with pytest.raises(ResourceNotFoundError):
            old_keys.get_key("lost-1")  # gone from the pool, as reported
        old_keys.create_ec_key("through-old", curve="P-256")  # forwarded to the new primary
    with sdk_key_client(region) as region_keys:
        assert region_keys.get_key("through-old").name == "through-old"
    release_connections()

    # Failback by command: no restart, the other region steps down with nothing lost.
    back = mhsm("region", "promote", "--data-dir", str(primary.data_dir))
    assert back.code == 0, back.stdout + back.stderr
    assert _wait_role(primary.data_dir, "primary", 3)
    demoted = _wait_role(region_dir, "extended", 3)
    assert demoted["lost_writes"]["count"] == 0
    with sdk_key_client(old) as old_keys, sdk_key_client(region) as region_keys:
        old_keys.create_ec_key("after-failback", curve="P-256")
        assert region_keys.get_key("after-failback").name == "after-failback"
    release_connections()
    assert old.proc is not None and old.proc.poll() is None
