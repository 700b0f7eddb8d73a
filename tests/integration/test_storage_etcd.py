"""EtcdStorage on a real 3-member cluster: the conformance suite, failover, quorum loss, member
restart and replacement, watch resumption, idempotent retries and compaction."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aetcd  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
import pytest

from openmhsm.cluster.etcd_cluster import LocalEtcdCluster
from openmhsm.errors import StorageConflict, StorageUnavailable
from openmhsm.storage.base import Delete, Entry, Event, Put, Storage, StorageCompacted
from openmhsm.storage.conformance import CHECKS, Check, check_name
from openmhsm.storage.etcd import EtcdStorage
from openmhsm.storage.registry import open_storage

pytestmark = pytest.mark.integration
KEPT_HISTORY = 32  # revisions of watch history the conformance store keeps (the suite needs < 200)
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await scenario()

    return asyncio.run(main())


def started(root: Path) -> LocalEtcdCluster:
    cluster = LocalEtcdCluster(root / "etcd")
    cluster.start()
    try:
        run(lambda: cluster.wait_healthy(20))
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcdCluster]:
    """One healthy cluster for the tests that leave it healthy."""
    cluster = started(tmp_path_factory.mktemp("etcd"))
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LocalEtcdCluster]:
    """A cluster of its own for a test that kills members."""
    cluster = started(tmp_path)
    yield cluster
    cluster.stop()


async def compact(cluster: LocalEtcdCluster, revision: int) -> None:
    host, port = cluster.endpoints()[0].rsplit(":", 1)
    async with aetcd.Client(host, int(port), timeout=5) as client:
        await client.compact(revision, physical=True)


class BoundedHistoryStore(EtcdStorage):
    """Keeps only the last KEPT_HISTORY revisions of history, as the suite asks of a store:
    compacts before each watch and each snapshot read."""

    def __init__(self, cluster: LocalEtcdCluster) -> None:
        super().__init__(cluster.endpoints())
        self.cluster = cluster

    def watch_from(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        return self._compacted_watch(prefix, revision)

    async def snapshot_page(
        self, prefix: str, revision: int, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        await self._bound_history()
        return await super().snapshot_page(prefix, revision, start_after, limit)

    async def _compacted_watch(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        await self._bound_history()
        async for event in super().watch_from(prefix, revision):
            yield event

    async def _bound_history(self) -> None:
        oldest = await self.revision() - KEPT_HISTORY
        if oldest > 1:
            try:
                await compact(self.cluster, oldest)
            except aetcd.ClientError as exc:  # an earlier check compacted further already
                assert "compacted" in str(exc)


async def wipe(store: Storage) -> None:
    while page := await store.list_page("", limit=100):
        await store.txn([Delete(entry.key) for entry in page])


@pytest.mark.parametrize("check", CHECKS, ids=check_name)
def test_etcd_conformance(check: Check, cluster: LocalEtcdCluster) -> None:
    async def make() -> Storage:
        store = BoundedHistoryStore(cluster)
        await wipe(store)
        return store

    run(lambda: check(make))


def test_open_storage_url(cluster: LocalEtcdCluster) -> None:
    store = open_storage("etcd://" + ",".join(cluster.endpoints()))
    assert isinstance(store, EtcdStorage)
    assert store.endpoints == tuple(cluster.endpoints())

    async def scenario() -> None:
        revision = await store.put_if("url/k", b"v")
        assert await store.get("url/k") == Entry("url/k", b"v", revision)
        await store.close()

    run(scenario)
    for url in ("etcd://", "etcd://h:1/path", "etcd://h:1?x=1", "etcd://h:x"):
        with pytest.raises(ValueError):
            open_storage(url)


def test_closed_store_is_unavailable(cluster: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStorage(cluster.endpoints())
        revision = await store.put_if("closed/k", b"v")
        stream = store.watch_from("closed/", revision)
        assert (await anext(stream)).key == "closed/k"
        waiting = asyncio.create_task(anext(stream, None))
        await asyncio.sleep(0.05)
        await store.close()
        await store.close()
        assert await asyncio.wait_for(waiting, 2) is None
        for call in (store.get("closed/k"), store.put_if("closed/k", b"w"), store.revision()):
            with pytest.raises(StorageUnavailable, match="closed"):
                await call

    run(scenario)


def test_unreachable_members_fail_fast(tmp_path: Path) -> None:
    dead = LocalEtcdCluster(tmp_path, size=3).endpoints()  # free ports, nothing listening

    async def scenario() -> float:
        store = EtcdStorage(dead, request_timeout=1.0)
        start = time.monotonic()
        with pytest.raises(StorageUnavailable, match="no quorum or no member reachable"):
            await store.put_if("k", b"v")
        await store.close()
        return time.monotonic() - start

    assert run(scenario) < 3.0


def test_compacted_revision_raises(cluster: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStorage(cluster.endpoints())
        old = await store.put_if("compact/k", b"0")
        latest = await store.put_if("compact/k", b"1")
        await compact(cluster, latest)
        with pytest.raises(StorageCompacted, match=f"revision {old} is compacted"):
            await anext(store.watch_from("compact/", old))
        newest = store.watch_from("compact/", latest)
        assert await anext(newest) == Event("put", "compact/k", b"1", latest)
        await newest.aclose()  # type: ignore[attr-defined]
        await store.close()

    run(scenario)


class LostResponse:
    """Wraps a member's Txn: the call commits, then the client sees DEADLINE_EXCEEDED, as when
    a response is lost after etcd committed. `meddle` runs between commit and failure."""

    def __init__(self, store: EtcdStorage, meddle: Callable[[], Awaitable[Any]] | None = None):
        self.kv = store._members[store._current].open().kv
        self.real = self.kv.Txn
        self.meddle = meddle
        self.calls = 0

    async def __call__(self, request: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > 1:
            return await self.real(request, **kwargs)
        await self.real(request, **kwargs)
        if self.meddle is not None:
            await self.meddle()
        code = grpc.StatusCode.DEADLINE_EXCEEDED
        raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "lost")

    def __enter__(self) -> LostResponse:
        self.kv.Txn = self
        return self

    def __exit__(self, *exc: object) -> None:
        self.kv.Txn = self.real


def test_retried_write_that_committed_is_not_a_conflict(cluster: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStorage(cluster.endpoints()[:1])  # the retry goes to the same member
        await wipe(store)
        r0 = await store.put_if("retry/gone", b"g")
        with LostResponse(store) as lost:  # create-if-absent + delete-on-revision
            revision = await store.txn([Put("retry/a", b"a", 0), Delete("retry/gone", r0)])
        assert lost.calls == 2
        assert revision == r0 + 1 == await store.revision()  # applied once
        assert await store.get("retry/a") == Entry("retry/a", b"a", revision)
        with LostResponse(store):  # a delete alone: the header revision
            assert await store.delete_if("retry/a", revision) == revision + 1
        with LostResponse(store):  # unconditional: re-applied, same value
            again = await store.put_if("retry/u", b"u")
        assert await store.get("retry/u") == Entry("retry/u", b"u", again)
        await store.close()

    run(scenario)


def test_retried_write_overtaken_is_a_conflict(cluster: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStorage(cluster.endpoints()[:1])
        other = EtcdStorage(cluster.endpoints())
        await wipe(store)

        async def overwrite() -> None:
            entry = await other.get("race/k")
            assert entry is not None
            await other.put_if("race/k", b"theirs", entry.mod_revision)

        with LostResponse(store, overwrite), pytest.raises(StorageConflict, match="race/k"):
            await store.put_if("race/k", b"ours", 0)
        entry = await store.get("race/k")
        assert entry is not None and entry.value == b"theirs"
        await store.close()
        await other.close()

    run(scenario)


def first(cluster: LocalEtcdCluster, name: str) -> list[str]:
    """Endpoints with `name`'s first: a new store talks to that member first."""
    member = cluster.member(name).endpoint
    return [member, *(e for e in cluster.endpoints() if e != member)]


