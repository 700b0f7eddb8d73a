"""The storage contract: a tiny, untrusted key-value store with revisions.

Storage only ever holds bytes (sealed records, except the plaintext `meta/` records). Every backend
(memory, SQLite, etcd) implements `Storage` and passes `storage/conformance.py`.

Revisions are one counter per store, as in etcd: every committed write (a put, a delete or a whole
transaction) raises it by one, and each entry remembers the revision that last modified it
(`mod_revision`). Compare-on-revision writes take `expected_revision`:
- `None`: unconditional;
- `0`: the key must not exist;
- `n > 0`: the key's `mod_revision` must be `n`.
A failed compare raises `StorageConflict` and changes nothing. A backend that cannot reach its
store or commit raises `StorageUnavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from openmhsm.errors import StorageConflict


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Put:
    """Transaction operation: write `value` at `key` if its revision is `expected_revision`."""

    key: str
    value: bytes
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Transaction operation: remove `key` if its revision is `expected_revision`.

    Deleting a missing key with `expected_revision=None` is not an error.
    """

    key: str
    expected_revision: int | None = None


TxnOp = Put | Delete


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by `watch_from`. `value` is empty for a delete."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes
    revision: int


class Storage(Protocol):
    """What every backend offers. Keys are `/`-separated strings; the pool prefix is the
    caller's."""

    async def get(self, key: str) -> Entry | None:
        """The entry at `key` (linearizable), or None."""
        ...

    async def put_if(self, key: str, value: bytes, expected_revision: int | None = None) -> int:
        """Write `value`; return the new store revision. Raises StorageConflict."""
        ...

    async def delete_if(self, key: str, expected_revision: int | None = None) -> int:
        """Remove `key`; return the new store revision. Raises StorageConflict."""
        ...

    async def list_page(
        self, prefix: str, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Entries whose key starts with `prefix`, in key order, after `start_after`, at most
        `limit` of them."""
        ...

    async def snapshot_page(
        self, prefix: str, revision: int, start_after: str | None = None, limit: int = 1000
    ) -> list[Entry]:
        """Entries under `prefix` as they were at store revision `revision` (each with the
        mod_revision it had then), in key order, after `start_after`, at most `limit`: take
        `rev = await revision()` once and page through a prefix while writes go on, for one
        consistent state. Raises StorageCompacted when the backend no longer keeps that
        revision's history, ValueError for a negative or future revision."""
        ...

    async def txn(self, ops: Sequence[TxnOp]) -> int:
        """Apply every operation atomically if every compare holds; return the new revision.
        Raises StorageConflict (nothing applied) when any compare fails."""
        ...

    async def revision(self) -> int:
        """The store's current revision."""
        ...

    def watch_from(self, prefix: str, revision: int) -> AsyncIterator[Event]:
        """Every change under `prefix` with revision >= `revision`, in order, then live changes
        until the iterator is closed. A change committed in one transaction yields one event per
        key, all with the same revision."""
        ...

    async def close(self) -> None:
        """Release connections and files. Idempotent."""
        ...


class StorageCompacted(Exception):
    """`watch_from` or `snapshot_page` was asked for a revision the backend no longer keeps
    history for."""


def check_compare(op: TxnOp, mod_revision: int) -> None:
    """Raise StorageConflict unless `op.expected_revision` holds for a key now at `mod_revision`
    (0 when the key is missing). Shared by backends that compare in the client."""
    expected = op.expected_revision
    if expected is not None and expected != mod_revision:
        raise StorageConflict(f"{op.key}: expected revision {expected}, found {mod_revision}")


def check_unique_keys(ops: Sequence[TxnOp]) -> None:
    """Raise ValueError when a transaction touches a key twice (etcd refuses it too)."""
    if len({op.key for op in ops}) != len(ops):
        raise ValueError("a transaction may touch each key only once")


def check_snapshot_revision(revision: int, current: int, oldest: int) -> None:
    """Raise ValueError unless 0 <= `revision` <= `current`, StorageCompacted when `revision` is
    below `oldest`, the oldest revision the backend can still reconstruct."""
    if revision < 0 or revision > current:
        raise ValueError(f"revision {revision} is not between 0 and the store's {current}")
    if revision < oldest:
        raise StorageCompacted(
            f"revision {revision} is compacted (snapshots reach back to {oldest})"
        )


def snapshot_merge(
    current: Sequence[Entry],
    undone: dict[str, Entry | None],
    prefix: str,
    start_after: str | None,
    limit: int,
) -> list[Entry]:
    """A snapshot page from the present state and the changes since the snapshot undone.

    `current` is the present entries under `prefix` after the page's lower bound, in key order,
    at least the first `limit` of them not in `undone` (or all there are); `undone` maps every
    key changed after the snapshot revision to its entry at that revision (None: absent then).
    The page is the first `limit` keys of (current keys not in `undone`) + (present `undone`
    entries) past the lower bound.
    """
    strict = start_after is not None and start_after >= prefix
    merged = [entry for entry in current if entry.key not in undone][:limit]
    for key, entry in undone.items():
        if entry is None or not key.startswith(prefix):
            continue
        if strict and start_after is not None and key <= start_after:
            continue
        merged.append(entry)
    merged.sort(key=lambda entry: entry.key)
    return merged[:limit]
