"""Rotation policies: validation of the stored form and ISO-8601 durations (the scheduler in
services/scheduler.py acts on them)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from openmhsm.errors import BadParameter
from openmhsm.types import JSON

MIN_EXPIRY_SECONDS = 28 * 86400
MIN_TRIGGER_SECONDS = 7 * 86400  # Azure's floor for both triggers
DEFAULT_POLICY: JSON = {"lifetimeActions": [], "attributes": {}}
_DURATION = re.compile(
    r"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
    r"(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$"
)
_UNITS = (365 * 86400, 30 * 86400, 7 * 86400, 86400, 3600, 60, 1)
_TRIGGERS = ("timeAfterCreate", "timeBeforeExpiry")


def duration_seconds(text: Any) -> int:
    """Seconds in an ISO-8601 duration such as P90D, P1Y10D or PT48H (a month is 30 days)."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) and len(text) <= 40 else None
    if match is None:
        raise BadParameter(f"'{str(text)[:40]}' is not an ISO-8601 duration such as P90D.")
    return sum(int(g) * unit for g, unit in zip(match.groups(), _UNITS, strict=True) if g)


def expiry_seconds(policy: Mapping[str, Any]) -> int | None:
    """The policy's expiryTime in seconds, if it sets one."""
    expiry = (policy.get("attributes") or {}).get("expiryTime")
    return None if expiry is None else duration_seconds(expiry)


def _check_action(item: Any) -> JSON:
    if not isinstance(item, Mapping):
        raise BadParameter("Each lifetime action must be an object.")
    trigger = item.get("trigger")
    action = item.get("action")
    if not isinstance(trigger, Mapping) or not isinstance(action, Mapping):
        raise BadParameter("A lifetime action needs a trigger and an action.")
    given = [t for t in _TRIGGERS if trigger.get(t) is not None]
    if len(given) != 1:
        raise BadParameter("A trigger needs exactly one of timeAfterCreate or timeBeforeExpiry.")
    if duration_seconds(trigger[given[0]]) < MIN_TRIGGER_SECONDS:
        raise BadParameter(f"{given[0]} must be at least 7 days (P7D).")
    kind = action.get("type")
    if not isinstance(kind, str) or kind.lower() not in ("rotate", "notify"):
        raise BadParameter("The action type must be Rotate.")
    if kind.lower() == "notify":
        raise BadParameter("Notify is not supported by Managed HSM; use Rotate.")
    return {"trigger": {given[0]: trigger[given[0]]}, "action": {"type": "Rotate"}}


def check_policy(body: Mapping[str, Any], now: int, previous: JSON | None) -> JSON:
    """The policy to store, from a request body. Raises BadParameter."""
    actions = body.get("lifetimeActions") or []
    if not isinstance(actions, list) or len(actions) > 2:
        raise BadParameter("lifetimeActions must be a list of at most two actions.")
    checked = [_check_action(a) for a in actions]
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, Mapping):
        raise BadParameter("attributes must be an object.")
    expiry = attrs.get("expiryTime")
    if expiry is not None and duration_seconds(expiry) < MIN_EXPIRY_SECONDS:
        raise BadParameter("expiryTime must be at least 28 days (P28D).")
    before = [
        a["trigger"]["timeBeforeExpiry"] for a in checked if "timeBeforeExpiry" in a["trigger"]
    ]
    if before and expiry is None:
        raise BadParameter("timeBeforeExpiry needs attributes.expiryTime.")
    if any(duration_seconds(b) > duration_seconds(expiry) - MIN_TRIGGER_SECONDS for b in before):
        raise BadParameter("timeBeforeExpiry must be at least 7 days shorter than expiryTime.")
    created = (previous or {}).get("attributes", {}).get("created", now)
    attributes: JSON = {"created": created, "updated": now}
    if expiry is not None:
        attributes["expiryTime"] = expiry
    return {"lifetimeActions": checked, "attributes": attributes}
