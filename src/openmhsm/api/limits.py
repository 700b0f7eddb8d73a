"""Limits on what a client may send and how slowly: the size and number of a request's head
fields, and deadlines for its head and its body (slow clients, "slowloris").

uvicorn's httptools protocol enforces none of these: httptools buffers a header of any size,
and no timer runs while a request is arriving (uvicorn's keep-alive timer runs only between
requests, and any byte cancels it). `LimitedHttpToolsProtocol` adds them where the bytes
arrive, before the app sees a request:

- a head (request line and headers) over `MAX_HEAD_BYTES` gets 431, or 414 for the URL alone,
  and more than `MAX_HEADERS` headers get 431;
- a head must be complete `HEAD_TIMEOUT` seconds after the connection opened or the request's
  first byte came, and a body `BODY_TIMEOUT` seconds after its head: else 408 and the
  connection is closed. The clock stops while the server itself has paused reading.

Answers are in Key Vault's error shape with `Connection: close`. The body's size is limited by
the handlers that read it (`wire.MAX_BODY`, 413). The TLS handshake before any of this is
bounded by asyncio's own 60 s handshake timeout.

`EndOnDisconnect` is the ASGI side: a client that disconnects (or is cut off by the body
deadline) while its body is read ends the request as 408, not as an internal error with a
traceback in the log.
"""

from __future__ import annotations

import asyncio
import http
import json
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from openmhsm.api.errors import error_body

MAX_HEAD_BYTES = 16 * 1024  # as HTTP.sys, the front end of Azure's services, allows by default
MAX_HEADERS = 100
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
_FIELD_OVERHEAD = 4  # ": " and CRLF around each header
# A timer that fires looks again this much later, once the reads pending meanwhile have run:
# after a stall (a stopped or starved process), uvloop runs due timers before it reads, and the
# client's request, sent in time, sits unread in the socket.
RECHECK = 0.05
_INCOMPLETE = "The client closed the connection, or sent the request too slowly."


