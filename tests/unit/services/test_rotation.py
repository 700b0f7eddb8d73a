"""Rotation: ISO-8601 durations, policy validation (P28D minimum, no Notify), the stored policy,
and `rotate` copying the current version's parameters and applying expiryTime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from openmhsm.crypto.jwk import b64u_encode
from openmhsm.errors import BadParameter, KeyNotFound
from openmhsm.services import records
from openmhsm.services.rotation import (
    DEFAULT_POLICY,
    check_policy,
    duration_seconds,
    expiry_seconds,
)

Runner = Callable[..., Any]
NOW = 1_700_000_000
DAY = 86400
ROTATE_80 = {"trigger": {"timeAfterCreate": "P80D"}, "action": {"type": "Rotate"}}


def _policy(expiry: Any = "P90D", actions: Any = None) -> dict[str, Any]:
    return {
        "lifetimeActions": [] if actions is None else actions,
        "attributes": {"expiryTime": expiry},
    }


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("P90D", 90 * DAY),
        ("P28D", 28 * DAY),
        ("P4W", 28 * DAY),
        ("P1M", 30 * DAY),
        ("P1Y", 365 * DAY),
        ("P1Y2M3D", (365 + 60 + 3) * DAY),
        ("PT48H", 2 * DAY),
        ("P1DT1H1M1S", DAY + 3661),
        ("PT90M", 5400),
        ("P0D", 0),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "90D",
        "P1DT",
        "P1.5D",
        "P-1D",
        "p90d",
        "P90d",
        "PD",
        "P1H",
        "T1H",
        "P 90D",
        " P90D",
        "P9" + "9" * 40 + "D",
        90,
        None,
        ["P90D"],
    ],
    ids=repr,
)
def test_bad_durations(text: Any) -> None:
    with pytest.raises(BadParameter):
        duration_seconds(text)


def test_duration_with_trailing_newline_is_refused() -> None:
    with pytest.raises(BadParameter):
        duration_seconds("P90D\n")


def test_expiry_seconds() -> None:
    assert expiry_seconds(DEFAULT_POLICY) is None
    assert expiry_seconds({"attributes": None}) is None
    assert expiry_seconds(_policy("P30D")) == 30 * DAY


# --- policy validation -----------------------------------------------------------------------


def test_valid_policy_is_normalized() -> None:
    body = _policy(
        "P90D",
        [
            {
                "trigger": {"timeAfterCreate": "P80D", "timeBeforeExpiry": None},
                "action": {"type": "rotate"},
            }
        ],
    )
    policy = check_policy(body, NOW, None)
    assert policy == {
        "lifetimeActions": [ROTATE_80],
        "attributes": {"created": NOW, "updated": NOW, "expiryTime": "P90D"},
    }


def test_policy_keeps_its_creation_time() -> None:
    first = check_policy(_policy(), NOW, None)
    second = check_policy(_policy("P60D"), NOW + 50, first)
    assert second["attributes"] == {"created": NOW, "updated": NOW + 50, "expiryTime": "P60D"}


@pytest.mark.parametrize("expiry", ["P28D", "P4W", "P1M", "PT672H", "P1Y"])
def test_expiry_of_at_least_28_days(expiry: str) -> None:
    assert check_policy(_policy(expiry), NOW, None)["attributes"]["expiryTime"] == expiry


@pytest.mark.parametrize("expiry", ["P27D", "PT671H", "P3W6D", "P0D", "P27DT23H59M59S"])
def test_expiry_under_28_days_is_refused(expiry: str) -> None:
    with pytest.raises(BadParameter, match="28 days"):
        check_policy(_policy(expiry), NOW, None)


def test_policy_without_expiry() -> None:
    policy = check_policy({"lifetimeActions": [ROTATE_80]}, NOW, None)
    assert policy["attributes"] == {"created": NOW, "updated": NOW}
    assert check_policy({}, NOW, None)["lifetimeActions"] == []


@pytest.mark.parametrize(
    "body",
    [
        _policy(actions=[{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}]),
        _policy(actions=[{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "notify"}}]),
        _policy(actions=[{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "Delete"}}]),
        _policy(actions=[{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": 1}}]),
        _policy(actions=[{"trigger": {"timeAfterCreate": "P30D"}, "action": {}}]),
        _policy(actions=[{"trigger": {}, "action": {"type": "Rotate"}}]),
        _policy(
            actions=[
                {
                    "trigger": {"timeAfterCreate": "P30D", "timeBeforeExpiry": "P10D"},
                    "action": {"type": "Rotate"},
                }
            ]
        ),
        _policy(
            actions=[{"trigger": {"timeAfterCreate": "30 days"}, "action": {"type": "Rotate"}}]
        ),
        _policy(actions=[{"trigger": "P30D", "action": {"type": "Rotate"}}]),
        _policy(actions=[{"action": {"type": "Rotate"}}]),
        _policy(actions=["Rotate"]),
        _policy(actions=[ROTATE_80, ROTATE_80, ROTATE_80]),
        _policy(actions={"a": ROTATE_80}),
        {
            "lifetimeActions": [
                {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Rotate"}}
            ]
        },
        _policy("90 days"),
        _policy(90),
        {"attributes": "P90D"},
        {"attributes": ["P90D"]},
    ],
    ids=[
        "Notify",
        "notify",
        "unknown-action",
        "action-type-int",
        "action-empty",
        "no-trigger",
        "two-triggers",
        "bad-trigger-duration",
        "trigger-string",
        "missing-trigger",
        "action-string",
        "three-actions",
        "actions-object",
        "before-expiry-without-expiry",
        "expiry-words",
        "expiry-int",
        "attributes-string",
        "attributes-list",
    ],
)
def test_bad_policies(body: dict[str, Any]) -> None:
    with pytest.raises(BadParameter):
        check_policy(body, NOW, None)


# --- through the key service -----------------------------------------------------------------


def test_default_and_stored_policies(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        assert await s.keys.get_rotation_policy("K1") == DEFAULT_POLICY
        stored = await s.keys.set_rotation_policy("k1", _policy("P60D", [ROTATE_80]))
        assert await s.keys.get_rotation_policy("k1") == stored
        entry = await s.view.get(records.policy_path("k1"))
        assert records.load_policy(entry.value) == stored
        s.clock.advance(10)
        again = await s.keys.set_rotation_policy("k1", _policy("P30D"))
        assert again["attributes"] == {"created": NOW, "updated": NOW + 10, "expiryTime": "P30D"}
        with pytest.raises(BadParameter):
            await s.keys.set_rotation_policy("k1", _policy("P7D"))
        assert await s.keys.get_rotation_policy("k1") == again
        with pytest.raises(KeyNotFound):
            await s.keys.set_rotation_policy("nope", _policy())
        with pytest.raises(KeyNotFound):
            await s.keys.get_rotation_policy("nope")

    hsm(body)


def test_rotate_copies_parameters(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        release = {"data": b64u_encode(b"{}"), "immutable": True}
        cur = await s.keys.create(
            "Rot",
            {
                "kty": "EC-HSM",
                "crv": "P-384",
                "key_ops": ["sign"],
                "tags": {"t": "v"},
                "attributes": {"exportable": True, "nbf": NOW - 5, "exp": NOW + 5},
                "release_policy": release,
            },
        )
        s.clock.advance(60)
        new = await s.keys.rotate("rot")
        assert new.version != cur.version
        assert (new.name, new.kty, new.material.crv) == ("Rot", "EC-HSM", "P-384")
        assert new.key_ops == ("sign",) and dict(new.tags) == {"t": "v"}
        assert new.release_policy == cur.release_policy
        a = new.attributes
        assert a.exportable and a.enabled
        assert (a.created, a.updated, a.nbf, a.exp) == (NOW + 60, NOW + 60, None, None)
        assert (await s.keys.get("rot")).version == new.version
        assert (await s.keys.get("rot", cur.version)).version == cur.version

    hsm(body)


def test_rotate_oct_keeps_size(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        cur = await s.keys.create("aes", {"kty": "oct-HSM", "key_size": 192})
        new = await s.keys.rotate("aes")
        assert (new.kty, new.material.size) == ("oct-HSM", 192)
        assert new.material.private != cur.material.private

    hsm(body)


def test_rotate_rsa_keeps_size_and_exponent(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("rsa", {"kty": "RSA", "public_exponent": 3})
        new = await s.keys.rotate("rsa")
        numbers = new.material.private.public_key().public_numbers()
        assert (new.kty, new.material.size, numbers.e) == ("RSA", 2048, 3)

    hsm(body)


def test_rotate_applies_expiry_time(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        await s.keys.create("k1", {"kty": "oct"})
        await s.keys.set_rotation_policy("k1", _policy("P30D", [ROTATE_80]))
        s.clock.advance(1000)
        new = await s.keys.rotate("k1")
        assert new.attributes.exp == NOW + 1000 + 30 * DAY
        await s.keys.set_rotation_policy("k1", {"lifetimeActions": []})
        assert (await s.keys.rotate("k1")).attributes.exp is None

    hsm(body)


def test_rotate_missing_or_deleted_key(hsm: Runner) -> None:
    async def body(s: Any) -> None:
        with pytest.raises(KeyNotFound):
            await s.keys.rotate("nope")
        await s.keys.create("k1", {"kty": "oct"})
        await s.deleted.delete("k1")
        with pytest.raises(KeyNotFound):
            await s.keys.rotate("k1")

    hsm(body)
