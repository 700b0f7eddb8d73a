"""Load from `wrk` (Debian's package): a C load generator, so the client costs a fraction of
the CPU the server gets; the Python generator in `load.py` is the fallback without it."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import wrk_scripts


@dataclass(frozen=True)
class WrkResult:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu_seconds: float
    requests: int = 0
    first_failures: tuple[str, ...] = ()


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    token: str,
    path: str,
    body: dict[str, Any],
    *,
    connections: int = 32,
    threads: int = 1,
    seconds: float = 5.0,
) -> WrkResult:
    """POST `body` to `url + path` with `connections` keep-alive connections for `seconds`."""
    script = wrk_scripts.fixed_request("POST", token, body)
    return run_script(url + path, script, connections=connections, threads=threads, seconds=seconds)


def run_script(
    url: str,
    script: str,
    *,
    connections: int,
    threads: int = 1,
    seconds: float = 5.0,
    timeout_seconds: int = 10,
) -> WrkResult:
    """Run wrk on `url` with a Lua `script` from `wrk_scripts` for `seconds` (whole seconds,
    at least one); `client_cpu_seconds` is wrk's own user + system time."""
    duration = max(1, round(seconds))
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "load.lua"
        lua.write_text(script)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(threads, connections)}",
                f"-c{connections}",
                f"-d{duration}s",
                f"--timeout={timeout_seconds}s",
                "-s",
                str(lua),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        ).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_output(out, cpu)


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"wrk's output has no {pattern!r}:\n{text}")
    return float(match.group(1))


def parse_output(out: str, cpu_seconds: float) -> WrkResult:
    """wrk's summary plus the lines our scripts' `done` writes (latencies in microseconds)."""
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return WrkResult(
        rate=_number(r"Requests/sec:\s+([\d.]+)", out),
        p50_ms=_number(r"P50 ([\d.]+)", out) / 1000,
        p99_ms=_number(r"P99 ([\d.]+)", out) / 1000,
        errors=errors,
        client_cpu_seconds=cpu_seconds,
        requests=int(_number(r"(\d+) requests in", out)),
        first_failures=tuple(re.findall(r"^FAILURE (.*)$", out, re.MULTILINE)),
    )
