"""What `mhsm` commands print: JSON or a plain table on stdout, errors as one line on stderr."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.keyvault.keys import DeletedKey, JsonWebKey, KeyProperties, KeyVaultKey

Command = Callable[[argparse.Namespace], int]
_JWK_FIELDS = ("kid", "kty", "key_ops", "crv", "n", "e", "x", "y")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_arg(text: str) -> bytes:
    """argparse type for base64url values (padding optional). Raises argparse.ArgumentTypeError."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as e:
        raise argparse.ArgumentTypeError(f"not base64url: {text!r}") from e


def tag_arg(text: str) -> tuple[str, str]:
    """argparse type for `k=v` tags. Raises argparse.ArgumentTypeError."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a tag is name=value, not {text!r}")
    return name, value


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return b64url(value)
    return value


def jwk_json(jwk: JsonWebKey) -> dict[str, Any]:
    """The public JWK, binary fields in base64url, absent fields left out."""
    out: dict[str, Any] = {}
    for name in _JWK_FIELDS:
        value = getattr(jwk, name, None)  # JsonWebKey sets its fields dynamically
        if value is None or value == b"" or value == []:
            continue
        if isinstance(value, list):
            out[name] = [_plain(op) for op in value]
        else:
            out[name] = _plain(value)
    return out


def properties_json(props: KeyProperties) -> dict[str, Any]:
    """A key's id, attributes and tags; fields the pool did not send are left out."""
    attributes = {
        "enabled": props.enabled,
        "notBefore": props.not_before,
        "expires": props.expires_on,
        "created": props.created_on,
        "updated": props.updated_on,
        "recoveryLevel": props.recovery_level,
        "recoverableDays": props.recoverable_days,
        "exportable": props.exportable,
        "hsmPlatform": props.hsm_platform,
    }
    out = {
        "kid": props.id,
        "name": props.name,
        "version": props.version,
        "attributes": {k: _plain(v) for k, v in attributes.items() if v is not None},
        "tags": props.tags or {},
        "managed": props.managed,
    }
    return {k: v for k, v in out.items() if v is not None}


def key_json(key: KeyVaultKey) -> dict[str, Any]:
    out = properties_json(key.properties)
    out["kty"] = _plain(key.key_type)
    out["key"] = jwk_json(key.key)
    return out


def deleted_json(key: DeletedKey) -> dict[str, Any]:
    # Listed deleted keys carry no key material, only properties.
    has_key = key.key is not None and getattr(key.key, "kty", None) is not None
    out = key_json(key) if has_key else properties_json(key.properties)
    out["recoveryId"] = key.recovery_id
    out["deletedDate"] = _plain(key.deleted_date)
    out["scheduledPurgeDate"] = _plain(key.scheduled_purge_date)
    return out


def emit(result: Any, fmt: str) -> None:
    """Print a JSON-able result: indented JSON, or a table (one row per list item, or one
    `field value` row per field of an object)."""
    if fmt == "json":
        print(json.dumps(result, indent=2))
        return
    rows = result if isinstance(result, list) else [result]
    if isinstance(result, list):
        flat = [_flatten(r) for r in rows]
        columns = list(dict.fromkeys(c for r in flat for c in r))
        _print_rows([columns, *[[r.get(c, "") for c in columns] for r in flat]])
    else:
        _print_rows([[k, v] for k, v in _flatten(result).items()])


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return {prefix.rstrip("."): text}


def _print_rows(rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def error_line(exc: BaseException) -> str:
    """One line for stderr: Key Vault's `(code) message` for a service error."""
    if isinstance(exc, HttpResponseError) and exc.error is not None and exc.error.code:
        return f"({exc.error.code}) {exc.error.message}"
    if isinstance(exc, AzureError):
        return exc.message.splitlines()[0] if exc.message else type(exc).__name__
    return str(exc) or type(exc).__name__


def reports_errors(command: Command) -> Command:
    """Wrap a command so that service, connection, file and argument errors print one line to
    stderr and exit 1 instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BrokenPipeError:
            # stdout's reader left (`| head`): say nothing, and keep the exit-time flush quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except (AzureError, OSError, ValueError) as e:
            print(error_line(e), file=sys.stderr)
            return 1

    return run
