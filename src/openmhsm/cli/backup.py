"""`mhsm backup start|list|schedule` and `mhsm restore start`: full backups of a pool and
restoring them, whole or one key (DESIGN §7, API §3.2).

The pool writes and reads the backups; `start` asks it to and follows the job with a progress bar
on stderr, then prints a summary. `list` and the pruning of `schedule` read the container from
this process instead (with the same SAS token or this process's managed identity). `--dir PATH` is
`file://<absolute PATH>`: a directory the pool's processes write, so it must be theirs to reach.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openmhsm.backup import format as fmt
from openmhsm.backup.targets import MANIFEST, BackupTarget
from openmhsm.cli import backup_schedule
from openmhsm.cli.backup_jobs import (
    JobFailed,
    ProgressBar,
    Started,
    Storage,
    add_auth_options,
    add_target_options,
    backup_summary,
    checked_storage,
    pool_backups,
    progress_of,
    start_backup,
    start_restore,
    storage_of,
    wait,
)
from openmhsm.cli.output import Command, add_output_option, emit, reports_errors
from openmhsm.cli.pool_location import add_pool_location, has_pool_location, pool_of
from openmhsm.cli.progress import add_progress_options, progress_mode
from openmhsm.client import connect
from openmhsm.errors import MhsmError

FOLDER = re.compile(r"mhsm-(?P<pool>.+)-(?P<stamp>\d{14})")
_STAMP = "%Y%m%d%H%M%S"


def _parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(output options, output and pool options) shared by the subcommands."""
    output = argparse.ArgumentParser(add_help=False)
    add_output_option(output)
    pool = argparse.ArgumentParser(add_help=False, parents=[output])
    add_pool_location(pool)
    return output, pool


