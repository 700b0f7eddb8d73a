"""`mhsm region add`, `promote` and `remove`: extend a local pool to a second region on this
machine, make that region the primary (failover by command), or take it away again
(DESIGN §8)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from openmhsm.cli import pool, region_frontdoor
from openmhsm.cli.pool_options import add_up_arguments
from openmhsm.cli.progress import Progress, add_progress_options, progress_mode
from openmhsm.cli.status import is_mhsm_process, read_optional
from openmhsm.cluster.layout import DataDir, read_json
from openmhsm.cluster.region_setup import (
    RegionSetupError,
    link_primary,
    prepare_extended,
    unlink_peer,
)
from openmhsm.config import PoolConfig
from openmhsm.errors import StorageUnavailable
from openmhsm.region.link import check_failover_after


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    region = commands.add_parser("region", help="extend a pool to a second region")
    actions = region.add_subparsers(dest="region_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create and start an extended region of a local pool")
    add.add_argument("--primary", required=True, type=Path, help="the primary pool's data dir")
    add.add_argument("--data-dir", required=True, type=Path, help="the new region's data dir")
    add.add_argument("--port", required=True, type=int, help="the new region's HTTPS port")
    add.add_argument(
        "--failover-after",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="promote the extended region after the primary is lost this long (0: by command "
        "only; default 30)",
    )
    add_progress_options(add, only_show_errors=True)
    add.set_defaults(run=run_add)
    promote = actions.add_parser(
        "promote", help="make an extended region the primary: it takes writes from now on"
    )
    promote.add_argument("--data-dir", required=True, type=Path)
    promote.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    add_progress_options(promote, only_show_errors=True)
    promote.set_defaults(run=run_promote)
    remove = actions.add_parser("remove", help="stop an extended region and delete its data")
    remove.add_argument("--data-dir", required=True, type=Path)
    remove.set_defaults(run=run_remove)
    region_frontdoor.register(actions)


def _running(data: DataDir) -> bool:
    if not data.pool_json.exists():
        return False
    pid = read_json(data.pool_json).get("pid")
    return isinstance(pid, int) and is_mhsm_process(pid)


def run_add(args: argparse.Namespace) -> int:
    primary, extended = DataDir(args.primary.resolve()), DataDir(args.data_dir.resolve())
    if not _running(primary):
        print(
            f"mhsm region add: the primary pool in {primary.root} is not running", file=sys.stderr
        )
        return 1
    said = io.StringIO()  # `mhsm up`'s lines, printed after the progress line ends
    with Progress("region add", progress_mode(args)) as bar:
        bar.update("linking to the primary")
        try:
            config = prepare_extended(primary, extended, args.port, args.failover_after)
            asyncio.run(link_primary(primary, extended))
        except RegionSetupError as exc:
            bar.say(f"mhsm region add: {exc}", sys.stderr)
            return 1
        except StorageUnavailable as exc:
            bar.say(f"mhsm region add: the primary's storage did not answer: {exc}", sys.stderr)
            return 1
        bar.update("starting the extended region")
        up = argparse.ArgumentParser(prog="mhsm up")
        add_up_arguments(up)
        with contextlib.redirect_stdout(said):
            code = pool.run_up(
                up.parse_args(
                    ["--data-dir", str(extended.root), "--port", str(args.port), "--detach"]
                )
            )
    print(said.getvalue(), end="")
    if code == 0 and config.region is not None:
        print(
            f"extended region of pool '{config.name}' serving at {config.url}; "
            f"writes go to the primary at {config.region.primary_url}"
        )
    return code


def run_promote(args: argparse.Namespace) -> int:
    """Failover by command: the extended region's supervisor stops following the primary and
    stores its link as the primary's, one term up; its partitions take writes within a second,
    without a restart. A primary still running sees the higher term and steps down. What the
    old primary committed but had not replicated is reported when it steps down."""
    data = DataDir(args.data_dir.resolve())
    if not data.config.exists():
        print(f"mhsm region promote: no pool in {data.root}", file=sys.stderr)
        return 1
    if PoolConfig.from_json(read_json(data.config)).region is None:
        print(f"mhsm region promote: {data.root} is not an extended region", file=sys.stderr)
        return 1
    if not _running(data):
        up = argparse.ArgumentParser(prog="mhsm up")
        add_up_arguments(up)
        code = pool.run_up(up.parse_args(["--data-dir", str(data.root), "--detach"]))
        if code != 0:
            return code
    os.kill(int(read_json(data.pool_json)["pid"]), signal.SIGUSR2)
    deadline = time.monotonic() + args.timeout
    with Progress("region promote", progress_mode(args)) as bar:
        bar.update("waiting for the region to take over")
        while time.monotonic() < deadline:
            state = read_optional(data.region_state)
            if state.get("role") == "primary":
                bar.say(
                    f"region {state.get('url')} promoted: it is the primary at term "
                    f"{state.get('term')} and accepts writes (it followed {state.get('peer_url')})"
                )
                return 0
            time.sleep(0.2)
    print(f"mhsm region promote: not promoted after {args.timeout:g} s", file=sys.stderr)
    return 1


def _seconds(text: str) -> float:
    try:
        return check_failover_after(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_remove(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    if not data.config.exists():
        print(f"mhsm region remove: no pool in {data.root}", file=sys.stderr)
        return 1
    if PoolConfig.from_json(read_json(data.config)).region is None:
        print(f"mhsm region remove: {data.root} is not an extended region", file=sys.stderr)
        return 1
    try:
        asyncio.run(unlink_peer(data))
    except StorageUnavailable:
        print("mhsm region remove: the primary did not answer; its link stays", file=sys.stderr)
    if data.pool_json.exists():
        code = pool.run_down(argparse.Namespace(data_dir=data.root))
        if code != 0:
            return code
    shutil.rmtree(data.root)
    print(f"extended region removed: {data.root} deleted")
    return 0
