"""etcd v3 storage: the `Storage` Protocol over every member of an etcd cluster.

We drive aetcd's generated gRPC stubs (`aetcd.rpc`) over our own `grpc.aio` channels rather than
`aetcd.Client`: the client knows one endpoint, has one timeout for every call, does not return a
transaction's header revision, and hides a compacted watch inside its callback machinery.

Mapping. Keys are UTF-8 bytes, values bytes. `mod_revision` is etcd's mod_revision, `revision()`
the response header's revision. A write is one etcd Txn: per op a compare (`mod_revision == n`
for n > 0, `version == 0` for n == 0, none for None), the puts/deletes as success ops, and a range
of every key as failure ops (so a failed compare reports the keys' state in the same snapshot);
it returns the commit's header revision. `list_page` is a range `[prefix + start_after + "\\0",
prefix_end)` with a limit, in key order; `snapshot_page` is the same range with `revision=`
(etcd serves historical reads until compaction; its "required revision has been compacted" is
StorageCompacted, "future revision" ValueError; revision 0 reads etcd's first revision, 1, at which
an etcd store is empty). `watch_from` is an etcd watch with `start_revision`.

Failover. One channel per member; calls go to the current member and move to the next on
UNAVAILABLE or DEADLINE_EXCEEDED (dead member, hung member, a member without a leader: every call
carries `hasleader`, so a member cut off from quorum refuses at once instead of waiting). Each
attempt has a deadline of `request_timeout`; all attempts of one call share `retry_budget`
(default 2 x `request_timeout`), long enough to ride out a leader election, after which the call
raises `StorageUnavailable`. Watches reconnect to the next member and resume after the last
revision they delivered; they retry until the store is closed.

Idempotent retried writes. An attempt that failed with a timeout or unavailability may still have
committed. So when a later attempt of the same write fails its compare, we look at the keys' state
returned with the failure: if every Put's key holds exactly the value we wrote, all at one
mod_revision, and every Delete's key is absent, the earlier attempt committed and we return that
mod_revision (the header revision when there are only deletes). Values are sealed records with
random nonces, so equal bytes mean our write (or, for plaintext `meta/` records, an identical
one, which leaves the state we asked for). Unconditional writes have no compare
to fail: their retry re-applies the same values at a newer revision. A write reported unavailable
may still commit later (a leader re-elected with it in its log): callers treat 503 as unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import grpc  # type: ignore[import-untyped]
from aetcd import rpc  # type: ignore[import-untyped]

from openmhsm.errors import StorageConflict, StorageUnavailable
from openmhsm.storage.base import (
    Delete,
    Entry,
    Event,
    Put,
    StorageCompacted,
    TxnOp,
    check_unique_keys,
)
from openmhsm.storage.etcd_txn import (
    committed_revision,
    conflict_message,
    entry_of,
    failure_state,
    txn_request,
)

_REQUIRE_LEADER: Final = (("hasleader", "true"),)  # clientv3.WithRequireLeader
_FAILOVER_CODES: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),  # a restarted member is used again within a second
    ("grpc.keepalive_time_ms", 10_000),  # etcd refuses pings more often than every 5 s
    ("grpc.keepalive_timeout_ms", 3_000),
    ("grpc.http2.max_pings_without_data", 0),  # keep probing an idle watch stream
    ("grpc.max_receive_message_length", 64 << 20),
)
_ALL_KEYS: Final = b"\0"  # as range_end: no upper bound
# A partition serves reads from its cache, which is as fresh as its watch: these two bound how
# long a watch on a hung member (stopped, starved, cut off) goes unnoticed.
WATCH_PROBE_AFTER: Final = 0.25  # seconds of a quiet watch stream before asking for progress
WATCH_PROGRESS_TIMEOUT: Final = 1.0  # seconds a member has to answer; then the next one


class _Member:
    """One endpoint's channel and stubs, opened on first use inside the running event loop."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._channel: grpc.aio.Channel | None = None
        self.kv: Any = None
        self.watch: Any = None

    def open(self) -> _Member:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.endpoint, options=_CHANNEL_OPTIONS)
            self.kv = rpc.KVStub(self._channel)
            self.watch = rpc.WatchStub(self._channel)
        return self

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


