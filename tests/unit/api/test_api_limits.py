"""Head limits and slow-client deadlines of `LimitedHttpToolsProtocol`, driven over a loopback
socket in this process, and the `EndOnDisconnect` policy."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive, Scope, Send
from uvicorn.server import ServerState

from openmhsm.api.limits import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    EndOnDisconnect,
    LimitedHttpToolsProtocol,
)

FAST = 0.4  # the deadlines under test, in seconds


class Quick(LimitedHttpToolsProtocol):
    head_timeout = FAST
    body_timeout = FAST


class Recorder:
    """An ASGI app that reads the whole body and answers with its size; `delay` before reading."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0
        self.disconnects = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)
        try:
            body = await Request(scope, receive).body()
        except ClientDisconnect:
            self.disconnects += 1
            raise
        payload = json.dumps({"size": len(body)}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


Scenario = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Any]]


def serve(app: Any, scenario: Scenario) -> Any:
    """Run `scenario` against a server of `Quick` protocols in front of `app`."""

    async def main() -> Any:
        config = uvicorn.Config(EndOnDisconnect(app), http=Quick, log_level="critical")
        config.load()
        state = ServerState()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Quick(config=config, server_state=state, app_state={}), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(scenario(reader, writer), 10)
        finally:
            writer.close()
            server.close()
            for connection in list(state.connections):
                connection.shutdown()
            await server.wait_closed()

    return asyncio.run(main())


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    return await reader.read() == b""


def request(path: str = "/", headers: str = "", body: bytes = b"") -> bytes:
    length = f"content-length: {len(body)}\r\n" if body else ""
    return f"POST {path} HTTP/1.1\r\nhost: x\r\n{headers}{length}\r\n".encode() + body


def error_code(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"}
    return str(error["code"])


def test_ordinary_requests_on_one_connection() -> None:
    app = Recorder()

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for body in (b"", b"x" * 300_000, b"{}"):
            writer.write(request(body=body))
            status, _, answer = await response(reader)
            assert (status, json.loads(answer)) == (200, {"size": len(body)})

    serve(app, scenario)
    assert app.calls == 3


def test_large_head_is_refused_before_the_app() -> None:
    app = Recorder()

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request(headers=f"x-big: {'a' * MAX_HEAD_BYTES}\r\n"))
        status, headers, body = await response(reader)
        assert (status, headers["connection"]) == (431, "close")
        assert error_code(body) == "RequestHeaderFieldsTooLarge"
        assert await closed(reader)

    serve(app, scenario)
    assert app.calls == 0


def test_head_just_under_the_limit_is_served() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request(headers=f"x-big: {'a' * (MAX_HEAD_BYTES - 200)}\r\n"))
        assert (await response(reader))[0] == 200

    serve(Recorder(), scenario)


def test_endless_header_is_cut_off_while_it_arrives() -> None:
    """httptools would buffer a header value of any size: the limit applies as bytes come."""

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-endless: ")
        sent = 0
        for _ in range(200):
            writer.write(b"a" * 8192)
            sent += 8192
            try:
                await writer.drain()
            except ConnectionError:
                break
            if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.005)
        status, _, body = await response(reader)
        assert status == 431 and error_code(body) == "RequestHeaderFieldsTooLarge"
        return sent

    sent = serve(Recorder(), scenario)
    assert sent < 4 * MAX_HEAD_BYTES


def test_too_many_headers() -> None:
    many = "".join(f"x-h{n}: v\r\n" for n in range(MAX_HEADERS))

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request(headers=many))  # with host: one more than allowed
        status, _, body = await response(reader)
        assert status == 431 and error_code(body) == "RequestHeaderFieldsTooLarge"

    serve(Recorder(), scenario)


def test_long_url() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request(path="/" + "a" * MAX_HEAD_BYTES))
        status, _, body = await response(reader)
        assert status == 414 and error_code(body) == "RequestUriTooLong"

    serve(Recorder(), scenario)


def test_slow_head_is_cut_off() -> None:
    """A client that sends its head a byte at a time never finishes it in time."""
    app = Recorder()

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
        started = time.monotonic()
        head = b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 100
        for byte in head:
            if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(FAST / 10)
        status, _, body = await response(reader)
        assert status == 408 and error_code(body) == "RequestTimeout"
        assert await closed(reader)
        return time.monotonic() - started

    took = serve(app, scenario)
    assert FAST <= took < FAST + 2  # cut at the deadline; the whole head takes over 5 s
    assert app.calls == 0


def test_silent_connection_is_closed() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, _, _ = await response(reader)
        assert status == 408 and await closed(reader)

    serve(Recorder(), scenario)


def test_stray_line_breaks_do_not_keep_a_connection() -> None:
    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request())
        assert (await response(reader))[0] == 200
        for _ in range(int(4 / (FAST / 4))):
            if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]
                break
            writer.write(b"\r\n")
            await asyncio.sleep(FAST / 4)
        assert (await response(reader))[0] == 408

    serve(Recorder(), scenario)


def test_slow_body_is_cut_off_and_the_app_sees_a_disconnect() -> None:
    app = Recorder()

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(100):
            if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]
                break
            writer.write(b"a")
            await asyncio.sleep(FAST / 10)
        status, _, body = await response(reader)
        assert status == 408 and error_code(body) == "RequestTimeout"
        assert await closed(reader)

    serve(app, scenario)
    assert app.disconnects == 1


def test_slow_app_is_not_the_client_s_fault() -> None:
    """Deadlines time the client: an app slower than them, not reading a large body meanwhile
    (so the server pauses reading), still gets every byte and answers."""
    app = Recorder(delay=FAST * 3)

    async def scenario(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request(body=b"b" * 300_000))
        status, _, body = await response(reader)
        assert (status, json.loads(body)) == (200, {"size": 300_000})
        await asyncio.sleep(FAST * 1.5)  # idle after an answer: the keep-alive timer's business
        writer.write(request())
        assert (await response(reader))[0] == 200

    serve(app, scenario)


# --- EndOnDisconnect ---------------------------------------------------------------------------


def run_policy(app: Any) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(EndOnDisconnect(app)(scope, receive, send))
    return sent


def test_disconnect_while_reading_ends_as_408() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await Request(scope, receive).body()

    sent = run_policy(app)
    assert sent[0]["status"] == 408
    assert error_code(sent[1]["body"]) == "RequestTimeout"


def test_disconnect_after_the_answer_started_sends_nothing_more() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ClientDisconnect()

    assert [m["type"] for m in run_policy(app)] == ["http.response.start"]


def test_other_errors_pass_through() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        run_policy(app)
