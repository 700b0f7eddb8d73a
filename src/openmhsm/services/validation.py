"""Input rules shared by the key services: names, tags, key types, key operations, attributes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from openmhsm.crypto.jwk import b64u_decode
from openmhsm.crypto.jwk import base_kty as crypto_base_kty
from openmhsm.errors import BadParameter

NAME_RE = re.compile(r"[0-9a-zA-Z-]{1,127}")  # used with fullmatch: no trailing newline
VERSION_RE = re.compile(r"[0-9a-f]{32}")
MAX_TAGS = 15
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256

ALL_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export")
KEY_OPS_BY_KTY = {
    "RSA": frozenset(ALL_KEY_OPS),
    "EC": frozenset({"sign", "verify", "import", "export"}),
    "oct": frozenset(ALL_KEY_OPS),
}
DEFAULT_KEY_OPS = {
    "RSA": ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"),
    "EC": ("sign", "verify"),
    "oct": ("encrypt", "decrypt", "wrapKey", "unwrapKey"),
}


def check_name(name: str) -> str:
    """A key name as given, or BadParameter. Names are 1-127 of [0-9a-zA-Z-]."""
    if not NAME_RE.fullmatch(name):
        raise BadParameter(
            "The key name must be 1-127 characters of letters, digits and '-'.",
            inner_code="InvalidKeyName",
        )
    return name


def check_version(version: str) -> str:
    if not VERSION_RE.fullmatch(version):
        raise BadParameter("The key version must be 32 lower-case hexadecimal characters.")
    return version


def base_kty(kty: Any) -> str:
    """'RSA', 'EC' or 'oct' for any accepted kty spelling, or BadParameter."""
    try:
        return crypto_base_kty(kty)
    except BadParameter as exc:
        raise BadParameter(exc.message, inner_code="KeyTypeNotSupported") from None


def check_tags(tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise BadParameter("tags must be an object of string values.")
    if len(tags) > MAX_TAGS:
        raise BadParameter(f"A key can have at most {MAX_TAGS} tags.")
    out: dict[str, str] = {}
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise BadParameter("tags must be an object of string values.")
        if not k or len(k) > MAX_TAG_NAME or len(v) > MAX_TAG_VALUE:
            raise BadParameter(
                f"Tag names must be 1-{MAX_TAG_NAME} and values at most {MAX_TAG_VALUE} characters."
            )
        out[k] = v
    return out


def check_key_ops(key_ops: Any, kty: str) -> tuple[str, ...]:
    """The key operations for a base kty: the defaults when None, else validated."""
    if key_ops is None:
        return DEFAULT_KEY_OPS[kty]
    if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
        raise BadParameter("key_ops must be a list of strings.")
    allowed = KEY_OPS_BY_KTY[kty]
    for op in key_ops:
        if op not in allowed:
            raise BadParameter(f"Invalid key operation '{op[:20]}' for a key of type {kty}.")
    return tuple(dict.fromkeys(key_ops))


def optional_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadParameter(f"attributes.{field} must be a number of seconds since the epoch.")
    if not 0 <= value < 253402300800:  # up to year 9999
        raise BadParameter(f"attributes.{field} is out of range.")
    return int(value)


def optional_bool(value: Any, field: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadParameter(f"{field} must be a boolean.")
    return value


def check_object(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BadParameter(f"{field} must be an object.")
    return value


def check_release_policy(value: Any) -> dict[str, Any] | None:
    """A release policy as stored: contentType, immutable, data (base64url text)."""
    if value is None:
        return None
    policy = check_object(value, "release_policy")
    content_type = policy.get("contentType", "application/json; charset=utf-8")
    data = policy.get("data")
    immutable = optional_bool(policy.get("immutable"), "release_policy.immutable") or False
    if not isinstance(content_type, str) or (data is not None and not isinstance(data, str)):
        raise BadParameter("release_policy has invalid fields.")
    if data is not None:
        b64u_decode(data)
    return {"contentType": content_type, "immutable": immutable, "data": data}
