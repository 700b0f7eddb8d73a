"""Typed errors to Key Vault JSON: the only place an HTTP status is chosen for an error."""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse

from openmhsm.errors import MhsmError, StorageConflict, StorageUnavailable
from openmhsm.types import JSON

log = logging.getLogger(__name__)

_UNAVAILABLE = "The pool cannot commit writes right now (storage has no quorum); try again."


def error_body(code: str, message: str, inner_code: str | None = None) -> JSON:
    error: JSON = {"code": code, "message": message}
    if inner_code:
        error["innererror"] = {"code": inner_code}
    return {"error": error}


def error_response(exc: BaseException) -> JSONResponse:
    """The Key Vault response for any exception; unknown ones are logged, never shown."""
    if isinstance(exc, MhsmError):
        status, body = exc.status, error_body(exc.code, exc.message, exc.inner_code)
    elif isinstance(exc, StorageUnavailable):
        status, body = 503, error_body("ServiceUnavailable", _UNAVAILABLE)
    elif isinstance(exc, StorageConflict):
        status, body = 409, error_body("Conflict", "A concurrent change won; try again.")
    else:
        log.error("internal error", exc_info=exc)
        status, body = 500, error_body("InternalError", "An internal error occurred.")
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)
