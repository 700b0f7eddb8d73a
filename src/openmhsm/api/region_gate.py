"""The write gate of an extended region (DESIGN §8): it serves reads and crypto from its replica
and refuses every other call with 403 `ReadOnlyRegion`, naming the primary, until write
forwarding exists. Token endpoints are public routes and never reach it."""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from openmhsm.api.key_ops import OPERATIONS
from openmhsm.errors import Forbidden

READ_METHODS: Final = frozenset({"GET", "HEAD"})
# POSTs that change nothing: the key operations, secure key release and random bytes.
READ_POSTS: Final = frozenset({*OPERATIONS, "release", "rng"})
INNER_CODE: Final = "ReadOnlyRegion"


def is_read(method: str, path: str) -> bool:
    """Whether the request `method path` leaves the pool's state as it was."""
    if method in READ_METHODS:
        return True
    return method == "POST" and path.rstrip("/").rsplit("/", 1)[-1].lower() in READ_POSTS


class ReadOnlyGate:
    """Refuses writes with 403 Forbidden, inner code `ReadOnlyRegion`."""

    def __init__(self, app: ASGIApp, primary_url: str) -> None:
        self.app = app
        self.primary_url = primary_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_read(scope["method"], scope["path"]):
            raise Forbidden(
                "This is an extended region of the pool and holds a read-only replica: "
                f"writes go to the primary region at {self.primary_url}.",
                inner_code=INNER_CODE,
            )
        await self.app(scope, receive, send)
