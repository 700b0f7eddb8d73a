"""Group commit: concurrent transactions of one partition share one storage transaction.

A commit costs the storage a consensus round, a disk sync and a gRPC call whatever it holds, and
under a burst of creates that cost, not the work, decided the throughput (issue 9). While one
transaction is in flight, the transactions that arrive wait and then go together in the next
one. A lone writer waits for nothing.

A shared transaction commits every member or none, so members are only grouped when that
changes nothing a member can observe:
- no two members touch the same key, except that the same assertion that a key is absent
  (`Delete(key, 0)`, such as the restore fence's guard) is made once for all of them;
- the shared transaction stays within `max_ops` operations (etcd refuses larger ones; its
  default limit is 128).
When a shared transaction fails on a compare (StorageConflict) or is refused as malformed
(ValueError), each member is committed alone, so it gets its own outcome. Any other error
(StorageUnavailable) is every member's: each may or may not have committed, as with a lone
transaction that fails in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from openmhsm.errors import StorageConflict
from openmhsm.storage.base import Delete, Storage, TxnOp

MAX_OPS: Final = 100


@dataclass
class _Member:
    ops: list[TxnOp]
    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _shared(op: TxnOp) -> bool:
    """An assertion that a key is absent, which any number of members may make at once."""
    return isinstance(op, Delete) and op.expected_revision == 0


class GroupCommit:
    """`txn` as the storage's, with concurrent calls grouped (see the module docstring)."""

    def __init__(self, store: Storage, max_ops: int = MAX_OPS) -> None:
        self._store = store
        self._max_ops = max_ops
        self._queue: list[_Member] = []
        self._busy = False  # a transaction is in flight: newcomers queue
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0  # storage transactions sent (for tests and metrics)

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        """Commit `ops` atomically (alone or with others); the revision it committed at.
        Raises what the storage raises for them."""
        if not self._busy:  # nothing in flight: go at once, in the caller's own task
            self._busy = True
            try:
                self.transactions += 1
                return await self._store.txn(ops)
            finally:
                self._busy = False
                if self._queue:
                    self._start_flusher()
        member = _Member(list(ops))
        self._queue.append(member)
        return await asyncio.shield(member.done)

    def _start_flusher(self) -> None:
        self._busy = True
        self._flusher = asyncio.create_task(self._flush(), name="group-commit")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    async def _flush(self) -> None:
        try:
            await self._flush_queue()
        finally:
            self._busy = False

    async def _flush_queue(self) -> None:
        while self._queue:
            batch = self._take()
            if len(batch) == 1:
                await self._alone(batch[0])
                continue
            merged: dict[str, TxnOp] = {}
            for member in batch:
                merged.update((op.key, op) for op in member.ops)
            try:
                self.transactions += 1
                revision = await self._store.txn(list(merged.values()))
            except (StorageConflict, ValueError):
                for member in batch:
                    await self._alone(member)
            except Exception as exc:  # StorageUnavailable and the like: everyone's outcome
                for member in batch:
                    _settle(member, exc)
            else:
                for member in batch:
                    _settle(member, revision)

    def _take(self) -> list[_Member]:
        """The longest run of queued members, in order, that can share a transaction; the
        others stay queued in order."""
        batch: list[_Member] = []
        keys: dict[str, TxnOp] = {}
        rest: list[_Member] = []
        for member in self._queue:
            own = {op.key: op for op in member.ops}
            fits = len(keys.keys() | own.keys()) <= self._max_ops and all(
                key not in keys or (_shared(op) and keys[key] == op) for key, op in own.items()
            )
            if (fits and not rest) or not batch:
                batch.append(member)
                keys.update(own)
            else:
                rest.append(member)
        self._queue = rest
        return batch

    async def _alone(self, member: _Member) -> None:
        try:
            self.transactions += 1
            _settle(member, await self._store.txn(member.ops))
        except Exception as exc:
            _settle(member, exc)


def _settle(member: _Member, outcome: int | BaseException) -> None:
    if member.done.done():
        return
    if isinstance(outcome, BaseException):
        member.done.set_exception(outcome)
    else:
        member.done.set_result(outcome)
