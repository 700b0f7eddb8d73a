"""`mhsm status`: is every partition and etcd member healthy, who leads, the last heal, the
availability.

It reads `pool.json` and `supervisor.json` from the data dir; `status` also asks every process
itself: each partition's `/readyz` on its own URL and the pool URL (TLS with the pool CA), each
etcd member's status over its client URL, and one partition's `/metrics`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import ssl
import sys
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped]
import httpx
from aetcd import rpc  # type: ignore[import-untyped]

from openmhsm.cli.output import add_output_option, emit
from openmhsm.cluster.layout import DataDir, read_json

PROBE_TIMEOUT = 2.0
POLL_EVERY = 0.25
HEALS = frozenset({"partition healed", "etcd member restarted", "etcd member replaced"})
FAILED_HEALS = frozenset({"partition restart failed"})
_AVAILABILITY = re.compile(r'^openmhsm_availability_ratio\{window="(\w+)"\} (\S+)$', re.M)
_REQUIRE_LEADER = (("hasleader", "true"),)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status", help="partitions, etcd members, leader, last heal and availability of a pool"
    )
    status.add_argument("--data-dir", required=True, type=Path)
    add_output_option(status, default="table")
    status.set_defaults(run=run_status)


# --- status ----------------------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    data = DataDir(args.data_dir.resolve())
    doc = pool_document_or_none(data, "status")
    if doc is None:
        return 1
    report = asyncio.run(collect_status(doc, read_optional(data.supervisor_state)))
    region = read_optional(data.region_state)  # an extended region's replication, if any
    if region:
        report["region"] = region
    if args.output == "json":
        print(json.dumps(report, indent=2))
    elif args.output == "tsv":
        emit([_tsv_row(p) for p in report["partitions"]], "tsv", TSV_COLUMNS)
    else:
        print_status(report)
    return 0 if report["healthy"] else 1


async def collect_status(doc: Mapping[str, Any], supervisor: Mapping[str, Any]) -> dict[str, Any]:
    """Everything `mhsm status` shows, as one JSON-able object with a `healthy` verdict."""
    tls = ssl.create_default_context(cafile=doc["ca_cert"])
    async with httpx.AsyncClient(verify=tls, timeout=PROBE_TIMEOUT) as http:
        pool_probe, etcd, *parts = await asyncio.gather(
            probe_ready(http, doc["url"]),
            etcd_status(doc.get("etcd", [])),
            *(probe_ready(http, p["url"]) for p in doc["partitions"]),
        )
        partitions = [
            {"id": p["id"], "pid": p.get("pid"), "url": p["url"], **probe}
            for p, probe in zip(doc["partitions"], parts, strict=True)
        ]
        availability = await scrape_availability(http, partitions)
    pid = doc.get("pid")
    # A pool across hosts (`mhsm deploy init`) has no supervisor here: systemd runs each host.
    systemd = doc.get("supervisor") == "systemd"
    running = systemd or (isinstance(pid, int) and is_mhsm_process(pid))
    pool = {
        "name": doc["name"],
        "url": doc["url"],
        "mode": doc.get("mode"),
        "pid": pid,
        "running": running,
        **pool_probe,
    }
    healthy = (
        running
        and pool["ready"]
        and all(p["ready"] for p in partitions)
        and (
            doc.get("mode") == "dev"
            or (etcd["leader"] is not None and all(m["healthy"] for m in etcd["members"]))
        )
    )
    return {
        "healthy": bool(healthy),
        "pool": pool,
        "partitions": partitions,
        "etcd": etcd,
        "supervisor": supervisor_summary(supervisor) if supervisor else None,
        "availability": availability,
    }


async def probe_ready(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """`/readyz` at `url`: whether it answered 200, the pool state it reports, or the error."""
    try:
        response = await http.get(f"{url}/readyz")
    except httpx.HTTPError as exc:
        return {"ready": False, "state": None, "error": _reason(exc)}
    state = None
    with contextlib.suppress(ValueError, AttributeError):
        state = response.json().get("state")
    ready = response.status_code == 200
    return {
        "ready": ready,
        "state": state,
        "error": None if ready else f"HTTP {response.status_code}",
    }


async def scrape_availability(
    http: httpx.AsyncClient, partitions: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The availability gauges of the first ready partition that serves `/metrics`."""
    for part in partitions:
        if not part["ready"]:
            continue
        try:
            response = await http.get(f"{part['url']}/metrics")
        except httpx.HTTPError:
            continue
        windows = {w: float(v) for w, v in _AVAILABILITY.findall(response.text)}
        if response.status_code == 200 and windows:
            return {"partition": part["id"], **windows}
    return None