def refusal(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response in Key Vault's error shape that closes the connection."""
    body = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    phrase = http.HTTPStatus(status).phrase
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "content-type: application/json; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


HEAD_TOO_LARGE = refusal(
    431,
    "RequestHeaderFieldsTooLarge",
    f"The request headers must be at most {MAX_HEAD_BYTES} bytes and {MAX_HEADERS} fields.",
)
URL_TOO_LONG = refusal(414, "RequestUriTooLong", f"The URL must be at most {MAX_HEAD_BYTES} bytes.")
TOO_SLOW = refusal(408, "RequestTimeout", "The request did not arrive in time.")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head limits and head and body deadlines."""

    head_timeout = HEAD_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = "head"  # "head" (awaiting or reading one), "body", "idle" (answering)
        self._deadline: asyncio.TimerHandle | None = None
        self._stopped_with: float | None = None  # time left when the server paused reading
        self._head_bytes = 0  # bytes of reads that fell wholly within the current head
        self._url_bytes = 0
        self._fields = 0
        self._field_bytes = 0
        self._began = False
        self._oversized: bytes | None = None
        self._refused = False
        self._idle_rechecked = False  # the keep-alive timer fired once and looks again
        self._late_rechecked = False  # the head or body deadline did
        self.draining = False  # the server is stopping: answer with `Connection: close`

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.flow = _ReadClock(self.transport, self)
        self._arm(self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._idle_rechecked = False  # any byte cancels the keep-alive timer anyway
        if self._refused:
            return
        was_head, self._began = self._phase == "head", False
        if self._phase == "idle":
            self._phase = "head"  # the next request's first bytes, or stray line breaks
        super().data_received(data)
        if self._refused or self._phase != "head":
            return
        if was_head and not self._began:
            self._head_bytes += len(data)  # every byte of this read belongs to the head
            if self._head_bytes > MAX_HEAD_BYTES:
                self._oversized = HEAD_TOO_LARGE
        if self._oversized is not None:
            self._refuse(self._oversized)
        elif self._deadline is None:
            self._arm(self.head_timeout)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._began, self._phase = True, "head"
        self._head_bytes = self._url_bytes = self._fields = self._field_bytes = 0
        if self._deadline is None:
            self._arm(self.head_timeout)

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        super().on_url(url)
        self._url_bytes += len(url)
        if self._url_bytes > MAX_HEAD_BYTES:
            self._oversized = self._oversized or URL_TOO_LONG

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        super().on_header(name, value)
        self._fields += 1
        self._field_bytes += len(name) + len(value) + _FIELD_OVERHEAD
        if self._fields > MAX_HEADERS or self._url_bytes + self._field_bytes > MAX_HEAD_BYTES:
            self._oversized = self._oversized or HEAD_TOO_LARGE

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if self._oversized is not None:
            self._refuse(self._oversized)  # the app never sees this request
            return
        super().on_headers_complete()
        if self.draining:
            self.cycle.keep_alive = False
        self._phase = "body"
        self._arm(self.body_timeout)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._phase = "idle"
        self._disarm()

    # deadlines and refusals

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._late_rechecked = False
        self._deadline = self.loop.call_later(seconds, self._late)

    def _disarm(self) -> None:
        self._stopped_with = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def stop_clock(self) -> None:
        """The server paused reading: the client's time does not run meanwhile."""
        if self._deadline is not None:
            left = max(0.0, self._deadline.when() - self.loop.time())
            self._disarm()
            self._stopped_with = left

    def start_clock(self) -> None:
        left, self._stopped_with = self._stopped_with, None
        if left is not None and not self._refused and self._phase != "idle":
            self._arm(left)

    def timeout_keep_alive_handler(self) -> None:
        """Close an idle connection, unless a request arrived while the process stalled: look
        again after `RECHECK`, when its bytes have been read and have cancelled this timer."""
        if not self._idle_rechecked:
            self._idle_rechecked = True
            self.timeout_keep_alive_task = self.loop.call_later(
                RECHECK, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    def _late(self) -> None:
        self._deadline = None
        if not self._late_rechecked:  # once per deadline: bytes read meanwhile do not extend it
            self._late_rechecked = True
            self._deadline = self.loop.call_later(RECHECK, self._late)
            return
        if self._refused or self._phase == "idle" or self.transport.is_closing():
            return
        if self.flow.read_paused:  # armed while the server was not reading: not the client's delay
            self._arm(self.body_timeout if self._phase == "body" else self.head_timeout)
            self.stop_clock()
            return
        self._refuse(TOO_SLOW)

    def _refuse(self, response: bytes) -> None:
        """Answer `response` and close; stop reading either way."""
        self._refused = True
        self._disarm()
        cycle = self.cycle
        if self._phase == "body" and cycle is not None:  # the request whose body is late
            if not cycle.response_complete:
                # The app's request ends now: its reads see a disconnect, its writes go nowhere.
                cycle.disconnected = True
                cycle.message_event.set()
            if not cycle.response_started:
                self.transport.write(response)
            self.transport.close()
        elif cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False  # a previous request is being answered: close after it
        else:
            self.transport.write(response)
            self.transport.close()


class _ReadClock(FlowControl):
    """uvicorn's flow control, telling the protocol when the server pauses and resumes reading
    (to buffer at most 64 KiB of a body the app has not asked for yet)."""

    def __init__(self, transport: asyncio.Transport, protocol: LimitedHttpToolsProtocol) -> None:
        super().__init__(transport)
        self._protocol = protocol

    def pause_reading(self) -> None:
        if not self.read_paused:
            self._protocol.stop_clock()
        super().pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self._protocol.start_clock()
        super().resume_reading()


class EndOnDisconnect:
    """A request whose client went away while its body was read ends as 408, quietly."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            if started:
                return
            # Nobody reads this answer; the audit and metrics policies above record it.
            response = JSONResponse(error_body("RequestTimeout", _INCOMPLETE), status_code=408)
            await response(scope, receive, send)
