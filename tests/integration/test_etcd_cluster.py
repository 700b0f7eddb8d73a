"""LocalEtcdCluster: real etcd processes on free ports in a temp dir. Member replacement and
quorum loss are exercised through the storage in test_storage_etcd.py."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmhsm.cluster.etcd_cluster import LocalEtcdCluster
from openmhsm.storage.base import Entry
from openmhsm.storage.etcd import EtcdStorage

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalEtcdCluster]:
    cluster = LocalEtcdCluster(tmp_path / "etcd")
    cluster.start()
    yield cluster
    cluster.stop()


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie left to an init that does not reap counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_start_layout_and_membership(cluster: LocalEtcdCluster, tmp_path: Path) -> None:
    asyncio.run(cluster.wait_healthy(20))
    members = cluster.members()
    assert [m.name for m in members] == ["etcd0", "etcd1", "etcd2"]
    urls = [m.client_url for m in members] + [m.peer_url for m in members]
    assert len(set(urls)) == 6
    assert cluster.endpoints() == [m.client_url.removeprefix("http://") for m in members]
    for n, member in enumerate(members):
        assert member.data_dir == tmp_path / "etcd" / str(n)
        assert (member.data_dir / "member").is_dir()
        assert member.log_path.read_text().strip()
    listed = asyncio.run(cluster.cluster_members())
    assert sorted(m.name for m in listed) == ["etcd0", "etcd1", "etcd2"]
    assert {m.peer_urls for m in listed} == {(m.peer_url,) for m in members}
    assert asyncio.run(cluster.leader()) in {"etcd0", "etcd1", "etcd2"}


def test_kill_restart_and_stop(cluster: LocalEtcdCluster) -> None:
    asyncio.run(cluster.wait_healthy(20))
    ids = {m.name: m.id for m in asyncio.run(cluster.cluster_members())}
    leader = asyncio.run(cluster.leader())
    victim, survivor = [m.name for m in cluster.members() if m.name != leader]
    pid = cluster.member(victim).pid
    assert pid is not None
    cluster.kill(victim, signal.SIGKILL)
    assert not alive(pid) and not cluster.member(victim).running()
    assert asyncio.run(cluster.is_healthy(victim)) is False
    assert asyncio.run(cluster.is_healthy(survivor)) is True  # two of three keep quorum
    cluster.restart(victim)
    asyncio.run(cluster.wait_healthy(20))
    assert cluster.member(victim).pid != pid
    assert {m.name: m.id for m in asyncio.run(cluster.cluster_members())} == ids
    pids = [m.pid for m in cluster.members()]
    cluster.stop()
    cluster.stop()
    assert not any(alive(p) for p in pids if p is not None)


def test_whole_cluster_restarts_on_its_data(tmp_path: Path) -> None:
    first = LocalEtcdCluster(tmp_path / "etcd")
    first.start()

    async def write() -> int:
        await first.wait_healthy(20)
        store = EtcdStorage(first.endpoints())
        revision = await store.put_if("kept", b"across restarts")
        await store.close()
        return revision

    revision = asyncio.run(write())
    first.stop()
    ports = [
        (int(m.client_url.rsplit(":", 1)[1]), int(m.peer_url.rsplit(":", 1)[1]))
        for m in first.members()
    ]
    again = LocalEtcdCluster(tmp_path / "etcd", ports=ports)
    again.start()

    async def read() -> Entry | None:
        await again.wait_healthy(20)
        store = EtcdStorage(again.endpoints())
        entry = await store.get("kept")
        await store.close()
        return entry

    try:
        assert asyncio.run(read()) == Entry("kept", b"across restarts", revision)
    finally:
        again.stop()


def test_a_member_that_cannot_start_is_reported(tmp_path: Path) -> None:
    busy = LocalEtcdCluster(tmp_path / "a", size=1)
    busy.start()
    try:
        asyncio.run(busy.wait_healthy(20))
        taken = int(busy.members()[0].peer_url.rsplit(":", 1)[1])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            client = int(s.getsockname()[1])
        clash = LocalEtcdCluster(tmp_path / "b", size=1, ports=[(client, taken)])
        clash.start()
        with pytest.raises(RuntimeError, match="etcd0 exited"):
            asyncio.run(clash.wait_healthy(10))
        clash.stop()
    finally:
        busy.stop()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalEtcdCluster(tmp_path, size=0)
    with pytest.raises(ValueError):
        LocalEtcdCluster(tmp_path, size=3, ports=[(1, 2)])
    with pytest.raises(KeyError):
        LocalEtcdCluster(tmp_path).member("nope")


ORPHAN = """
import sys, time
from pathlib import Path
from openmhsm.cluster.etcd_cluster import LocalEtcdCluster
cluster = LocalEtcdCluster(Path(sys.argv[1]), size=1)
cluster.start()
print(cluster.members()[0].pid, flush=True)
if sys.argv[2] == "wait":
    time.sleep(60)
"""


@pytest.mark.parametrize("ending", ["exit", "SIGKILL"])
def test_members_die_with_their_parent(ending: str, tmp_path: Path) -> None:
    """atexit stops members on a normal exit; the parent-death signal on a SIGKILL."""
    if ending == "SIGKILL" and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv for the parent-death signal")
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(tmp_path), "wait" if ending == "SIGKILL" else "exit"],
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    if ending == "SIGKILL":
        # setpriv arms the parent-death signal before it execs etcd: kill the parent after
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}/comm").read_text().strip() != "etcd":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        parent.kill()
    parent.wait(timeout=20)
    parent.stdout.close()
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
