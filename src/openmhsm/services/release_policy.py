"""Secure key release policies: Azure's grammar (https://aka.ms/policygrammarmhsm), evaluated
against the claims of a verified attestation token.

A policy is `{"version": "1.0.0", "anyOf": [authority, ...]}`. An authority is
`{"authority": <issuer URL>, "anyOf" | "allOf": [condition, ...]}`. A condition is a nested
`{"anyOf" | "allOf": [condition, ...]}` or a claim condition
`{"claim": <name>, <operator>: <value>}` with the operator `equals`, `notEquals`, `less`,
`lessOrEquals`, `greater`, `greaterOrEquals` or `exists`; the earlier form
`{"claim": <name>, "condition": <operator>, "value": <value>}` (policy version 0.2) is read too.

- The policy holds when one authority that names the token's issuer (compared without a trailing
  slash, case-insensitively) has its conditions met; authorities of other issuers are ignored.
- Claim names navigate nested objects with dots: `x-ms-isolation-tee.x-ms-attestation-type`.
- A missing claim fails its condition, except `exists: false`.
- `equals` compares JSON values; a boolean or a number also equals its JSON text ("true", "2"),
  as Azure's sample policies compare boolean claims with "true". Strings compare exactly. The
  ordering operators compare numbers (numeric strings included) and fail on anything else.
- A malformed policy (unknown version, operator or shape, empty lists) raises PolicyError: a key
  whose policy cannot be read is never released.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from openmhsm.crypto.jwk import b64u_decode
from openmhsm.errors import BadParameter

VERSIONS = frozenset({"0.2", "1.0", "1.0.0"})
CONTENT_TYPES = frozenset({"application/json", "application/json; charset=utf-8"})
MAX_DEPTH = 16
_MISSING = object()


class PolicyError(ValueError):
    """The release policy is malformed; the message says where, never quoting claim values."""


def load_policy(release_policy: Mapping[str, Any] | None) -> dict[str, Any]:
    """The policy document of a key's stored `release_policy`. Raises PolicyError."""
    if release_policy is None or release_policy.get("data") is None:
        raise PolicyError("the key has no release policy")
    content_type = str(release_policy.get("contentType", "application/json")).lower()
    if content_type.replace(" ", "") not in {c.replace(" ", "") for c in CONTENT_TYPES}:
        raise PolicyError("the release policy's content type is not JSON")
    try:
        document = json.loads(b64u_decode(str(release_policy["data"])))
    except (BadParameter, ValueError, RecursionError):
        raise PolicyError("the release policy is not valid JSON") from None
    if not isinstance(document, dict):
        raise PolicyError("the release policy is not a JSON object")
    version = document.get("version", "1.0.0")
    if version not in VERSIONS:
        raise PolicyError("the release policy has an unknown version")
    return document


def allows(policy: Mapping[str, Any], issuer: str, claims: Mapping[str, Any]) -> bool:
    """Whether `policy` lets a target attested by `issuer` with `claims` have the key.

    Raises PolicyError for a malformed policy.
    """
    authorities = policy.get("anyOf")
    if not isinstance(authorities, list) or not authorities:
        raise PolicyError("the release policy needs a non-empty 'anyOf' of authorities")
    wanted = _authority(issuer)
    granted = False
    for authority in authorities:
        if not isinstance(authority, dict) or not isinstance(authority.get("authority"), str):
            raise PolicyError("each authority needs an 'authority' URL")
        conditions = {k: v for k, v in authority.items() if k != "authority"}
        if _authority(authority["authority"]) != wanted:
            _check_shape(conditions, 1)
            continue
        granted = _holds(conditions, claims, 1) or granted
    return granted


def _authority(url: str) -> tuple[str, str, str]:
    """How authority URLs compare: scheme and host case-insensitively, the path exactly (the
    trust check of the token's issuer compares exactly, so a policy must not be looser)."""
    parts = urlsplit(url.rstrip("/"))
    return parts.scheme.lower(), parts.netloc.lower(), parts.path


def _check_shape(condition: Mapping[str, Any], depth: int) -> None:
    """Validate a condition of another authority, so a malformed policy fails for everyone."""
    _holds(condition, {}, depth)


def _holds(condition: Mapping[str, Any], claims: Mapping[str, Any], depth: int) -> bool:
    if depth > MAX_DEPTH:
        raise PolicyError("the release policy is nested too deeply")
    if "claim" in condition:
        return _claim_holds(condition, claims)
    keys = set(condition) & {"anyOf", "allOf"}
    if len(keys) != 1 or len(condition) != 1:
        raise PolicyError("a condition needs exactly one of 'anyOf', 'allOf' or 'claim'")
    combinator = keys.pop()
    items = condition[combinator]
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise PolicyError(f"'{combinator}' needs a non-empty list of conditions")
    results = [_holds(item, claims, depth + 1) for item in items]  # all: shape errors surface
    return any(results) if combinator == "anyOf" else all(results)


def _claim_holds(condition: Mapping[str, Any], claims: Mapping[str, Any]) -> bool:
    name = condition["claim"]
    if not isinstance(name, str) or not name:
        raise PolicyError("a claim condition needs a claim name")
    rest = {k: v for k, v in condition.items() if k != "claim"}
    if set(rest) == {"condition", "value"} and isinstance(rest["condition"], str):
        rest = {rest["condition"]: rest["value"]}
    if len(rest) != 1:
        raise PolicyError("a claim condition needs exactly one operator")
    operator, expected = next(iter(rest.items()))
    check = _OPERATORS.get(operator)
    if check is None:
        raise PolicyError("a claim condition has an unknown operator")
    actual = find_claim(claims, name)
    if operator == "exists":
        if not isinstance(expected, bool):
            raise PolicyError("'exists' takes true or false")
        return (actual is not _MISSING) == expected
    return actual is not _MISSING and check(actual, expected)


def find_claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim `name` (dots navigate nested objects), or a sentinel when it is missing."""
    if name in claims:
        return claims[name]
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):  # the longest literal key first
        head = ".".join(parts[:cut])
        inner = claims.get(head)
        if isinstance(inner, Mapping):
            found = find_claim(inner, ".".join(parts[cut:]))
            if found is not _MISSING:
                return found
    return _MISSING


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float) or (
            isinstance(value, str) and value.strip() and "_" not in value
        ):
            number = float(value)
        else:
            return None
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _equals(actual: Any, expected: Any) -> bool:
    if type(actual) is type(expected):
        return bool(actual == expected)
    if isinstance(actual, bool) or isinstance(expected, bool):
        text, flag = (expected, actual) if isinstance(actual, bool) else (actual, expected)
        return isinstance(text, str) and text.lower() == json.dumps(flag)
    a, b = _number(actual), _number(expected)
    return a is not None and b is not None and a == b


def _ordered(test: Callable[[float, float], bool]) -> Callable[[Any, Any], bool]:
    def check(actual: Any, expected: Any) -> bool:
        a, b = _number(actual), _number(expected)
        return a is not None and b is not None and test(a, b)

    return check


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": _equals,
    "notEquals": lambda actual, expected: not _equals(actual, expected),
    "less": _ordered(lambda a, b: a < b),
    "lessOrEquals": _ordered(lambda a, b: a <= b),
    "greater": _ordered(lambda a, b: a > b),
    "greaterOrEquals": _ordered(lambda a, b: a >= b),
    "exists": lambda actual, expected: True,  # decided in _claim_holds
}
