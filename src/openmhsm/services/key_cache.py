"""The partition's in-memory copy of the key records, kept coherent with storage.

Reads and crypto are served from here (DESIGN §2). The cache is loaded once from a listing at
revision R, then follows the storage watch from R+1; the partition's own writes are applied as
soon as storage commits them, so a writer always reads its own write. An entry is replaced only by
a change with a higher revision, which makes own writes and watch events commute. A miss on a key
name reads storage through (another partition may have just written it).

Other services keep their records here too, to share the one watch and the same rules: an
`Index` attached to a prefix under `rbac/` is told every change that wins, with the record
already parsed for the partition's own writes, and is rebuilt by replay when it attaches or
after a reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from openmhsm.errors import Conflict, StorageConflict, StorageUnavailable
from openmhsm.services import fence, records
from openmhsm.storage.base import Event, Put, Storage, StorageCompacted, TxnOp
from openmhsm.storage.group_commit import GroupCommit

log = logging.getLogger(__name__)

KEY_PREFIXES = ("keys/", "deleted/")
PREFIXES = (*KEY_PREFIXES, "rbac/", "jobs/")
WRITE_RETRIES = 12
WRITE_CATCH_UP = 0.25  # seconds a write waits for the watch before it reads storage itself
T = TypeVar("T")
Change = tuple[TxnOp, Any]
Attempt = tuple[list[Change], T]
_PARSERS: dict[str, Callable[[bytes], Any]] = {
    records.CURRENT: records.load_current,
    records.POLICY: records.load_policy,
}


class Index(Protocol):
    """A service's own view of the records under one prefix, fed by the cache."""

    def reset(self) -> None:
        """Forget every record (a replay follows)."""

    def apply(self, kind: str, path: str, value: bytes | None, parsed: Any) -> None:
        """One change that won: `kind` is "put" or "delete"; `parsed` may be None."""


def _parse(path: str, value: bytes) -> Any:
    if path.startswith("deleted/"):
        return records.load_deleted(value)
    leaf = path.rsplit("/", 1)[1]
    return _PARSERS.get(leaf, records.load_version)(value)


