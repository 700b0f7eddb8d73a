"""What `mhsm` commands print: JSON, a plain table or tab-separated values on stdout (az's
`--output json|table|tsv`), errors as one `ERROR: (Code) message` line on stderr."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.keyvault.keys import DeletedKey, JsonWebKey, KeyProperties, KeyVaultKey

Command = Callable[[argparse.Namespace], int]
OUTPUT_FORMATS = ("json", "table", "tsv")
_JWK_FIELDS = ("kid", "kty", "key_ops", "crv", "n", "e", "x", "y")


def add_output_option(parser: argparse.ArgumentParser, default: str = "json") -> None:
    """`--output/-o json|table|tsv` and az's `--only-show-errors` (no progress or warnings)."""
    parser.add_argument(
        "--output",
        "-o",
        choices=OUTPUT_FORMATS,
        default=default,
        help=f"json, table (aligned columns) or tsv (values only) (default {default})",
    )
    parser.add_argument(
        "--only-show-errors",
        action="store_true",
        help="print results and errors only: no progress bars (az's flag)",
    )


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


def emit(result: Any, fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print a JSON-able result: indented JSON; a table (one row per list item, or one
    `field value` row per field of an object); or tsv (values only, tab-separated, one line per
    list item or for the object). Nested fields are flattened to `a.b`; `columns` picks and
    orders the flattened fields of tables and tsv (JSON always has every field)."""
    if fmt == "json":
        print(json.dumps(result, indent=2))
        return
    rows = result if isinstance(result, list) else [result]
    flat = [_flatten(r) for r in rows]
    names = list(columns) if columns else list(dict.fromkeys(c for r in flat for c in r))
    if fmt == "tsv":
        for row in flat:
            print("\t".join(row.get(c, "") for c in names))
    elif isinstance(result, list):
        _print_rows([names, *[[r.get(c, "") for c in names] for r in flat]])
    else:
        _print_rows([[c, flat[0].get(c, "")] for c in names])


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    text = " ".join(_cell(v) for v in value) if isinstance(value, list) else _cell(value)
    return {prefix.rstrip("."): text}


def _cell(value: Any) -> str:
    if isinstance(value, Mapping | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _print_rows(rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def error_message(exc: BaseException) -> str:
    """What went wrong, in one line: Key Vault's `(Code) message` for a service error."""
    if isinstance(exc, HttpResponseError) and exc.error is not None and exc.error.code:
        message = (exc.error.message or "").splitlines()
        return f"({exc.error.code}) {message[0] if message else ''}".rstrip()
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        return f"({exc.status_code}) {exc.reason or type(exc).__name__}"
    if isinstance(exc, AzureError):
        return exc.message.splitlines()[0] if exc.message else type(exc).__name__
    text = str(exc).splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def error_line(exc: BaseException) -> str:
    """The line `mhsm` prints on stderr for an error, as az does: `ERROR: (Code) message`."""
    return f"ERROR: {error_message(exc)}"


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
