"""The region gate of the pool's API (DESIGN §8).

In an extended region, every request that changes the pool (and every poll of a long-running
operation, which lives in the primary) goes on to the primary through the `Forwarder`; reads and
crypto are served here from the replica. In a primary, the answer to a forwarded request carries
the newest revision this partition wrote, for which the extended region waits before answering.
The gate sits after authentication, so a stranger gets this region's 401 challenge; token
endpoints are public routes and never reach it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmhsm.api.key_ops import OPERATIONS
from openmhsm.api.wire import MAX_BODY
from openmhsm.errors import Forbidden, PayloadTooLarge
from openmhsm.region.forwarder import FORWARDED_HEADER, REVISION_HEADER, Sender

READ_METHODS: Final = frozenset({"GET", "HEAD"})
# POSTs that change nothing: the key operations, secure key release and random bytes.
READ_POSTS: Final = frozenset({*OPERATIONS, "release", "rng"})
# Paths whose state is the primary's alone: long-running operations and the security domain.
PRIMARY_PATHS: Final = ("/backup", "/restore", "/prebackup", "/prerestore", "/securitydomain",
                        "/openmhsm/jobs")  # fmt: skip
INNER_CODE: Final = "ReadOnlyRegion"
_FORWARDED = FORWARDED_HEADER.encode()


def is_read(method: str, path: str) -> bool:
    """Whether the request `method path` leaves the pool's state as it was."""
    if method in READ_METHODS:
        return True
    return method == "POST" and path.rstrip("/").rsplit("/", 1)[-1].lower() in READ_POSTS


def goes_to_primary(method: str, path: str) -> bool:
    """Whether an extended region sends `method path` on to its primary."""
    return not is_read(method, path) or path.lower().startswith(PRIMARY_PATHS)


class RegionGate:
    """Forwards what `goes_to_primary` while `forwards_to()` names a primary; marks answers to
    forwarded requests with `last_write()` otherwise."""

    def __init__(
        self,
        app: ASGIApp,
        forwards_to: Callable[[], str | None],
        sender: Sender | None,
        last_write: Callable[[], int],
    ) -> None:
        self.app = app
        self.forwards_to = forwards_to
        self.sender = sender
        self.last_write = last_write

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        primary = self.forwards_to()
        if primary is not None and goes_to_primary(scope["method"], scope["path"]):
            await self._forward(primary, scope, receive, send)
        elif any(name == _FORWARDED for name, _ in scope["headers"]):
            await self.app(scope, receive, self._marking(send))
        else:
            await self.app(scope, receive, send)

    def _marking(self, send: Send) -> Send:
        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                revision = (REVISION_HEADER.encode(), str(self.last_write()).encode())
                message = {**message, "headers": [*message.get("headers", []), revision]}
            await send(message)

        return marked

    async def _forward(self, primary: str, scope: Scope, receive: Receive, send: Send) -> None:
        if self.sender is None:
            raise Forbidden(
                "This is an extended region of the pool and holds a read-only replica: "
                f"writes go to the primary region at {primary}.",
                inner_code=INNER_CODE,
            )
        body = await _read_body(receive)
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        answer = await self.sender.send(
            primary, scope["method"], target.decode("latin-1"), headers, body
        )
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
        raw.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        await send({"type": "http.response.body", "body": answer.body})


async def _read_body(receive: Receive) -> bytes:
    """The whole request body. Raises PayloadTooLarge past MAX_BODY."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"The request body must be at most {MAX_BODY} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
