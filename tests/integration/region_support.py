"""An extended region as a client sees it (its own pool.json), and waiting for a replicated key."""

from __future__ import annotations

import json
import time
from pathlib import Path

from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from dev_pool import DevPool

APPEAR_TIMEOUT = 10.0


def extended_view(data_dir: Path) -> DevPool:
    """The extended region as a client sees it: its own pool.json (URL, CA, admin)."""
    view = DevPool(data_dir, 0)
    view.doc = json.loads((data_dir / "pool.json").read_text())
    return view


def wait_for_key(keys: KeyClient, name: str) -> None:
    deadline = time.monotonic() + APPEAR_TIMEOUT
    while True:
        try:
            keys.get_key(name)
            return
        except HttpResponseError as exc:
            if exc.status_code != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)
