"""`mhsm backup schedule`: Managed HSM has no backup scheduler, so the CLI is one. In the
foreground, every `--every`, it backs the pool up, waits for the job, and then deletes this pool's
backups beyond the newest `--keep` from the container (client-side). A failed backup is reported and
the schedule goes on; Ctrl-C (or SIGTERM) stops it between or during backups.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import AzureError

from openmhsm.backup.targets import MANIFEST, BackupTarget
from openmhsm.cli.backup_jobs import (
    JobFailed,
    ProgressBar,
    Storage,
    backup_summary,
    start_backup,
    storage_of,
    wait,
)
from openmhsm.cli.output import Command, emit, error_message
from openmhsm.cli.progress import AUTO, progress_mode
from openmhsm.client import connect, load_pool_document
from openmhsm.errors import MhsmError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_EVERY = 366 * 86400
_DURATION = re.compile(r"(?:\d{1,9}[smhd])+")
_PART = re.compile(r"(\d+)([smhd])")
_STAMP = r"\d{14}"


def duration_arg(text: str) -> float:
    """argparse type for `90s`, `15m`, `1h`, `1d` (or sums like `1h30m`), in seconds. Raises
    argparse.ArgumentTypeError."""
    if not _DURATION.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use a number and a unit: 90s, 15m, 1h, 1d)"
        )
    seconds = sum(int(n) * UNITS[unit] for n, unit in _PART.findall(text))
    if not 0 < seconds <= MAX_EVERY:
        raise argparse.ArgumentTypeError(f"a duration must be from 1s to 366d, not {text!r}")
    return float(seconds)


def positive_int(text: str) -> int:
    """argparse type for an integer >= 1. Raises argparse.ArgumentTypeError."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
    reports: Callable[[Command], Command],
) -> None:
    schedule = sub.add_parser(
        "schedule",
        parents=parents,
        help="back up every DURATION and keep the newest N backups (runs in the foreground)",
    )
    schedule.add_argument(
        "--every", type=duration_arg, required=True, metavar="DURATION",
        help="time between backup starts: 90s, 15m, 1h, 1d",
    )  # fmt: skip
    schedule.add_argument(
        "--keep", type=positive_int, required=True, metavar="N",
        help="keep this pool's newest N complete backups; delete older ones",
    )  # fmt: skip
    schedule.add_argument(
        "--count", type=positive_int, metavar="K", help="stop after K backups (default: never)"
    )
    schedule.set_defaults(run=reports(run_schedule))


def run_schedule(args: argparse.Namespace) -> int:
    storage = storage_of(args)
    pool = pool_name(load_pool_document(args.data_dir))
    failures = made = 0
    next_start = time.monotonic()
    with _sigterm_stops():
        try:
            while args.count is None or made < args.count:
                time.sleep(max(0.0, next_start - time.monotonic()))
                succeeded = scheduled_backup(
                    args.data_dir, storage, pool, args.keep, args.output, progress_mode(args)
                )
                made, failures = made + 1, failures + (not succeeded)
                next_start = next_slot(next_start, args.every, time.monotonic())
        except KeyboardInterrupt:
            done = f"{made} backup{'' if made == 1 else 's'}"
            print(f"backup schedule: stopped after {done}", file=sys.stderr)
            return 0
    return 1 if failures else 0


def pool_name(doc: dict[str, Any]) -> str:
    """The pool's name from pool.json: backups of this pool are `mhsm-<name>-<stamp>`."""
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("pool.json lacks name")
    return name


def next_slot(previous: float, every: float, now: float) -> float:
    """The first start time after `previous` on its grid that is not in the past: a backup that
    overran skips the slots it missed instead of starting backups back to back."""
    missed = max(0, math.ceil((now - previous) / every) - 1)
    return previous + (missed + 1) * every


def scheduled_backup(
    data_dir: Path, storage: Storage, pool: str, keep: int, fmt: str, mode: str = AUTO
) -> bool:
    """One backup, then pruning; prints a summary line (or an error line). True if the backup
    succeeded (even if pruning failed). pool.json is read each time: a restarted pool may serve
    on another port."""
    bar = ProgressBar("backup", sys.stderr, mode=mode)
    try:
        with connect(data_dir) as clients:
            body = wait(clients, start_backup(clients, storage), bar)
    except JobFailed as e:
        print(e, file=sys.stderr)
        return False
    except (AzureError, OSError, ValueError) as e:
        print(f"backup: {error_message(e)}", file=sys.stderr)
        return False
    summary: dict[str, Any] = {**backup_summary(body, bar.seconds), "pruned": []}
    try:
        newest = folder_of(str(summary["folderUrl"] or ""))
        summary["pruned"] = asyncio.run(_prune(storage, pool, keep, newest))
    except (MhsmError, ValueError) as e:
        print(f"backup: pruning failed: {getattr(e, 'message', e)}", file=sys.stderr)
    _emit_line(summary, fmt)
    return True


def folder_of(folder_url: str) -> str:
    """The last path segment of a backup's folder URL. Raises ValueError if there is none."""
    folder = unquote(urlsplit(folder_url).path.rstrip("/").rpartition("/")[2])
    if not folder:
        raise ValueError("the pool did not say which folder it backed up to")
    return folder


async def _prune(storage: Storage, pool: str, keep: int, newest: str) -> list[str]:
    target = storage.open()
    try:
        return await prune(target, pool, keep, newest)
    finally:
        target.close()


async def prune(target: BackupTarget, pool: str, keep: int, newest: str) -> list[str]:
    """Delete this pool's backup folders beyond the `keep` newest complete ones, counting from
    `newest` (the backup just made) down; return their names, oldest first.

    Only folders named exactly `mhsm-<pool>-<14 digits>` are touched: never another pool's (whose
    name may merely start with this one's), nor a folder newer than `newest` (a backup started
    since). An incomplete folder older than `newest` is a failed backup's remains and is deleted.
    Raises MhsmError (TargetError).
    """
    mine = re.compile(rf"mhsm-{re.escape(pool)}-{_STAMP}")
    folders = [
        f for f in await target.list_folders(f"mhsm-{pool}-") if mine.fullmatch(f) and f <= newest
    ]
    kept, doomed = 0, []
    for folder in sorted(folders, reverse=True):  # the stamp makes name order time order
        complete = folder == newest or await target.exists(folder, MANIFEST)
        if complete and kept < keep:
            kept += 1
        else:
            doomed.append(folder)
    for folder in reversed(doomed):
        await target.delete_folder(folder)
    return doomed[::-1]


def _emit_line(result: dict[str, Any], fmt: str) -> None:
    """One line per backup in JSON (JSON Lines, for logs), else emit's table."""
    if fmt == "json":
        print(json.dumps(result), flush=True)
    else:
        emit(result, fmt)
        sys.stdout.flush()


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM (a service manager's stop) ends the schedule like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
