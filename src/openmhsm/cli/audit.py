"""`mhsm audit tail|search`: read a pool's audit logs straight from `DIR/audit/` (every
partition, rotated files included), merged by time, one JSON record per line.

No request goes to the pool, so these work on a stopped pool and on copied logs too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openmhsm.cli.output import reports_errors
from openmhsm.cluster.layout import DataDir
from openmhsm.services.audit import Follower, read_records, utc_iso

FOLLOW_INTERVAL = 0.5
Record = dict[str, Any]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="read the pool's audit log")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", required=True, type=Path, help="the pool's data dir (holds audit/)"
    )

    tail = sub.add_parser("tail", parents=[common], help="the latest records, then (-f) new ones")
    tail.add_argument("-n", type=int, default=20, metavar="N", help="how many (default 20)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    tail.set_defaults(run=reports_errors(run_tail))

    search = sub.add_parser("search", parents=[common], help="records matching every filter")
    search.add_argument("--principal", help="object id, client id or name of the caller")
    search.add_argument("--operation", help="text in the operation, e.g. 'sign' or 'DELETE'")
    search.add_argument(
        "--status", type=_status_arg, help="an HTTP status (403) or a class (4xx, 5xx)"
    )
    search.add_argument(
        "--since", type=_since_arg, metavar="ISO8601", help="at or after this time (UTC default)"
    )
    search.set_defaults(run=reports_errors(run_search))


def _status_arg(text: str) -> str:
    lowered = text.lower()
    if (lowered.isdigit() and len(lowered) == 3) or (
        len(lowered) == 3 and lowered[0].isdigit() and lowered[1:] == "xx"
    ):
        return lowered
    raise argparse.ArgumentTypeError(f"a status is like 403 or 4xx, not {text!r}")


def _since_arg(text: str) -> str:
    """The time as the log writes it (UTC, milliseconds, `Z`), so it compares as text."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from e
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return utc_iso(when.timestamp())


def _print(records: Iterable[Record]) -> None:
    for record in records:
        print(json.dumps(record, separators=(",", ":")), flush=False)
    sys.stdout.flush()


def run_tail(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise ValueError("-n must be 0 or more")
    directory = DataDir(args.data_dir).audit
    follower = Follower(directory) if args.follow else None
    if follower is not None:
        follower.start_at_end()  # before reading, so nothing falls between the two
    _print(read_records(directory, newest=args.n))
    if follower is None:
        return 0
    try:
        while True:
            _print(follower.poll())
            time.sleep(FOLLOW_INTERVAL)
    finally:
        follower.close()


def run_search(args: argparse.Namespace) -> int:
    _print(filter(matcher(args), read_records(DataDir(args.data_dir).audit)))
    return 0


def matcher(args: argparse.Namespace) -> Callable[[Record], bool]:
    """A predicate that holds for records matching every filter given."""
    checks: list[Callable[[Record], bool]] = []
    if args.principal:
        wanted = args.principal.lower()

        def by_principal(record: Record) -> bool:
            principal = record.get("principal") or {}
            return any(str(v).lower() == wanted for v in principal.values())

        checks.append(by_principal)
    if args.operation:
        text = args.operation.lower()
        checks.append(lambda record: text in str(record.get("operation", "")).lower())
    if args.status:
        status = args.status
        if status.endswith("xx"):
            checks.append(lambda record: str(record.get("status", ""))[:1] == status[0])
        else:
            checks.append(lambda record: str(record.get("status", "")) == status)
    if args.since:
        since = args.since
        checks.append(lambda record: str(record["time"]) >= since)
    return lambda record: all(check(record) for check in checks)
