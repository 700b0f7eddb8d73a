"""Wire conventions shared by every path group: JSON bodies, base64url fields, URLs, paging."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from starlette.requests import Request

from openmhsm.crypto.jwk import b64u_decode, b64u_encode
from openmhsm.errors import BadParameter, PayloadTooLarge
from openmhsm.types import JSON

MAX_BODY = 1024 * 1024
MAX_RESULTS = 25


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts digits int() refuses, like '²'."""
    return text.isascii() and text.isdigit() and len(text) <= 12


async def json_body(request: Request, *, optional: bool = False) -> JSON:
    """The request's JSON object. Raises BadParameter, PayloadTooLarge."""
    declared = request.headers.get("content-length")
    if declared is not None and (not _is_number(declared) or int(declared) > MAX_BODY):
        raise PayloadTooLarge(f"The request body must be at most {MAX_BODY} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLarge(f"The request body must be at most {MAX_BODY} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if optional:
            return {}
        raise BadParameter("The request body is required.")
    try:
        body = json.loads(raw)
        # A lone surrogate (`"\ud800"`) parses but can never be encoded again: refuse it here
        # rather than store a record that no response can render. Only a `\u` escape makes
        # one (raw UTF-8 cannot), so most bodies skip the round trip.
        if b"\\u" in raw:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise BadParameter("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadParameter("The request body must be a JSON object.")
    return body


def b64_field(body: JSON, name: str) -> bytes:
    """A required base64url field of the body. Raises BadParameter."""
    value = b64_optional(body, name)
    if value is None:
        raise BadParameter(f"The '{name}' field is required.")
    return value


def b64_optional(body: JSON, name: str) -> bytes | None:
    """An optional base64url field of the body. Raises BadParameter."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadParameter(f"The '{name}' field must be a base64url string.")
    try:
        return b64u_decode(value)
    except BadParameter:
        raise BadParameter(f"The '{name}' field is not valid base64url.") from None


def string_field(body: JSON, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadParameter(f"The '{name}' field is required and must be a string.")
    return value


def b64(data: bytes) -> str:
    return b64u_encode(data)


def client_request_id(request: Request) -> str | None:
    """`x-ms-client-request-id`: azure-core sends the same one on every retry of a call, so
    writes use it to recognise a retry of a request that already committed."""
    value = request.headers.get("x-ms-client-request-id")
    return value if value and len(value) <= 128 and value.isprintable() else None


def base_url(request: Request) -> str:
    """`https://<host[:port]>` as the client addressed us (ids and links use it)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"https://{host}"


def max_results(request: Request) -> int:
    raw = request.query_params.get("maxresults")
    if raw is None:
        return MAX_RESULTS
    if not _is_number(raw) or not 1 <= int(raw) <= MAX_RESULTS:
        raise BadParameter(f"maxresults must be an integer from 1 to {MAX_RESULTS}.")
    return int(raw)


def skip_token(request: Request) -> str | None:
    raw = request.query_params.get("$skiptoken")
    if raw is None:
        return None
    try:
        return b64u_decode(raw).decode()
    except (BadParameter, UnicodeDecodeError):
        raise BadParameter("The $skiptoken is not valid.") from None


def page(request: Request, items: list[Any], continue_after: str | None) -> JSON:
    """`{"value": items, "nextLink": absolute URL or null}`."""
    next_link = None
    if continue_after is not None:
        version = request.query_params.get("api-version", "")
        token = b64u_encode(continue_after.encode())
        next_link = (
            f"{base_url(request)}{request.url.path}?api-version={quote(version)}"
            f"&$skiptoken={token}&maxresults={max_results(request)}"
        )
    return {"value": items, "nextLink": next_link}
