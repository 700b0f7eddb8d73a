"""A uvicorn server whose graceful stop does not wait on idle TLS clients (DESIGN §2).

uvicorn closes an idle keep-alive connection with `transport.close()`; over TLS that sends
close_notify and then waits for the client's, which an SDK client holding the connection in
its pool never sends while it is idle: every stop then waits the whole graceful timeout. Here a
connection that has been idle (no request in flight, nothing left to write) for `IDLE_GRACE`
seconds after the stop began is aborted instead. In-flight requests still finish, and their
responses carry `Connection: close`; the client's pool sees the dropped connection before it
reuses it and opens a new one to a live partition.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

IDLE_GRACE = 0.5
POLL = 0.05


def _idle(connection: Any) -> bool:
    cycle = getattr(connection, "cycle", None)
    transport = getattr(connection, "transport", None)
    if transport is None:
        return False
    flushed = transport.get_write_buffer_size() == 0
    return flushed and (cycle is None or cycle.response_complete)


class DrainingServer(uvicorn.Server):
    async def _wait_tasks_to_complete(self) -> None:
        loop = asyncio.get_running_loop()
        idle_since: dict[int, float] = {}
        while self.server_state.connections and not self.force_exit:
            now = loop.time()
            for connection in list(self.server_state.connections):
                if not _idle(connection):
                    idle_since.pop(id(connection), None)
                    continue
                since = idle_since.setdefault(id(connection), now)
                if now - since >= IDLE_GRACE:
                    connection.transport.abort()
            await asyncio.sleep(POLL)
        while self.server_state.tasks and not self.force_exit:
            await asyncio.sleep(POLL)
