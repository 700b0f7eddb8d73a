"""The pool's account settings (API §3.3): a fixed set of named, typed values.

Each changed setting is a record at `settings/<lower-cased name>` in the (sealed, prefix-scoped,
replicated) storage view this store receives; a setting never written has its default. Reads go
to storage every time: settings are read rarely, and a read through is coherent across partitions
with no cache to keep.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from openmhsm import errors
from openmhsm.services.fence import guarded_txn
from openmhsm.storage.base import Put, Storage

PREFIX = "settings/"
BOOLEAN = "boolean"
_RECORD_VERSION = 1
_BOOLEANS = ("true", "false")


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # display form
    value: str  # always a string on the wire, e.g. "false"
    type: str = BOOLEAN


KNOWN: tuple[Setting, ...] = (Setting("AllowKeyManagementOperationsThroughARM", "false"),)
_DEFAULTS = {setting.name.lower(): setting for setting in KNOWN}


class SettingsStore:
    """Read and change the pool's settings."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def list(self) -> list[Setting]:
        """Every known setting with its current value, in declaration order."""
        return [await self.get(setting.name) for setting in KNOWN]

    async def get(self, name: str) -> Setting:
        """The setting's current value. Raises `errors.NotFound` for an unknown name."""
        default = _default(name)
        entry = await self._storage.get(PREFIX + default.name.lower())
        if entry is None:
            return default
        record = json.loads(entry.value)
        if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:
            raise ValueError(f"unsupported setting record at {entry.key}")
        return Setting(default.name, str(record["value"]), default.type)

    async def update(self, name: str, value: object) -> Setting:
        """Set a setting; return it as stored. Boolean values are accepted in any case and
        stored lower-cased. Raises `errors.NotFound` for an unknown name and
        `errors.BadParameter` for a value the setting's type does not allow."""
        default = _default(name)
        normalized = _normalize(default, value)
        record = {"version": _RECORD_VERSION, "name": default.name, "value": normalized}
        data = json.dumps(record, separators=(",", ":"), sort_keys=True).encode("utf-8")
        await guarded_txn(self._storage, [Put(PREFIX + default.name.lower(), data)])
        return Setting(default.name, normalized, default.type)


def _default(name: str) -> Setting:
    default = _DEFAULTS.get(name.lower()) if isinstance(name, str) else None
    if default is None:
        known = ", ".join(setting.name for setting in KNOWN)
        raise errors.NotFound(
            f"There is no setting named '{str(name)[:64]}'. Known settings: {known}.",
            inner_code="SettingNotFound",
        )
    return default


def _normalize(setting: Setting, value: object) -> str:
    if setting.type == BOOLEAN and isinstance(value, str) and value.lower() in _BOOLEANS:
        return value.lower()
    raise errors.BadParameter(
        f'The value of setting \'{setting.name}\' must be the string "true" or "false".',
        inner_code="InvalidSettingValue",
    )
