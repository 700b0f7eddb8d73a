"""The region link (DESIGN §8): what each region of a two-region pool knows of its role and of its
peer, kept in its own storage at `<prefix>region/link` (region-local, never replicated).

The record is plaintext: it names URLs, etcd endpoints, join ports and a term, no secret. Its
writer is the region's supervisor (or `mhsm region add`); the partitions read it to decide whether
they take writes or forward them, and whose tokens they accept.

Roles move by terms. `mhsm region add` gives the primary term 1 and the extended region the same
term. A promotion takes the extended region to `primary` at term + 1; a primary that sees its peer
as primary at a higher term steps down to `extended` at that term (it was failed over while it was
away). Two primaries at one term cannot arise: only an extended region promotes, and always above
the term it followed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from openmhsm.storage.base import Storage

LINK: Final = "region/link"
LINK_FORMAT: Final = 1

Role = Literal["primary", "extended"]


@dataclass(frozen=True, slots=True)
class Peer:
    """How to reach the other region: its URL, its etcd client endpoints ("host:port", which the
    replicator follows) and its partitions' join endpoints (for the domain secrets)."""

    url: str
    etcd: tuple[str, ...]
    join: tuple[tuple[str, int], ...] = ()

    @property
    def storage(self) -> str:
        return "etcd://" + ",".join(self.etcd)

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "etcd": list(self.etcd), "join": [list(j) for j in self.join]}

    @classmethod
    def from_json(cls, obj: Any) -> Peer:
        """Raises ValueError, KeyError or TypeError for a malformed peer."""
        if not isinstance(obj, dict):
            raise ValueError("the peer must be an object")
        etcd = tuple(str(e) for e in obj["etcd"])
        if not etcd or not str(obj["url"]).startswith("https://"):
            raise ValueError("a peer needs an https URL and etcd endpoints")
        join = tuple((str(host), int(port)) for host, port in obj.get("join", []))
        return cls(url=str(obj["url"]), etcd=etcd, join=join)


@dataclass(frozen=True, slots=True)
class RegionLink:
    """One region's role at `term`, its own URL, and its peer."""

    role: Role
    term: int
    url: str
    peer: Peer
    promoted: dict[str, Any] | None = None  # {"from_revision", "time"}: when it took over
    lost_writes: dict[str, Any] | None = None  # {"count", "names", "time"}: left unreplicated
    history: tuple[dict[str, Any], ...] = field(default=())
    failover_after: float = 30.0  # seconds without the primary before an extended region takes over

    def __post_init__(self) -> None:
        if self.role not in ("primary", "extended"):
            raise ValueError(f"unknown region role: {self.role!r}")
        if self.term < 1:
            raise ValueError("a region term starts at 1")

    @property
    def forwards_to(self) -> str | None:
        """Where writes go from here: the peer's URL in an extended region, else None."""
        return self.peer.url if self.role == "extended" else None

    def promote(self, from_revision: int, now: float) -> RegionLink:
        """This (extended) region as the primary, one term above, having replicated the old
        primary's storage up to `from_revision`."""
        promoted = {"from_revision": from_revision, "time": now, "term": self.term + 1}
        return dataclasses.replace(
            self,
            role="primary",
            term=self.term + 1,
            promoted=promoted,
            history=(*self.history, {"event": "promoted", **promoted}),
        )

    def step_down(self, term: int, lost: dict[str, Any], now: float) -> RegionLink:
        """This (old primary) region as the extended region of its promoted peer at `term`."""
        lost_writes = {**lost, "time": now, "term": term}
        return dataclasses.replace(
            self,
            role="extended",
            term=term,
            lost_writes=lost_writes,
            history=(*self.history, {"event": "stepped down", **lost_writes}),
        )

    def with_lost_writes(self, lost: dict[str, Any]) -> RegionLink:
        """This link with the count and names of the lost writes, once they are known."""
        lost_writes = {**(self.lost_writes or {}), **lost}
        history = self.history[:-1] if self.history else ()
        return dataclasses.replace(
            self,
            lost_writes=lost_writes,
            history=(*history, {"event": "stepped down", **lost_writes}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LINK_FORMAT,
            "role": self.role,
            "term": self.term,
            "url": self.url,
            "peer": self.peer.to_json(),
            "promoted": self.promoted,
            "lost_writes": self.lost_writes,
            "history": list(self.history[-20:]),
            "failover_after": self.failover_after,
        }

    @classmethod
    def from_json(cls, obj: Any) -> RegionLink:
        """Raises ValueError for a malformed link or one of a format we do not know."""
        try:
            if not isinstance(obj, dict) or obj.get("format") != LINK_FORMAT:
                raise ValueError("not a region link of a known format")
            return cls(
                role=obj["role"],
                term=int(obj["term"]),
                url=str(obj["url"]),
                peer=Peer.from_json(obj["peer"]),
                promoted=_optional_object(obj.get("promoted")),
                lost_writes=_optional_object(obj.get("lost_writes")),
                history=tuple(h for h in obj.get("history", []) if isinstance(h, dict)),
                failover_after=check_failover_after(obj.get("failover_after", 30.0)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed region link: {exc}") from None

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> RegionLink:
        """Raises ValueError for anything but a well-formed link."""
        try:
            return cls.from_json(json.loads(value))
        except UnicodeDecodeError as exc:
            raise ValueError(f"malformed region link: {exc}") from None


def check_failover_after(value: Any) -> float:
    """Seconds without the primary before a promotion: 0 (by command only) to a day. Raises
    ValueError."""
    seconds = float(value)
    if not 0 <= seconds <= 86400:  # NaN fails this too
        raise ValueError("failover_after must be between 0 and 86400 seconds")
    return seconds


def _optional_object(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None


async def read_link(storage: Storage, prefix: str) -> RegionLink | None:
    """The link in `storage` for the pool at `prefix`, or None when there is none. Raises
    ValueError for a malformed one, StorageUnavailable."""
    entry = await storage.get(prefix + LINK)
    return None if entry is None else RegionLink.decode(entry.value)


async def write_link(storage: Storage, prefix: str, link: RegionLink) -> int:
    """Store `link`; returns the storage revision. Raises StorageUnavailable."""
    return await storage.put_if(prefix + LINK, link.encode())