class EtcdStorage:
    """The `Storage` Protocol on an etcd v3 cluster, failing over between its members."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout: float = 2.0,
        retry_budget: float | None = None,
        watch_backoff: float = 0.2,
    ) -> None:
        """`endpoints` are every member's `host:port` (an `http://` prefix is accepted). Nothing
        connects until the first call. Raises ValueError for an empty or malformed list."""
        if not endpoints:
            raise ValueError("EtcdStorage needs at least one endpoint")
        if request_timeout <= 0:
            raise ValueError("request_timeout must be positive")
        self.endpoints = tuple(_endpoint(e) for e in endpoints)
        self._members = [_Member(e) for e in self.endpoints]
        self._current = 0
        self._timeout = request_timeout
        self._budget = retry_budget if retry_budget is not None else 2 * request_timeout
        self._watch_backoff = watch_backoff
        self._closed = False

    async def get(self, key: str) -> Entry | None:
        """The entry at `key` (linearizable), or None. Raises StorageUnavailable."""
        response, _ = await self._call("Range", rpc.RangeRequest(key=key.encode()))
        return entry_of(response.kvs[0]) if response.kvs else None

    async def put_if(self, key: str, value: bytes, expected_revision: int | None = None) -> int:
        """Write `value`; return the commit's revision. Raises StorageConflict,
        StorageUnavailable."""
        return await self.txn([Put(key, value, expected_revision)])

    async def delete_if(self, key: str, expected_revision: int | None = None) -> int:
        """Remove `key`; return the store revision. Raises StorageConflict, StorageUnavailable."""
        return await self.txn([Delete(key, expected_revision)])

    async def list_page(
        self, prefix: str, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Entries under `prefix` in key order, after `start_after`, at most `limit`.
        Raises StorageUnavailable."""
        return await self._range_page(prefix, start_after, limit, 0)

    async def _range_page(
        self, prefix: str, start_after: str | None, limit: int, revision: int
    ) -> list[Entry]:
        """One ascending range page under `prefix`, at `revision` (0: the current one)."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        low = prefix.encode()
        end = _prefix_end(low)
        if start_after is not None and start_after >= prefix:
            low = start_after.encode() + b"\0"
        if end != _ALL_KEYS and low >= end:
            return []
        request = rpc.RangeRequest(
            key=low or _ALL_KEYS,
            range_end=end,
            limit=limit,
            sort_order=rpc.RangeRequest.SortOrder.Value("ASCEND"),
            sort_target=rpc.RangeRequest.SortTarget.Value("KEY"),
            revision=revision,
        )
        response, _ = await self._call("Range", request)
        return [entry_of(kv) for kv in response.kvs]

    async def snapshot_page(
        self, prefix: str, revision: int, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Entries under `prefix` as they were at `revision`, in key order, after
        `start_after`, at most `limit`. Raises StorageCompacted, StorageUnavailable,
        ValueError."""
        if revision < 0:
            raise ValueError(f"revision {revision} is negative")
        return await self._range_page(prefix, start_after, limit, max(revision, 1))

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        """Apply every operation in one etcd Txn if every compare holds; return the commit's
        revision (the current one when nothing changed). Raises StorageConflict (nothing
        applied), StorageUnavailable, and ValueError when a key appears twice."""
        check_unique_keys(ops)
        if not ops:
            return await self.revision()
        response, retried = await self._call("Txn", txn_request(ops))
        if response.succeeded:
            return int(response.header.revision)
        found = failure_state(ops, response)
        if retried:
            committed = committed_revision(ops, found, int(response.header.revision))
            if committed is not None:
                return committed
        raise StorageConflict(conflict_message(ops, found))

    async def revision(self) -> int:
        """The store's current revision (linearizable). Raises StorageUnavailable."""
        request = rpc.RangeRequest(key=_ALL_KEYS, count_only=True)
        response, _ = await self._call("Range", request)
        return int(response.header.revision)

    def watch_from(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        """Changes under `prefix` from `revision` on, then live ones, across member failures;
        ends when the store closes. Raises StorageCompacted (on iteration) when etcd no longer
        keeps that history, also when a slow consumer falls behind a compaction."""
        return self._watch(prefix, revision)

    async def close(self) -> None:
        """Close every channel and end every watcher. Idempotent."""
        self._closed = True
        for member in self._members:
            await member.close()

    async def _call(self, method: str, request: Any) -> tuple[Any, bool]:
        """One unary KV call with failover. Returns (response, whether an earlier attempt may
        have reached etcd). Raises StorageUnavailable when `retry_budget` runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget
        retried = False
        attempt = 0
        while True:
            self._check_open()
            index = self._current
            stub = self._members[index].open().kv
            timeout = max(0.01, min(self._timeout, deadline - loop.time()))
            try:
                response = await getattr(stub, method)(
                    request, timeout=timeout, metadata=_REQUIRE_LEADER
                )
            except grpc.aio.AioRpcError as exc:
                self._check_open()
                details = exc.details() or ""
                if "required revision has been compacted" in details:
                    raise StorageCompacted(f"etcd {method}: {details}") from exc
                if "required revision is a future revision" in details:
                    raise ValueError(f"etcd {method}: {details}") from exc
                if not _fails_over(exc):
                    raise StorageUnavailable(f"etcd {method}: {exc.details()}") from exc
                failure = f"{self.endpoints[index]}: {exc.code().name} {exc.details()}"
            except asyncio.CancelledError:
                if self._closed_under_us():
                    raise StorageUnavailable("storage is closed") from None
                raise
            else:
                return response, retried
            retried = True
            attempt += 1
            self._advance(index)
            pause = 0.0
            if attempt % len(self._members) == 0:  # a whole round failed: back off, then retry
                pause = min(0.5, 0.05 * 2 ** (attempt // len(self._members) - 1))
            if loop.time() + pause >= deadline:
                raise StorageUnavailable(
                    f"etcd cannot serve {method} (no quorum or no member reachable within "
                    f"{self._budget:.1f} s); last error: {failure}"
                )
            await asyncio.sleep(pause)

    async def _watch(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        key = prefix.encode()
        create = rpc.WatchCreateRequest(key=key or _ALL_KEYS, range_end=_prefix_end(key))
        next_revision = max(revision, 1)
        index = self._current
        failures = 0
        while not self._closed:
            create.start_revision = next_revision
            call = self._members[index].open().watch.Watch(metadata=_REQUIRE_LEADER)
            try:
                await call.write(rpc.WatchRequest(create_request=create))
                async with asyncio.timeout(self._timeout):
                    response = await call.read()
                while response is not grpc.aio.EOF:
                    if response.compact_revision:
                        raise StorageCompacted(
                            f"revision {next_revision} is compacted (etcd keeps history from "
                            f"{response.compact_revision})"
                        )
                    if response.canceled:
                        break
                    if response.events or not response.created:
                        failures = 0  # events or a progress answer: this member serves
                    for event in response.events:
                        yield _event(event)
                    if response.events:
                        next_revision = int(response.events[-1].kv.mod_revision) + 1
                    response = await self._next_or_hung(call)
            except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError):
                # The member died, hung or lost its leader (InvalidStateError: the stream ended
                # just as a progress request was written): go on with the next one.
                pass
            except asyncio.CancelledError:
                if not self._closed_under_us():
                    raise
            finally:
                call.cancel()
            if self._closed:
                return
            index = (index + 1) % len(self._members)
            failures += 1
            if failures >= len(self._members):
                await asyncio.sleep(self._watch_backoff)

    async def _next_or_hung(self, call: Any) -> Any:
        """The watch stream's next response. A stream quiet for `WATCH_PROBE_AFTER` seconds is
        asked for progress; a member that does not answer within `WATCH_PROGRESS_TIMEOUT` is
        hung (stopped, starved, cut off): TimeoutError, and the caller moves to the next member.
        gRPC keepalive alone took ~13 s to notice, and the partition's cache was stale
        meanwhile. Leaving a member that was only slow costs a new stream, resumed from the
        next revision."""
        read = asyncio.ensure_future(call.read())
        try:
            done, _ = await asyncio.wait({read}, timeout=WATCH_PROBE_AFTER)
            if not done:
                await call.write(rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()))
                done, _ = await asyncio.wait({read}, timeout=WATCH_PROGRESS_TIMEOUT)
            if not done:
                raise TimeoutError("etcd watch: no progress from the member")
            return read.result()
        finally:
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await read

    def _advance(self, failed: int) -> None:
        """Move the current member past `failed` (once, however many calls saw it fail)."""
        if self._current == failed:
            self._current = (failed + 1) % len(self._members)

    def _closed_under_us(self) -> bool:
        """Whether a CancelledError came from close() closing a channel, not from a cancel of
        the calling task (which must propagate)."""
        task = asyncio.current_task()
        return self._closed and (task is None or task.cancelling() == 0)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageUnavailable("storage is closed")


def _fails_over(exc: Any) -> bool:
    """Whether another member (or a later attempt) may succeed where `exc` failed. etcd reports
    its own side of a deadline race as UNKNOWN "context deadline exceeded"."""
    code = exc.code()
    if code in _FAILOVER_CODES:
        return True
    return bool(code == grpc.StatusCode.UNKNOWN and "deadline exceeded" in (exc.details() or ""))


def _event(event: Any) -> Event:
    kv = event.kv
    if event.type == rpc.Event.EventType.Value("DELETE"):
        return Event("delete", kv.key.decode(), b"", int(kv.mod_revision))
    return Event("put", kv.key.decode(), bytes(kv.value), int(kv.mod_revision))


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key above every key starting with `prefix` (`\\0`: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return _ALL_KEYS
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _endpoint(endpoint: str) -> str:
    bare = endpoint.removeprefix("http://").rstrip("/")
    host, _, port = bare.rpartition(":")
    if not host or not port.isdigit() or "/" in bare:
        raise ValueError(f"expected an etcd endpoint host:port, got {endpoint!r}")
    return bare
