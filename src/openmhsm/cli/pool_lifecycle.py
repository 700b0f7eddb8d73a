"""`mhsm pool delete|recover|purge|list-deleted`: soft-delete of a local pool, as Managed HSM
soft-deletes the HSM itself; and the check `mhsm up` makes before it starts a pool.

A deleted pool keeps its data for its retention period (`mhsm up --retention-days`, 7 to 90,
default 90), cannot be started, and keeps its name taken; it can be recovered within the period
and is purged once the period ends (by the next `mhsm pool ...` or `mhsm up`). Purging earlier is
refused while purge protection holds. Time is the system clock shifted by $MHSM_CLOCK_OFFSET
seconds when set, else by the pool's `--clock-offset`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from openmhsm.cli.output import add_output_option, emit, reports_errors
from openmhsm.cluster.deleted_pools import (
    DeletedPool,
    DeletedPoolRegistry,
    PoolBusy,
    clock_offset,
    iso_date,
    locked,
    marker_path,
    purge_data_dir,
    read_marker,
    state_dir,
    write_marker,
)
from openmhsm.cluster.layout import DataDir, read_json
from openmhsm.config import DEFAULT_POOL_NAME, PoolConfig
from openmhsm.services.deleted import PURGE_PROTECTED
from openmhsm.types import SystemClock

STOPPED_LOCK_WAIT = 5.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pool = commands.add_parser("pool", help="delete, recover or purge a local pool (soft-delete)")
    verbs = pool.add_subparsers(dest="verb", required=True, metavar="VERB")
    output = argparse.ArgumentParser(add_help=False)
    add_output_option(output)
    located = argparse.ArgumentParser(add_help=False)
    located.add_argument("--data-dir", required=True, type=Path)

    delete = verbs.add_parser(
        "delete",
        parents=[located, output],
        help="stop the pool and soft-delete it: recoverable until its retention period ends",
    )
    delete.set_defaults(run=reports_errors(run_delete))
    recover = verbs.add_parser(
        "recover", parents=[located, output], help="undo a delete within the retention period"
    )
    recover.set_defaults(run=reports_errors(run_recover))
    purge = verbs.add_parser(
        "purge", parents=[located], help="remove a deleted pool's data for good (prints nothing)"
    )
    purge.set_defaults(run=reports_errors(run_purge))
    listing = verbs.add_parser(
        "list-deleted", parents=[output], help="deleted pools and their scheduled purge dates"
    )
    listing.set_defaults(run=reports_errors(run_list_deleted))


# --- the commands ----------------------------------------------------------------------------


def run_delete(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    registry, now = _registry(), _now(data)
    _sweep(registry, _sweep_now())
    if not data.config.exists():
        return _fail("delete", f"no pool in {data.root}")
    deleted = read_marker(data)
    if deleted is not None:
        registry.record(deleted)  # an interrupted delete may have marked the dir only
        return _fail("delete", f"{_described(deleted)} is already deleted; {_purge_note(deleted)}")
    if _stop(data) != 0:
        return 1
    config = PoolConfig.from_json(read_json(data.config))
    deleted = DeletedPool.new(config.name, data, config.deletion, now)
    try:
        # A stopped pool's process may still be closing its files (and the lock) for a moment.
        with locked(data, wait=STOPPED_LOCK_WAIT):
            write_marker(data, deleted)
            registry.record(deleted)
    except PoolBusy:
        return _fail("delete", _busy(data))
    emit(deleted.summary(), args.output)
    return 0


def run_recover(args: argparse.Namespace) -> int:
    data, registry, now, deleted, swept = _look(args)
    if deleted is None:
        if swept:
            return _fail("recover", "its retention period had ended, so it was purged")
        return _fail("recover", f"the pool in {data.root} is not deleted")
    if not deleted.recoverable(now):
        return _fail(
            "recover",
            f"the retention period of {_described(deleted)} ended on "
            f"{iso_date(deleted.scheduled_purge)}; it can only be purged",
        )
    try:
        with locked(data):
            marker_path(data).unlink()
            registry.forget(deleted.data_dir)
    except PoolBusy:
        return _fail("recover", _busy(data))
    emit({"name": deleted.name, "dataDir": deleted.data_dir, "recovered": True}, args.output)
    return 0


def run_purge(args: argparse.Namespace) -> int:
    data, registry, now, deleted, swept = _look(args)
    if deleted is None:
        if swept:
            return 0
        return _fail(
            "purge",
            f"the pool in {data.root} is not deleted; delete it first with "
            f"`mhsm pool delete --data-dir {data.root}`",
        )
    if not deleted.purgeable(now):
        return _fail(
            "purge",
            f"(Forbidden) {PURGE_PROTECTED} Scheduled purge date: "
            f"{iso_date(deleted.scheduled_purge)}.",
        )
    try:
        with locked(data):
            left = purge_data_dir(data)
            registry.forget(deleted.data_dir)
    except PoolBusy:
        return _fail("purge", _busy(data))
    if left:
        names = ", ".join(sorted(p.name for p in left))
        print(f"mhsm pool purge: left what the pool did not make in {data.root}: {names}",
              file=sys.stderr)  # fmt: skip
    return 0


def run_list_deleted(args: argparse.Namespace) -> int:
    registry = _registry()
    _sweep(registry, _sweep_now())
    emit([{**e.summary(), "dataDir": e.data_dir} for e in registry.entries()], args.output)
    return 0


# --- `mhsm up` -------------------------------------------------------------------------------


def start_refusal(args: argparse.Namespace, *, sweep: bool) -> str | None:
    """Why `mhsm up` must not start the pool in args.data_dir (it is deleted, or it would be a
    new pool under the name of a deleted one), or None. With `sweep`, first purge the deleted
    pools whose retention period has ended, printing a line for each."""
    data = DataDir(args.data_dir.resolve())
    registry = _registry()
    try:
        now = _sweep_now()  # other pools are a machine-wide matter: not this pool's clock
    except ValueError as e:
        return str(e)
    if sweep:
        try:
            _sweep(registry, now)
        except OSError as e:  # another pool's purge must not stop this one from starting
            print(f"mhsm: purging deleted pools failed: {e}", file=sys.stderr)
    deleted = read_marker(data)
    if deleted is not None:
        return (
            f"{_described(deleted)} is deleted; {_purge_note(deleted)}. Recover it with "
            f"`mhsm pool recover --data-dir {data.root}`"
        )
    if data.config.exists():
        return None
    name = args.name or DEFAULT_POOL_NAME
    holder = registry.holding_name(
        name, _sweep_now()
    )  # a machine-wide matter: not this pool's clock
    if holder is None:
        return None
    verbs = "recover" if holder.purge_protection else "recover|purge"
    return (
        f"the name '{name}' belongs to a deleted pool until {iso_date(holder.scheduled_purge)}; "
        f"choose another --name, or `mhsm pool {verbs} --data-dir {holder.data_dir}`"
    )


# --- helpers ---------------------------------------------------------------------------------


def _registry() -> DeletedPoolRegistry:
    return DeletedPoolRegistry(state_dir(os.environ))


def _now(data: DataDir | None) -> float:
    """The lifecycle clock: $MHSM_CLOCK_OFFSET, else the pool's configured offset."""
    configured = 0.0
    if data is not None and data.config.exists():
        configured = PoolConfig.from_json(read_json(data.config)).clock_offset
    return SystemClock(clock_offset(os.environ, configured)).now()


