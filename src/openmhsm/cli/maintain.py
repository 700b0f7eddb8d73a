"""`mhsm maintain`: ask the pool's supervisor for a rolling restart (never fewer than two
partitions serving) and follow it to the end."""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from openmhsm.cli.progress import Progress, add_progress_options, progress_mode
from openmhsm.cli.status import is_mhsm_process, pool_document_or_none, read_optional
from openmhsm.cluster.layout import DataDir

POLL_EVERY = 0.25


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    maintain = commands.add_parser(
        "maintain", help="rolling restart of the partitions, never fewer than two serving"
    )
    maintain.add_argument("--data-dir", required=True, type=Path)
    maintain.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    add_progress_options(maintain, only_show_errors=True)
    maintain.set_defaults(run=run_maintain)


def run_maintain(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    doc = pool_document_or_none(data, "maintain")
    if doc is None:
        return 1
    if doc.get("mode") == "dev":
        print(
            "mhsm maintain: a dev pool has one partition and nothing to roll; restart it with "
            "`mhsm down` and `mhsm up --dev` instead",
            file=sys.stderr,
        )
        return 2
    pid = doc.get("pid")
    if not isinstance(pid, int) or not is_mhsm_process(pid):
        print(f"mhsm maintain: the pool in {data.root} is not running", file=sys.stderr)
        return 1
    requested = time.time()
    os.kill(pid, signal.SIGUSR1)
    print(f"maintenance requested from supervisor pid {pid}", flush=True)
    with Progress("maintenance", progress_mode(args), unit="partitions ready") as bar:
        return _follow_maintenance(data, doc, pid, requested, args.timeout, bar)


def _follow_maintenance(
    data: DataDir,
    doc: Mapping[str, Any],
    pid: int,
    requested: float,
    timeout: float,
    bar: Progress,
) -> int:
    """Print each step as `pool.json` and `supervisor.json` show it until the supervisor reports
    a maintenance that started after `requested` as done; `bar` counts the partitions restarted
    and ready again. Returns the exit code."""
    before = {p["id"]: p.get("pid") for p in doc["partitions"]}
    restarted: dict[int, int] = {}
    ready: set[int] = set()
    last_state = None
    tls = ssl.create_default_context(cafile=doc["ca_cert"])
    deadline = time.monotonic() + timeout
    bar.update("requested", done=0, total=len(before))
    with httpx.Client(verify=tls, timeout=0.5) as http:
        while time.monotonic() < deadline:
            maintenance = read_optional(data.supervisor_state).get("maintenance", {})
            state = maintenance.get("state")
            if state != last_state:
                bar.say(f"  supervisor: maintenance {state}")
                bar.update(str(state))
                last_state = state
            current = read_optional(data.pool_json)
            for part in current.get("partitions", []):
                n, now = part["id"], part.get("pid")
                if now and now != before.get(n) and restarted.get(n) != now:
                    restarted[n] = now
                    ready.discard(n)
                    bar.say(
                        f"  [{len(restarted)}/{len(before)}] partition {n} restarted "
                        f"(pid {before.get(n)} -> {now})"
                    )
                if n in restarted and n not in ready and _answers_ready(http, part["url"]):
                    ready.add(n)
                    bar.say(f"        partition {n} ready")
                    bar.update(done=len(ready))
            if _finished_after(maintenance, requested):
                took = maintenance["finished"] - requested
                bar.say(f"maintenance done in {took:.1f} s: {len(restarted)} partitions restarted")
                return 0
            if not is_mhsm_process(pid):
                bar.say("mhsm maintain: the supervisor exited", file=sys.stderr)
                return 1
            time.sleep(POLL_EVERY)
    bar.say(f"mhsm maintain: not done after {timeout:.0f} s (state: {last_state})", sys.stderr)
    return 1


def _finished_after(maintenance: Mapping[str, Any], requested: float) -> bool:
    """A maintenance run that began after our request (not one already under way) is done."""
    started, finished = maintenance.get("started"), maintenance.get("finished")
    return (
        maintenance.get("state") == "done"
        and isinstance(started, int | float)
        and isinstance(finished, int | float)
        and started >= requested
        and finished >= requested
    )


def _answers_ready(http: httpx.Client, url: str) -> bool:
    try:
        return http.get(f"{url}/readyz").status_code == 200
    except httpx.HTTPError:
        return False
