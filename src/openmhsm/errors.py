"""One flat tree of typed errors. Each carries its Key Vault error code and HTTP status.

`api/errors.py` turns them into Key Vault JSON; it is the only place a status is chosen, and it
reads it from here. Messages must never contain secret material.
"""

from __future__ import annotations


class MhsmError(Exception):
    """Base of every error the service reports to a client."""

    code = "InternalError"
    status = 500

    def __init__(self, message: str, *, inner_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.inner_code = inner_code


class BadParameter(MhsmError):
    code = "BadParameter"
    status = 400


class BadRequest(MhsmError):
    code = "BadRequest"
    status = 400


class Unauthorized(MhsmError):
    code = "Unauthorized"
    status = 401


class Forbidden(MhsmError):
    code = "Forbidden"
    status = 403


class NotActivated(Forbidden):
    """The pool's security domain has not been activated yet (403, never 401: see DESIGN §5)."""


class KeyNotFound(MhsmError):
    code = "KeyNotFound"
    status = 404


class NotFound(MhsmError):
    code = "NotFound"
    status = 404


class MethodNotAllowed(MhsmError):
    code = "MethodNotAllowed"
    status = 405


class Conflict(MhsmError):
    code = "Conflict"
    status = 409


class PayloadTooLarge(MhsmError):
    code = "RequestTooLarge"
    status = 413


class Throttled(MhsmError):
    code = "Throttled"
    status = 429


class NotSupported(MhsmError):
    """An operation this pool does not offer (yet). 400, not 501: no 5xx for a client's choice."""

    code = "NotSupported"
    status = 400


class ServiceUnavailable(MhsmError):
    """Storage cannot commit writes (etcd quorum lost) or the partition is shutting down."""

    code = "ServiceUnavailable"
    status = 503


class CryptoError(BadParameter):
    """A cryptographic operation failed on its input: bad tag, bad padding, wrong key type."""


class StorageConflict(Exception):
    """A compare-on-revision write lost the race. Internal: services retry or map it."""


class StorageUnavailable(Exception):
    """The backend cannot be reached or cannot commit. Internal: mapped to ServiceUnavailable."""