def _look(
    args: argparse.Namespace,
) -> tuple[DataDir, DeletedPoolRegistry, float, DeletedPool | None, bool]:
    """The data dir, the registry, the pool's clock, its deletion marker, and whether the sweep
    that runs first has just purged it."""
    data = DataDir(args.data_dir.resolve())
    registry, now = _registry(), _now(data)
    swept = _purged_here(_sweep(registry, _sweep_now()), data)
    return data, registry, now, read_marker(data), swept


def _sweep_now() -> float:
    """The clock the sweep of every deleted pool uses: $MHSM_CLOCK_OFFSET only, never one
    pool's configured offset (a scratch pool shifted a year ahead must not purge the others)."""
    return SystemClock(clock_offset(os.environ, 0.0)).now()


def _sweep(registry: DeletedPoolRegistry, now: float) -> list[DeletedPool]:
    purged = registry.sweep(now)
    for entry in purged:
        print(
            f"mhsm: purged {_described(entry)}: its retention period ended on "
            f"{iso_date(entry.scheduled_purge)}",
            file=sys.stderr,
        )
    return purged


def _stop(data: DataDir) -> int:
    """Stop the pool as `mhsm down` does; its messages go to stderr (stdout is the result)."""
    if not data.pool_json.exists():
        return 0
    from openmhsm.cli.pool import run_down  # late: pool imports this module for `mhsm up`

    with contextlib.redirect_stdout(sys.stderr):
        return run_down(argparse.Namespace(data_dir=data.root))


def _purged_here(purged: list[DeletedPool], data: DataDir) -> bool:
    return any(e.data_dir == str(data.root) for e in purged)


def _described(deleted: DeletedPool) -> str:
    return f"pool '{deleted.name}' in {deleted.data_dir}"


def _purge_note(deleted: DeletedPool) -> str:
    return f"it will be purged on {iso_date(deleted.scheduled_purge)}"


def _busy(data: DataDir) -> str:
    return (
        f"a pool is starting or running on {data.root}; stop it with "
        f"`mhsm down --data-dir {data.root}` and try again"
    )


def _fail(verb: str, message: str) -> int:
    print(f"mhsm pool {verb}: {message}", file=sys.stderr)
    return 1
