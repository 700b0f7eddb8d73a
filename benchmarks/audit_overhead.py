"""`python -m benchmarks.audit_overhead`: what the audit policy adds to one request.

Drives a trivial ASGI app directly (no sockets) with and without `AuditPolicy` around it, with
the audit file on the real filesystem, and prints the added time per request; also the cost of
one `AuditLog.write` alone, and of a 401 (the policy then also parses the error body)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Scope

from openmhsm.api.audit import AuditPolicy
from openmhsm.services.audit import AuditLog, AuditRecord
from openmhsm.types import Principal

N = 20_000
PRINCIPAL = Principal("3f0c…-object", "9a1b…-client", "app1", "service", "https://issuer")


async def ok(request: Request) -> Response:
    request.scope["state"]["principal"] = PRINCIPAL
    return JSONResponse({"value": "x"})


async def denied(request: Request) -> Response:
    body = {"error": {"code": "Unauthorized", "message": "AKV10000: missing token."}}
    return JSONResponse(body, status_code=401)


def scope_for(path: str) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"api-version=2025-07-01",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "state": {"request_id": "0b7c1f6e-2d4f-4c43-9d55-6c1d0b0f3e11"},
    }


async def per_request(app: ASGIApp, path: str) -> float:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    started = time.perf_counter()
    for _ in range(N):
        await app(scope_for(path), receive, send)
    return (time.perf_counter() - started) / N


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog(Path(tmp) / "audit", 0)
        router = Router(
            [
                Route("/keys/{name}/{version}/sign", ok, methods=["POST"]),
                Route("/denied", denied, methods=["POST"]),
            ]
        )
        audited = AuditPolicy(router, log, 0, router.routes)
        path = "/keys/k1/0123456789abcdef/sign"
        for _ in range(2):  # the first round warms up
            bare = asyncio.run(per_request(router, path))
            with_audit = asyncio.run(per_request(audited, path))
            bare_401 = asyncio.run(per_request(router, "/denied"))
            audit_401 = asyncio.run(per_request(audited, "/denied"))
        record = AuditRecord(1.7e9, "r", "POST /keys/{name}/{version}/sign", path, 200, 1.0, 0)
        started = time.perf_counter()
        for _ in range(N):
            log.write(record)
        write = (time.perf_counter() - started) / N
        log.close()
    us = 1e6
    print(f"request without audit: {bare * us:7.1f} µs")
    print(f"request with audit:    {with_audit * us:7.1f} µs  (+{(with_audit - bare) * us:.1f} µs)")
    print(f"401 without audit:     {bare_401 * us:7.1f} µs")
    print(
        f"401 with audit:        {audit_401 * us:7.1f} µs  (+{(audit_401 - bare_401) * us:.1f} µs)"
    )
    print(f"AuditLog.write alone:  {write * us:7.1f} µs")


if __name__ == "__main__":
    main()