async def etcd_status(members: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Each member's health (a linearizable read), the leader's name and its revision."""
    answers = await asyncio.gather(*(member_status(m) for m in members))
    names: dict[int, str] = {}
    votes: Counter[int] = Counter()
    for found, leader_id, membership in answers:  # each member's view of who leads
        names.update(membership)
        votes.update([leader_id] if found["healthy"] else [])
    leader = names.get(votes.most_common(1)[0][0]) if votes else None
    found_all = [found for found, _, _ in answers]
    for found in found_all:
        found["leader"] = found["name"] == leader
    revision = next((m["revision"] for m in found_all if m["leader"]), None)
    return {"leader": leader, "revision": revision, "members": found_all}


async def member_status(member: Mapping[str, Any]) -> tuple[dict[str, Any], int, dict[int, str]]:
    """One member's health and revision, the leader id it knows, and the membership's names."""
    out: dict[str, Any] = {
        "name": member["name"], "pid": member.get("pid"), "client_url": member["client_url"],
        "healthy": False, **dict.fromkeys(("revision", "raft_term", "version", "error")),
    }  # fmt: skip
    channel = grpc.aio.insecure_channel(urlsplit(member["client_url"]).netloc)
    try:
        status = await rpc.MaintenanceStub(channel).Status(
            rpc.StatusRequest(), timeout=PROBE_TIMEOUT
        )
        listed = await rpc.ClusterStub(channel).MemberList(
            rpc.MemberListRequest(), timeout=PROBE_TIMEOUT
        )
        out["revision"], out["raft_term"] = int(status.header.revision), int(status.raftTerm)
        out["version"] = str(status.version)
        await rpc.KVStub(channel).Range(
            rpc.RangeRequest(key=b"health"), timeout=PROBE_TIMEOUT, metadata=_REQUIRE_LEADER
        )
        out["healthy"], out["error"] = not status.errors, "; ".join(status.errors) or None
        return out, int(status.leader), {int(m.ID): str(m.name) for m in listed.members}
    except grpc.aio.AioRpcError as exc:
        out["error"] = f"{exc.code().name}: {exc.details()}"
        return out, 0, {}
    finally:
        await channel.close()


def supervisor_summary(state: Mapping[str, Any]) -> dict[str, Any]:
    """Heal counts and the latest heal from the supervisor's recent events."""
    events = list(state.get("events", []))
    heals = [e for e in events if e.get("event") in HEALS]
    return {
        "pid": state.get("pid"),
        "maintenance": state.get("maintenance", {"state": "unknown"}),
        "heals": len(heals),
        "failed_heals": sum(1 for e in events if e.get("event") in FAILED_HEALS),
        "last_heal": heals[-1] if heals else None,
        "last_event": events[-1] if events else None,
        "events_kept": len(events),
    }


def print_status(report: Mapping[str, Any]) -> None:
    pool = report["pool"]
    verdict = "HEALTHY" if report["healthy"] else "UNHEALTHY"
    process = f"pid {pool['pid']}" if pool["running"] else "not running"
    if pool["running"] and pool["pid"] is None:
        process = "not used (systemd runs each host)"
    print(f"pool {pool['name']} ({pool['mode']}) {pool['url']}: {verdict}")
    print(f"  `mhsm up` {process}; pool endpoint {_ready_text(pool)}")
    print()
    _table(
        ["PARTITION", "PID", "URL", "READY", "STATE"],
        [[p["id"], p["pid"], p["url"], _ready_text(p), p["state"]] for p in report["partitions"]],
    )
    etcd = report["etcd"]
    if etcd["members"]:
        print()
        rows = [
            [m["name"], m["pid"], m["client_url"], "yes" if m["healthy"] else f"no ({m['error']})",
             "*" if m["leader"] else "", m["revision"], m["raft_term"]]
            for m in etcd["members"]
        ]  # fmt: skip
        _table(["ETCD", "PID", "CLIENT URL", "HEALTHY", "LEADER", "REVISION", "TERM"], rows)
        print(f"  leader {_text(etcd['leader'])}, revision {_text(etcd['revision'])}")
    sup = report["supervisor"]
    print()
    if sup is None:
        print("supervisor: none (no supervisor.json; a dev pool has no supervisor)")
    else:
        print(
            f"heals: {sup['heals']} (failed: {sup['failed_heals']}, "
            f"of the last {sup['events_kept']} events)"
        )
        print(f"last heal: {_event_text(sup['last_heal'])}")
        print(f"last event: {_event_text(sup['last_event'])}")
        print(f"maintenance: {_maintenance_text(sup['maintenance'])}")
    availability = report["availability"]
    if availability is None:
        print("availability: unknown (no partition served /metrics)")
    else:
        figures = ", ".join(f"{w} {availability[w]:.3%}" for w in ("1m", "1h") if w in availability)
        print(f"availability (partition {availability['partition']}): {figures}")
    region = report.get("region")
    if region:
        print_region(region)


def print_region(region: dict[str, Any]) -> None:
    term = f" at term {region['term']}" if "term" in region else ""
    if "lag_seconds" in region:
        print(
            f"region: extended{term}, primary {region['primary_url']}; replication lag "
            f"{region['lag_seconds']:.3f} s, {region['lag_revisions']} revisions "
            f"(applied {region['applied_revision']})"
        )
    else:
        print(f"region: {region.get('role', 'primary')}{term}, peer {region.get('peer_url')}")
    lost = region.get("lost_writes")
    if lost:
        count = "an unknown number of" if lost.get("count") is None else lost["count"]
        names = ", ".join(lost.get("names", [])[:10]) or "none"
        print(f"  lost when it stepped down: {count} write(s) never replicated: {names}")


TSV_COLUMNS = ("id", "pid", "url", "ready", "state")


def _tsv_row(partition: Mapping[str, Any]) -> dict[str, Any]:
    """One partition, for `--output tsv`: a line a script can `read`."""
    return {c: partition.get(c) for c in TSV_COLUMNS}


# --- shared ----------------------------------------------------------------------------------


def is_mhsm_process(pid: int) -> bool:
    """Whether `pid` runs `mhsm`/`openmhsm` (and not a process that reused a stale pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"openmhsm" in cmdline or b"mhsm" in cmdline


def pool_document_or_none(data: DataDir, command: str) -> dict[str, Any] | None:
    if not data.pool_json.exists():
        print(f"mhsm {command}: no pool.json in {data.root}; run `mhsm up` first", file=sys.stderr)
        return None
    doc: dict[str, Any] = read_json(data.pool_json)
    return doc


def read_optional(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or being replaced."""
    try:
        value = read_json(path)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [header, *[[_text(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def _ready_text(probe: Mapping[str, Any]) -> str:
    return "ready" if probe["ready"] else f"not ready ({probe['error']})"


def _when(epoch: float) -> str:
    ago = max(0.0, time.time() - epoch)
    return f"{datetime.fromtimestamp(epoch).isoformat(timespec='seconds')} ({ago:.0f} s ago)"


def _event_text(event: Mapping[str, Any] | None) -> str:
    if event is None:
        return "none"
    details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "event"))
    when = event.get("time")
    at = f" at {_when(when)}" if isinstance(when, int | float) else ""
    return f"{event.get('event')} {details}".rstrip() + at


def _maintenance_text(maintenance: Mapping[str, Any]) -> str:
    text = str(maintenance.get("state", "unknown"))
    for field in ("requested", "started", "finished"):
        value = maintenance.get(field)
        if isinstance(value, int | float):
            text += f", {field} {_when(value)}"
    return text
