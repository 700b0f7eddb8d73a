"""A uvicorn server whose graceful stop loses no request sent on a kept-alive connection
(DESIGN §2).

uvicorn's own stop closes every idle keep-alive connection at once. A client that picked one
of them from its pool a moment earlier has its request in flight on a connection the server
then drops unread: the client sees "Remote end closed connection without response", and
azure-core sends neither a POST nor a PATCH again after that. Clients in a loop have their
connection idle between two requests most of the time, so a stop under load hit this often.

Here a stop closes the listeners, then:
- a connection with a request in flight finishes it, with `Connection: close` on the answer;
- an idle connection stays open; the next request on it is served, again with
  `Connection: close`, so the client sees the close in the answer instead of guessing;
- a connection idle for `IDLE_GRACE` seconds since the stop began is aborted: its client is not
  using it, and its pool sees the reset before it would reuse it. (uvicorn's `transport.close()`
  over TLS would wait for the client's close_notify, which a pooled client never sends.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn

IDLE_GRACE = 1.0
POLL = 0.05

log = logging.getLogger(__name__)


def _idle(connection: Any) -> bool:
    cycle = getattr(connection, "cycle", None)
    transport = getattr(connection, "transport", None)
    if transport is None:
        return False
    flushed = transport.get_write_buffer_size() == 0
    return flushed and (cycle is None or cycle.response_complete)


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info("draining")
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            if hasattr(connection, "draining"):
                connection.draining = True  # the next request is answered, then closed
            if not _idle(connection):
                connection.shutdown()  # the answer in flight says `Connection: close`
        try:
            await asyncio.wait_for(
                self._wait_tasks_to_complete(), timeout=self.config.timeout_graceful_shutdown
            )
        except TimeoutError:
            log.error(
                "%d request(s) cancelled: graceful stop timed out", len(self.server_state.tasks)
            )
            for task in self.server_state.tasks:
                task.cancel(msg="graceful stop timed out")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _wait_tasks_to_complete(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        while self.server_state.connections and not self.force_exit:
            if loop.time() - began >= IDLE_GRACE:
                for connection in list(self.server_state.connections):
                    if _idle(connection):
                        connection.transport.abort()
            await asyncio.sleep(POLL)
        while self.server_state.tasks and not self.force_exit:
            await asyncio.sleep(POLL)
