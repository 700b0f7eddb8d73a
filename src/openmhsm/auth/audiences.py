"""Which token audiences a partition accepts (DESIGN §6, §8).

A token's audience is the challenge resource of the host a client called (`resource_for_host`).
A partition accepts the resource of every name the pool serves on any port, since one pool is
reached on its pool port, each partition's own port and perhaps a front door's, and the resource
of its peer region's URL, whose tokens are signed with the same domain-derived key.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from openmhsm.auth.challenge import resource_for_host


class Audiences:
    """A callable `audience -> bool`; `trust_peer` changes the peer region as its link says."""

    def __init__(self, names: Iterable[str]) -> None:
        self._hosts = {resource_for_host(_bracketed(name)).rstrip("/") for name in names}
        self._peer: str | None = None

    def trust_peer(self, url: str | None) -> None:
        """Accept the audience of a client of the region at `url` too (None: no peer)."""
        self._peer = None if url is None else resource_for_host(urlsplit(url).netloc)

    def __call__(self, audience: str) -> bool:
        audience = audience.rstrip("/")
        if audience == self._peer or audience in self._hosts:
            return True
        base, colon, port = audience.rpartition(":")
        return bool(colon) and port.isdigit() and base in self._hosts


def _bracketed(name: str) -> str:
    return f"[{name}]" if ":" in name else name
