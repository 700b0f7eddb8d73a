"""Recording TCP proxies for tests that check what crosses a link (DESIGN §8: secrets never cross
regions unsealed), and the spellings of a secret such a check looks for.

`WireCapture` runs its proxies on one asyncio loop in a background thread, so the test can keep
blocking calls (the Azure SDK, `mhsm` child processes) on its own thread. Each proxy listens on a
kernel-chosen loopback port, relays to one upstream address and keeps every byte it relays, per
connection and per direction, until the capture is closed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass, field
from types import TracebackType

CHUNK = 65536
TIMEOUT = 10.0  # for starting a proxy, connecting upstream and shutting down


@dataclass
class Connection:
    """One relayed connection: what the client sent and what it got back."""

    link: str
    upstream: tuple[str, int]
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    connected: bool = False  # whether the upstream accepted the connection


class WireCapture:
    """Recording proxies; a context manager that stops them (and their loop) on exit."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._lock = threading.Lock()
        self._servers: list[asyncio.Server] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self._connections: list[Connection] = []
        self._thread.start()

    def __enter__(self) -> WireCapture:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def proxy(self, link: str, host: str, port: int) -> int:
        """Start a proxy to `host:port`, its connections recorded under `link`; its port."""
        started = asyncio.run_coroutine_threadsafe(self._listen(link, (host, port)), self._loop)
        return started.result(TIMEOUT)

    def connections(self, link: str | None = None) -> list[Connection]:
        """A copy of the connections relayed so far (under `link`, or all)."""
        with self._lock:
            return [
                Connection(c.link, c.upstream, bytearray(c.sent), bytearray(c.received),
                           c.connected)
                for c in self._connections
                if link is None or c.link == link
            ]  # fmt: skip

    def close(self) -> None:
        """Stop listening, cut every relayed connection and stop the loop. Idempotent."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            stopped = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            stopped.result(TIMEOUT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(TIMEOUT)
        self._loop.close()

    async def _listen(self, link: str, upstream: tuple[str, int]) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                await self._relay(link, upstream, reader, writer)
            except asyncio.CancelledError:
                pass  # closing: end normally (3.11's stream callback chokes on a cancelled task)
            finally:
                self._handlers.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    async def _relay(
        self, link: str, upstream: tuple[str, int],
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
    ) -> None:  # fmt: skip
        connection = Connection(link, upstream)
        with self._lock:
            self._connections.append(connection)
        writers = [client_writer]
        try:
            server_reader, server_writer = await asyncio.wait_for(
                asyncio.open_connection(*upstream), TIMEOUT
            )
            writers.append(server_writer)
            connection.connected = True
            await asyncio.gather(
                self._pump(client_reader, server_writer, connection.sent, writers),
                self._pump(server_reader, client_writer, connection.received, writers),
            )
        except (OSError, TimeoutError):
            pass  # the upstream refused or vanished: the client sees its connection end
        finally:
            for writer in writers:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray,
        both: list[asyncio.StreamWriter],
    ) -> None:  # fmt: skip
        """Relay one direction until its end of file (passed on as a half close) or an error,
        which aborts both directions: the peers see a reset, as they would without a proxy."""
        try:
            while chunk := await reader.read(CHUNK):
                with self._lock:
                    record.extend(chunk)
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            for each in both:
                each.transport.abort()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()


def spellings(raw: bytes) -> dict[str, bytes]:
    """Every spelling of secret bytes a careless implementation could put on a wire or a disk,
    by name: the bytes, hex in both cases, base64 and base64url with and without padding, and
    what of them would show wherever in a longer base64 text the secret began (at each of the
    three alignments, the whole 4-character groups made of the secret's bytes only). Raises
    ValueError for fewer than 16 bytes, whose spellings could turn up by chance."""
    if len(raw) < 16:
        raise ValueError("too short to search for")
    found = {"raw": raw, "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode()}
    for alphabet, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        found[alphabet] = encode(raw)
        found[f"{alphabet} unpadded"] = encode(raw).rstrip(b"=")
        for shift in range(3):
            whole = (len(raw) - shift) // 3 * 3
            found[f"{alphabet} inside a text at +{shift}"] = encode(raw[shift : shift + whole])
    return found


def text_spellings(text: str) -> dict[str, bytes]:
    """The spellings of a text secret (a client secret): those of its UTF-8 bytes."""
    return spellings(text.encode())