async def timed(call: Awaitable[T]) -> tuple[T, float]:
    start = time.monotonic()
    result = await call
    return result, time.monotonic() - start


def test_failover_when_connected_member_is_killed(fresh: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        leader = await fresh.leader()
        follower = next(m.name for m in fresh.members() if m.name != leader)
        store = EtcdStorage(first(fresh, follower))
        r1 = await store.put_if("f/k", b"1")
        fresh.kill(follower, signal.SIGKILL)
        r2, took = await timed(store.put_if("f/k", b"2", r1))
        assert took < 1.9  # refused at once, not after the 2 s attempt deadline
        assert await store.get("f/k") == Entry("f/k", b"2", r2)
        assert [e.key for e in await store.list_page("f/")] == ["f/k"]
        await store.close()

    run(scenario)


def test_failover_from_a_hung_member(fresh: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        leader = await fresh.leader()
        follower = next(m.name for m in fresh.members() if m.name != leader)
        store = EtcdStorage(first(fresh, follower), request_timeout=0.5)
        alone = EtcdStorage(first(fresh, follower)[:1], request_timeout=5)
        r1 = await store.put_if("h/k", b"1")
        fresh.kill(follower, signal.SIGSTOP)
        try:
            r2, took = await timed(store.put_if("h/k", b"2", r1))
            assert 0.4 < took < 3.0  # one attempt's deadline, then the next member
            assert await store.get("h/k") == Entry("h/k", b"2", r2)
            stuck = asyncio.create_task(alone.get("h/k"))
            await asyncio.sleep(0.2)
            await alone.close()  # a call in flight when the store closes ends at once
            with pytest.raises(StorageUnavailable, match="closed"):
                await asyncio.wait_for(stuck, 1)
        finally:
            fresh.kill(follower, signal.SIGCONT)
        await store.close()

    run(scenario)


def test_writes_continue_after_leader_is_killed(fresh: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        leader = await fresh.leader()
        assert leader is not None
        store = EtcdStorage(first(fresh, leader))
        r1 = await store.put_if("l/k", b"1")
        fresh.kill(leader, signal.SIGKILL)
        r2, took = await timed(store.put_if("l/k", b"2", r1))
        assert took < 8.0  # within the retry budget (4 s), with room for a loaded machine
        assert await store.get("l/k") == Entry("l/k", b"2", r2)
        assert await fresh.leader() not in (None, leader)
        await store.close()

    run(scenario)


def test_quorum_lost_fails_fast_and_recovers(fresh: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStorage(fresh.endpoints())
        r1 = await store.put_if("q/k", b"1")
        fresh.kill("etcd1", signal.SIGKILL)
        fresh.kill("etcd2", signal.SIGKILL)
        start = time.monotonic()
        write = store.txn([Put("q/k", b"2", r1), Put("q/other", b"x")])
        read = store.get("q/k")  # linearizable reads need quorum too
        results = await asyncio.gather(write, read, return_exceptions=True)
        for failed in results:
            assert isinstance(failed, StorageUnavailable), failed
            assert "no quorum" in str(failed)
        assert time.monotonic() - start < 9.0  # the 4 s budget, not a hang
        fresh.restart("etcd1")
        fresh.restart("etcd2")
        await fresh.wait_healthy(20)
        entry = await store.get("q/k")
        assert entry is not None
        other = await store.get("q/other")  # never half-applied
        assert (entry.value, other) in (
            (b"1", None),
            (b"2", Entry("q/other", b"x", entry.mod_revision)),
        )
        assert await store.put_if("q/k", b"3", entry.mod_revision) > entry.mod_revision
        await store.close()

    run(scenario)


def test_restarted_member_catches_up(fresh: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStorage(fresh.endpoints())
        fresh.kill("etcd1", signal.SIGKILL)
        revision = await store.put_if("r/k", b"while down")
        fresh.restart("etcd1")
        await fresh.wait_healthy(20)
        only = EtcdStorage([fresh.member("etcd1").endpoint])
        assert await only.get("r/k") == Entry("r/k", b"while down", revision)
        await only.close()
        await store.close()

    run(scenario)


def test_member_with_lost_data_is_replaced(fresh: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStorage(fresh.endpoints())
        before = {m.name: m.id for m in await fresh.cluster_members()}
        fresh.kill("etcd2", signal.SIGKILL)
        shutil.rmtree(fresh.member("etcd2").data_dir)
        with pytest.raises(RuntimeError, match="replace"):
            fresh.restart("etcd2")
        revision = await store.put_if("x/k", b"while gone")
        await fresh.replace("etcd2")
        await fresh.wait_healthy(20)
        after = {m.name: m.id for m in await fresh.cluster_members()}
        assert sorted(after) == ["etcd0", "etcd1", "etcd2"]
        assert after["etcd2"] != before["etcd2"]
        only = EtcdStorage([fresh.member("etcd2").endpoint])
        assert await only.get("x/k") == Entry("x/k", b"while gone", revision)
        await only.close()
        await store.close()

    run(scenario)


def test_watch_resumes_on_another_member(fresh: LocalEtcdCluster) -> None:
    async def scenario() -> None:
        store = EtcdStorage(fresh.endpoints())  # the watch starts on etcd0
        start = await store.revision() + 1
        stream = store.watch_from("w/", start)
        written = [await store.put_if("w/0", b"0")]
        assert (await asyncio.wait_for(anext(stream), 5)).revision == written[0]
        fresh.kill("etcd0", signal.SIGKILL)
        written += [await store.put_if(f"w/{i}", b"%d" % i) for i in range(1, 4)]
        written.append(await store.delete_if("w/1"))
        seen = [await asyncio.wait_for(anext(stream), 5) for _ in range(4)]
        assert [e.revision for e in seen] == written[1:]
        assert seen[-1] == Event("delete", "w/1", b"", written[-1])
        await stream.aclose()  # type: ignore[attr-defined]
        other = EtcdStorage(fresh.endpoints())
        late = other.watch_from("w/", start)  # starts on etcd0, dead already
        assert [(await asyncio.wait_for(anext(late), 5)).revision for _ in written] == written
        await late.aclose()  # type: ignore[attr-defined]
        await other.close()
        await store.close()

    run(scenario)


def test_watch_leaves_a_hung_member_within_seconds(fresh: LocalEtcdCluster) -> None:
    """A member that hangs (SIGSTOP: the TCP connection stays up) is left once it does not answer
    a progress request; gRPC keepalive alone took about 13 s, and a partition's cache was stale
    that long (the network chaos test's lost updates)."""

    async def scenario() -> None:
        store = EtcdStorage(fresh.endpoints())  # the watch starts on etcd0
        writer = EtcdStorage([fresh.member("etcd1").endpoint, fresh.member("etcd2").endpoint])
        stream = store.watch_from("h/", await store.revision() + 1)
        first = await writer.put_if("h/0", b"0")
        assert (await asyncio.wait_for(anext(stream), 5)).revision == first
        fresh.kill("etcd0", signal.SIGSTOP)
        try:
            later = await writer.put_if("h/1", b"1")
            seen = await asyncio.wait_for(anext(stream), 8)  # 0.25 s quiet + 1 s probe + reconnect
            assert seen.revision == later
        finally:
            fresh.kill("etcd0", signal.SIGCONT)
        await stream.aclose()  # type: ignore[attr-defined]
        await writer.close()
        await store.close()

    run(scenario)
