"""The settings store: the known setting and its default, case-insensitive names, boolean
values in any case stored lower-cased, and a change seen by every partition of the pool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from unit_stack import Stack

from openmhsm import errors
from openmhsm.services.settings import KNOWN, Setting, SettingsStore

ARM = "AllowKeyManagementOperationsThroughARM"


def store(stack: Stack) -> SettingsStore:
    assert stack.ctx.settings is not None
    return stack.ctx.settings


def test_defaults(hsm: Callable[..., Any]) -> None:
    async def body(stack: Stack) -> None:
        assert await store(stack).list() == [Setting(ARM, "false", "boolean")]
        assert await store(stack).get(ARM.lower()) == Setting(ARM, "false", "boolean")

    hsm(body)
    assert [s.name for s in KNOWN] == [ARM]


@pytest.mark.parametrize("given, stored", [("true", "true"), ("TRUE", "true"), ("False", "false")])
def test_update_normalizes_booleans(hsm: Callable[..., Any], given: str, stored: str) -> None:
    async def body(stack: Stack) -> None:
        assert await store(stack).update(ARM.upper(), given) == Setting(ARM, stored)
        assert await store(stack).get(ARM) == Setting(ARM, stored)
        assert await store(stack).list() == [Setting(ARM, stored)]

    hsm(body)


@pytest.mark.parametrize("value", ["yes", "1", "", " true", True, 1, None, ["true"]])
def test_update_refuses_non_boolean_strings(hsm: Callable[..., Any], value: object) -> None:
    async def body(stack: Stack) -> None:
        with pytest.raises(errors.BadParameter):
            await store(stack).update(ARM, value)
        assert (await store(stack).get(ARM)).value == "false"

    hsm(body)


def test_unknown_setting_is_not_found(hsm: Callable[..., Any]) -> None:
    async def body(stack: Stack) -> None:
        for call in (store(stack).get("NoSuchSetting"), store(stack).update("x", "true")):
            with pytest.raises(errors.NotFound) as caught:
                await call
            assert caught.value.inner_code == "SettingNotFound"

    hsm(body)


def test_sealed_and_seen_by_peers(hsm: Callable[..., Any]) -> None:
    async def body(stack: Stack) -> None:
        peer = await stack.peer()
        await store(stack).update(ARM, "true")
        assert (await store(peer).get(ARM)).value == "true"
        raw = await stack.storage.get("/t/settings/" + ARM.lower())
        assert raw is not None and b'"value":"true"' not in raw.value  # sealed by the barrier

    hsm(body)
