"""A TCP link between regions that a test can cut: proxies on loopback, one per upstream
address, relaying both ways until `cut()` aborts every connection and refuses new ones (the
peers see resets, as across a failed network); `heal()` lets connections through again."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

TIMEOUT = 10.0


class LinkProxy:
    """Proxies on a loop of their own in a background thread; a context manager."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = True
        self._thread.start()

    def __enter__(self) -> LinkProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    def relay(self, host: str, port: int) -> int:
        """Start relaying a new loopback port to `host:port`; returns the port."""
        return self._call(self._listen(host, port))

    def cut(self) -> None:
        self._call(self._set_open(False))

    def heal(self) -> None:
        self._call(self._set_open(True))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(TIMEOUT)
        self._loop.close()

    def _call(self, coroutine: object) -> int:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        result: int = future.result(TIMEOUT)
        return result

    async def _set_open(self, value: bool) -> int:
        self._open = value
        if not value:
            for writer in list(self._writers):
                writer.transport.abort()
        return 0

    async def _listen(self, host: str, port: int) -> int:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if not self._open:
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), TIMEOUT
                )
            except (OSError, TimeoutError):
                writer.transport.abort()
                return
            pair = {writer, up_writer}
            self._writers |= pair
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                for each in pair:
                    each.transport.abort()
                self._writers -= pair

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self._servers.append(server)
        listened: int = server.sockets[0].getsockname()[1]
        return listened

    async def _shutdown(self) -> int:
        await self._set_open(False)
        for server in self._servers:
            server.close()
        return 0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    writer.transport.abort()