def _local_pool(output: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Output options and a required --data-dir: `schedule` reads the pool's name there."""
    local = argparse.ArgumentParser(add_help=False, parents=[output])
    local.add_argument(
        "--data-dir", required=True, type=Path, help="the pool's data dir (where pool.json is)"
    )
    return local


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("backup", help="start, list and schedule full backups")
    sub = parser.add_subparsers(dest="backup_command", required=True, metavar="COMMAND")
    output, pool = _parents()
    target = argparse.ArgumentParser(add_help=False)
    add_target_options(target)

    start = sub.add_parser(
        "start", parents=[pool, target], help="back up the whole pool and wait for it"
    )
    start.add_argument("--no-wait", action="store_true", help="print the job and return")
    add_progress_options(start)
    start.set_defaults(run=reports(run_start))
    listing = sub.add_parser(
        "list",
        parents=[output],
        help="the pool's recent backups (--data-dir), or the backup folders in a container",
    )
    add_pool_location(listing, required=False)
    add_target_options(listing, required=False)
    listing.set_defaults(run=reports(run_list))
    schedule = argparse.ArgumentParser(add_help=False)
    add_progress_options(schedule)
    backup_schedule.register(sub, [_local_pool(output), target, schedule], reports)


def register_restore(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("restore", help="restore a pool, or one key, from a full backup")
    sub = parser.add_subparsers(dest="restore_command", required=True, metavar="COMMAND")
    _, pool = _parents()
    start = sub.add_parser(
        "start", parents=[pool], help="replace the pool's contents (or one key) with a backup's"
    )
    folder = start.add_mutually_exclusive_group(required=True)
    folder.add_argument(
        "--backup-folder",
        metavar="URL",
        help="the backup folder's URL, as `backup start` printed it (blob or file://)",
    )
    folder.add_argument(
        "--folder-to-restore",
        metavar="FOLDER",
        help="az's flag: the backup folder's name in --storage-resource-uri (or its URL)",
    )
    start.add_argument(
        "--storage-resource-uri",
        "-u",
        metavar="URL",
        help="the container holding --folder-to-restore (az's flag)",
    )
    add_auth_options(start)
    start.add_argument(
        "--key", "--key-name", dest="key", metavar="NAME",
        help="restore only this key, with its versions",
    )  # fmt: skip
    start.add_argument("--no-wait", action="store_true", help="print the job and return")
    add_progress_options(start)
    start.set_defaults(run=reports(run_restore))


def reports(command: Command) -> Command:
    """reports_errors, plus a failed job and the backup target's errors as one line."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except JobFailed as e:
            print(e, file=sys.stderr)
            return 1
        except MhsmError as e:
            print(e.message, file=sys.stderr)
            return 1

    return reports_errors(run)


def run_start(args: argparse.Namespace) -> int:
    storage = storage_of(args)
    with connect(pool_of(args)) as clients:
        started = start_backup(clients, storage)
        if args.no_wait:
            emit(accepted(started), args.output)
            return 0
        bar = ProgressBar("backup", sys.stderr, mode=progress_mode(args))
        body = wait(clients, started, bar)
    emit(backup_summary(body, bar.seconds), args.output)
    return 0


def run_restore(args: argparse.Namespace) -> int:
    folder_url, flag = folder_to_restore(args)
    storage = checked_storage(folder_url, flag, args)
    with connect(pool_of(args)) as clients:
        started = start_restore(clients, folder_url, storage, args.key)
        if args.no_wait:
            emit(accepted(started), args.output)
            return 0
        label, unit = ("key restore", "versions") if args.key else ("restore", "records")
        bar = ProgressBar(label, sys.stderr, unit=unit, mode=progress_mode(args))
        body = wait(clients, started, bar)
    summary: dict[str, Any] = {
        "status": body["status"],
        "jobId": body.get("jobId"),
        "folderUrl": folder_url,
    }
    if args.key:
        summary["key"] = args.key
    summary[unit] = progress_of(body)[0]
    summary["seconds"] = bar.seconds
    emit(summary, args.output)
    return 0


def folder_to_restore(args: argparse.Namespace) -> tuple[str, str]:
    """(the backup folder's URL, the flag that named it): --backup-folder, or az's
    --folder-to-restore, a folder in --storage-resource-uri (or a whole URL). Raises ValueError."""
    if args.backup_folder is not None:
        if args.storage_resource_uri is not None:
            raise ValueError("--backup-folder is a whole URL: give no --storage-resource-uri")
        url: str = args.backup_folder
        return url, "--backup-folder"
    folder: str = args.folder_to_restore
    if "://" in folder:
        if args.storage_resource_uri is not None:
            raise ValueError("--folder-to-restore is a URL: give no --storage-resource-uri")
        return folder, "--folder-to-restore"
    if args.storage_resource_uri is None:
        raise ValueError("--folder-to-restore names a folder in --storage-resource-uri: give it")
    container = str(args.storage_resource_uri).rstrip("/")
    return f"{container}/{folder.strip('/')}", "--storage-resource-uri"


def run_list(args: argparse.Namespace) -> int:
    if args.dir is not None or args.storage_container_uri is not None:
        emit(asyncio.run(list_backups(storage_of(args))), args.output)
        return 0
    if not has_pool_location(args):
        raise ValueError("give --data-dir (the pool's backups) or a container to look in")
    with connect(pool_of(args)) as clients:
        emit(pool_backups(clients), args.output)
    return 0


def accepted(started: Started) -> dict[str, Any]:
    """What `--no-wait` prints: the job, and the URL its status is polled at."""
    return {
        "status": started.body["status"],
        "jobId": started.job_id,
        "statusUrl": started.status_url,
    }


async def list_backups(storage: Storage) -> list[dict[str, Any]]:
    """Every `mhsm-*` folder in the container, oldest first. Raises MhsmError (TargetError,
    BadParameter)."""
    target = storage.open()
    try:
        folders = await target.list_folders("mhsm-")
        return list(await asyncio.gather(*(describe_folder(target, f) for f in folders)))
    finally:
        target.close()


async def describe_folder(target: BackupTarget, folder: str) -> dict[str, Any]:
    """A folder's pool, creation time and record counts, from its manifest (read, not verified:
    that needs the domain) or, for an incomplete backup, from its name."""
    row: dict[str, Any] = {"folder": folder, "pool": None, "created": None, "complete": False}
    named = FOLDER.fullmatch(folder)
    if named:
        row["pool"] = named["pool"]
        try:
            stamp = datetime.strptime(named["stamp"], _STAMP).replace(tzinfo=UTC)
            row["created"] = stamp.isoformat()
        except ValueError:
            pass
    row.update({"records": None, "counts": {}, "url": target.folder_url(folder)})
    if not await target.exists(folder, MANIFEST):
        return row
    try:
        manifest = fmt.peek_manifest(await target.read(folder, MANIFEST, fmt.MAX_MANIFEST))
    except fmt.BackupInvalid:
        return row
    counts = manifest.get("counts")
    if isinstance(counts, dict) and all(isinstance(v, int) for v in counts.values()):
        row["counts"] = {str(k): v for k, v in counts.items()}
        row["records"] = sum(counts.values())
    if isinstance(manifest.get("pool"), str):
        row["pool"] = manifest["pool"]
    created = manifest.get("created")
    if isinstance(created, int) and not isinstance(created, bool):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            row["created"] = datetime.fromtimestamp(created, UTC).isoformat()
    row["complete"] = True
    return row
