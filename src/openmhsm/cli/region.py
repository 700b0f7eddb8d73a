"""`mhsm region add`, `promote` and `remove`: extend a local pool to a second region on this
machine, make that region a pool of its own (failover by command), or take it away again
(DESIGN §8)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from openmhsm.cli import pool
from openmhsm.cli.pool_options import add_up_arguments
from openmhsm.cli.status import is_mhsm_process
from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.region_setup import RegionSetupError, prepare_extended
from openmhsm.config import PoolConfig


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    region = commands.add_parser("region", help="extend a pool to a second region")
    actions = region.add_subparsers(dest="region_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create and start an extended region of a local pool")
    add.add_argument("--primary", required=True, type=Path, help="the primary pool's data dir")
    add.add_argument("--data-dir", required=True, type=Path, help="the new region's data dir")
    add.add_argument("--port", required=True, type=int, help="the new region's HTTPS port")
    add.set_defaults(run=run_add)
    promote = actions.add_parser(
        "promote", help="make an extended region a pool of its own that accepts writes"
    )
    promote.add_argument("--data-dir", required=True, type=Path)
    promote.set_defaults(run=run_promote)
    remove = actions.add_parser("remove", help="stop an extended region and delete its data")
    remove.add_argument("--data-dir", required=True, type=Path)
    remove.set_defaults(run=run_remove)


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
    try:
        config = prepare_extended(primary, extended, args.port)
    except RegionSetupError as exc:
        print(f"mhsm region add: {exc}", file=sys.stderr)
        return 1
    up = argparse.ArgumentParser(prog="mhsm up")
    add_up_arguments(up)
    code = pool.run_up(
        up.parse_args(["--data-dir", str(extended.root), "--port", str(args.port), "--detach"])
    )
    if code == 0 and config.region is not None:
        print(
            f"extended region of pool '{config.name}' serving at {config.url}; "
            f"writes go to the primary at {config.region.primary_url}"
        )
    return code


def run_promote(args: argparse.Namespace) -> int:
    """Failover by command: stop following the primary (lost, or to be retired), drop the
    region link from config.json, and start the region again as a pool that accepts writes and
    runs the scheduler. What the primary acknowledged but had not replicated yet is not here."""
    data = DataDir(args.data_dir.resolve())
    if not data.config.exists():
        print(f"mhsm region promote: no pool in {data.root}", file=sys.stderr)
        return 1
    saved = read_json(data.config)
    config = PoolConfig.from_json(saved)
    if config.region is None:
        print(f"mhsm region promote: {data.root} is not an extended region", file=sys.stderr)
        return 1
    if _running(data):
        code = pool.run_down(argparse.Namespace(data_dir=data.root))
        if code != 0:
            return code
    saved.pop("region", None)
    saved["activation"] = "manual"  # the domain is active already: never activate it anew
    write_json_atomic(data.config, saved)
    data.region_state.unlink(missing_ok=True)
    up = argparse.ArgumentParser(prog="mhsm up")
    add_up_arguments(up)
    code = pool.run_up(up.parse_args(["--data-dir", str(data.root), "--detach"]))
    if code == 0:
        print(
            f"pool '{config.name}' promoted: it accepts writes at {config.url} "
            f"(it followed {config.region.primary_url})"
        )
    return code


def run_remove(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    if not data.config.exists():
        print(f"mhsm region remove: no pool in {data.root}", file=sys.stderr)
        return 1
    if PoolConfig.from_json(read_json(data.config)).region is None:
        print(f"mhsm region remove: {data.root} is not an extended region", file=sys.stderr)
        return 1
    if data.pool_json.exists():
        code = pool.run_down(argparse.Namespace(data_dir=data.root))
        if code != 0:
            return code
    shutil.rmtree(data.root)
    print(f"extended region removed: {data.root} deleted")
    return 0
