"""Shared aliases and Protocols used across layers."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

JSON = dict[str, Any]


class Clock(Protocol):
    """Where time comes from, so tests and `--clock-offset` can shift it."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    """Wall-clock time, optionally shifted by a fixed offset in seconds."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a service principal or a managed identity of the pool."""

    object_id: str
    client_id: str
    name: str
    kind: str  # "service" | "managed"
    issuer: str = ""