class KeyCache:
    """Raw records by path, parsed lazily and memoised; revisions decide which change wins."""

    def __init__(self, store: Storage) -> None:
        self._store = store
        self._commits = GroupCommit(store)  # concurrent writes share a storage transaction
        self._raw: dict[str, tuple[int, bytes | None]] = {}
        self._parsed: dict[str, Any] = {}
        self._by_name: dict[str, set[str]] = {}
        self._deleted: set[str] = set()
        self.revision = 0
        self._follower: asyncio.Task[None] | None = None
        self._indexes: dict[str, Index] = {}
        self._watched = 0  # every change up to this revision has come through the watch
        self._advanced = asyncio.Event()

    def attach(self, prefix: str, index: Index) -> None:
        """Feed `index` every change under `prefix` (one of PREFIXES, not a key prefix), starting
        with a replay of the records already loaded."""
        if not prefix.startswith(PREFIXES) or prefix.startswith(KEY_PREFIXES):
            raise ValueError(f"cannot index {prefix!r}")
        self._indexes[prefix] = index
        index.reset()
        for path, (_, value) in sorted(self._raw.items()):
            if path.startswith(prefix) and value is not None:
                index.apply("put", path, value, None)

    def _index_of(self, path: str) -> Index | None:
        for prefix, index in self._indexes.items():
            if path.startswith(prefix):
                return index
        return None

    # --- loading and following -------------------------------------------------------------

    async def load(self) -> None:
        """List every record and start following changes from the listing's revision."""
        revision = await self._store.revision()
        for prefix in PREFIXES:
            start: str | None = None
            while True:
                page = await self._store.list_page(prefix, start_after=start, limit=500)
                for entry in page:
                    self.apply("put", entry.key, entry.value, entry.mod_revision)
                if len(page) < 500:
                    break
                start = page[-1].key
        self.revision = max(self.revision, revision)
        self._note_watched(revision)
        self._follower = asyncio.create_task(self._follow(revision + 1))

    def _note_watched(self, revision: int) -> None:
        self._watched = max(self._watched, revision)
        self._advanced.set()

    async def catch_up(self, timeout: float = 1.0) -> bool:
        """Wait until the watch has delivered every change storage had committed when this was
        called (another partition's fresh write). False after `timeout` seconds, or at once
        when storage cannot answer (the cache is then as good as it gets)."""
        try:
            async with asyncio.timeout(timeout):
                target = await self._store.revision()
                while self._watched < target:
                    self._advanced.clear()
                    await self._advanced.wait()
        except (TimeoutError, StorageUnavailable):
            return False
        return True

    async def close(self) -> None:
        await self._commits.close()
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
            self._follower = None

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async for event in self._store.watch_from("", revision):
                    if event.key.startswith(PREFIXES):
                        self.apply_event(event)
                    revision = event.revision + 1
                    # Noted per event: a waiter woken in the middle of a transaction's events
                    # (one RBAC write is one event) sees the rest a moment later.
                    self._note_watched(event.revision)
                await asyncio.sleep(0.5)  # the stream ended (storage closing): do not spin
            except asyncio.CancelledError:
                raise
            except StorageCompacted:
                log.warning("key cache fell behind compaction; reloading")
                self._raw.clear()
                self._parsed.clear()
                self._by_name.clear()
                self._deleted.clear()
                for index in self._indexes.values():
                    index.reset()
                await self.load()
                return
            except Exception:
                log.exception("key cache watch failed; retrying")
                await asyncio.sleep(0.5)

    def apply_event(self, event: Event) -> None:
        self.apply(event.kind, event.key, event.value, event.revision)

    def apply(
        self, kind: str, path: str, value: bytes | None, revision: int, parsed: Any = None
    ) -> None:
        """Apply one change unless the cache already holds a newer one for that path.
        `parsed` is the record already parsed, for the partition's own writes."""
        known = self._raw.get(path)
        if known is not None and known[0] >= revision:
            return
        self.revision = max(self.revision, revision)
        if not path.startswith(KEY_PREFIXES):
            self._raw[path] = (revision, value if kind == "put" else None)
            index = self._index_of(path)
            if index is not None:
                index.apply(kind, path, value if kind == "put" else None, parsed)
            return
        if parsed is None:
            self._parsed.pop(path, None)
        else:
            self._parsed[path] = parsed
        if path.startswith("deleted/"):
            name = path.split("/", 1)[1]
            if kind == "put":
                self._deleted.add(name)
            else:
                self._deleted.discard(name)
        else:
            name = path.split("/", 2)[1]
            leaves = self._by_name.setdefault(name, set())
            if kind == "put":
                leaves.add(path)
            else:
                leaves.discard(path)
                if not leaves:
                    del self._by_name[name]
        self._raw[path] = (revision, value if kind == "put" else None)

    async def commit(self, changes: Sequence[Change]) -> int:
        """Commit operations as one storage transaction (perhaps shared with concurrent
        writers' in a group commit), then apply them here at once, so the writer reads its own
        write. Raises StorageConflict / StorageUnavailable unchanged."""
        revision = await self._commits.txn([*(op for op, _ in changes), fence.GUARD])
        for op, parsed in changes:
            if isinstance(op, Put):
                self.apply("put", op.key, op.value, revision, parsed)
            else:
                self.apply("delete", op.key, None, revision)
        return revision

    async def write(
        self,
        name: str,
        attempt: Callable[[], Awaitable[Attempt[T]]],
        *,
        refresh_prefix: str | None = None,
    ) -> T:
        """Build changes from the cache with `attempt` and commit them; when a concurrent
        writer wins, refresh the key `name` (or every record under `refresh_prefix`) from
        storage, pause a jittered moment and build again. Raises Conflict after WRITE_RETRIES
        lost races.

        A write is built on what the cache holds, which may lag storage (another partition's
        fresh write; a watch stuck on a hung etcd member), and compare-on-revision guards only
        the records it writes. So:
        - a key's write also guards the key's current-version pointer (`_pointer_guard`): an
          update built on a pointer another partition has since moved (a rotate) loses the race
          and is built again, instead of landing on the old version;
        - a write under `refresh_prefix` (role assignments and definitions) first waits up to
          `WRITE_CATCH_UP` seconds for the watch to reach storage's revision, else reads the
          prefix from storage: those writes read records they do not write (a delete's lookup,
          a definition's name among the others).
        """
        if refresh_prefix is not None and not await self.catch_up(WRITE_CATCH_UP):
            await self.refresh(refresh_prefix)
        for n in range(WRITE_RETRIES):
            changes, result = await attempt()
            if refresh_prefix is None:
                changes = self._pointer_guard(name, changes)
            try:
                await self.commit(changes)
                return result
            except StorageConflict:
                await fence.raise_if_fenced(self._store)
                if refresh_prefix is None:
                    await self.read_through(name)
                else:
                    await self.refresh(refresh_prefix)
                # Jitter, not a secret: the standard generator is right for it.
                jitter = random.uniform(0, min(0.05, 0.001 * 2**n))  # noqa: S311  # nosec B311
                await asyncio.sleep(jitter)
        what = "Key" if refresh_prefix is None else "Record"
        raise Conflict(f"{what} '{name}' is being changed concurrently; try again.")

    def _pointer_guard(self, name: str, changes: list[Change]) -> list[Change]:
        """`changes` plus the key's current-version pointer written back unchanged at the
        revision this cache knows, unless the changes write or delete the pointer already (a
        create, rotate or delete) or there is none. Cheaper than a linearizable read per write:
        the guard rides in the same transaction."""
        pointer = records.current_path(name)
        if any(op.key == pointer for op, _ in changes):
            return changes
        known = self._raw.get(pointer)
        if known is None or known[1] is None or not changes:
            return changes
        return [*changes, (Put(pointer, known[1], known[0]), self._parsed.get(pointer))]

    async def raise_if_fenced(self) -> None:
        """Raise ServiceUnavailable while a full restore holds the fence (for a caller about
        to report a lost race as a Conflict)."""
        await fence.raise_if_fenced(self._store)

    # --- reads -----------------------------------------------------------------------------

    def get(self, path: str) -> tuple[Any, int] | None:
        """The parsed record at `path` and its revision, or None."""
        known = self._raw.get(path)
        if known is None or known[1] is None:
            return None
        parsed = self._parsed.get(path)
        if parsed is None:
            parsed = _parse(path, known[1])
            self._parsed[path] = parsed
        return parsed, known[0]

    def revision_of(self, path: str) -> int:
        """The revision of a live record, or 0 when there is none (for compare-on-revision)."""
        known = self._raw.get(path)
        return known[0] if known is not None and known[1] is not None else 0

    def count(self, prefixes: Sequence[str]) -> int:
        """How many live records the cache holds under these prefixes."""
        wanted = tuple(prefixes)
        return sum(1 for p, (_, v) in self._raw.items() if v is not None and p.startswith(wanted))

    def paths_of(self, name: str) -> set[str]:
        return set(self._by_name.get(name.lower(), ()))

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def deleted_names(self) -> list[str]:
        return sorted(self._deleted)

    def iter_versions(self, name: str) -> Iterator[str]:
        for path in sorted(self._by_name.get(name.lower(), ())):
            if not path.rsplit("/", 1)[1].startswith("@"):
                yield path

    async def read_through(self, name: str) -> None:
        """Refresh every record of one name from storage (a miss may be another partition's
        fresh write, a stale hit another partition's delete that the watch has not delivered)."""
        lname = name.lower()
        revision = await self._store.revision()
        page = await self._store.list_page(records.key_prefix(lname), limit=10_000)
        listed = {entry.key for entry in page}
        for entry in page:
            self.apply("put", entry.key, entry.value, entry.mod_revision)
        deleted = await self._store.get(records.deleted_path(lname))
        if deleted is not None:
            listed.add(deleted.key)
            self.apply("put", deleted.key, deleted.value, deleted.mod_revision)
        for path in [*self.paths_of(lname), records.deleted_path(lname)]:
            if path not in listed and self.revision_of(path) < revision:
                self.apply("delete", path, None, revision)

    async def refresh(self, prefix: str) -> None:
        """Re-read every record under an indexed prefix from storage (after a lost race)."""
        revision = await self._store.revision()
        listed: set[str] = set()
        start: str | None = None
        while True:
            page = await self._store.list_page(prefix, start_after=start, limit=500)
            for entry in page:
                listed.add(entry.key)
                self.apply("put", entry.key, entry.value, entry.mod_revision)
            if len(page) < 500:
                break
            start = page[-1].key
        for path, (known, value) in list(self._raw.items()):
            gone = path.startswith(prefix) and value is not None and path not in listed
            if gone and known < revision:
                self.apply("delete", path, None, revision)
