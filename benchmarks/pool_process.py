"""`mhsm up` as a subprocess for a benchmark: started on a free port, ready when its pool.json
names its pid."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_pool(root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path, dict[str, Any]]:
    """`mhsm up --data-dir root/pool --port <free> *extra`; returns (process, data dir, doc)."""
    data = root / "pool"
    argv = ["up", "--data-dir", str(data), "--port", str(free_port()), *extra]
    proc = subprocess.Popen(
        [sys.executable, "-m", "openmhsm.cli.main", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pool_json = data / "pool.json"
        if pool_json.exists():
            doc: dict[str, Any] = json.loads(pool_json.read_text())
            if doc.get("pid") == proc.pid:
                return proc, data, doc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the pool did not start")
