"""Random bytes from the operating system's CSPRNG."""

from __future__ import annotations

import os
from typing import Any

from openmhsm.errors import BadParameter

MAX_COUNT = 128


def random_bytes(count: Any) -> bytes:
    """`count` random bytes, 1..128. Raises BadParameter."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise BadParameter(f"count must be an integer from 1 to {MAX_COUNT}.")
    return os.urandom(count)
