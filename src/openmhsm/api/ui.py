"""`/ui`: the pool's dashboard, and `/openmhsm/dashboard`, the data it shows.

**Not part of Azure's API.**

- GET `/ui`, `/ui/` (both `/ui/index.html`), `/ui/app.js`, `/ui/style.css`: the static page
  (`src/openmhsm/ui/`, no build step). Public, as it holds nothing of the pool's, and served
  with a strict Content-Security-Policy: script, style and fetch from this origin only, nothing
  inline, no framing, no form posts.
- GET `/openmhsm/dashboard?api-version=...` → 200: what the answering partition knows of the pool
  (below). It needs `securitydomain/download/read` (`auth/authorize.py`), which among the
  built-in roles only Managed HSM Administrator holds.

Signing in, in the page: it asks this endpoint without a token and reads the 401 challenge as
the Azure SDK does (the tenant's authority and the resource), then posts the administrator's
client id and secret to the pool's own token endpoint (client credentials). The token is kept
in the page's memory only; the secret is never stored, nor put in a URL. A token may be pasted
instead, or handed over in the URL fragment (`#token=...`, which never reaches a server and
which the page wipes from its history at once): that is how the browser test signs in.

The document: the partitions as `pool.json` lists them, each probed live (`/readyz` on its own
URL, with a short timeout, so a hung partition shows as down before the supervisor replaces
it) next to what `supervisor.json` last said; the etcd members likewise (`/health`); this
partition's request counts, latency and availability (`api/metrics.py`); the region's role and
replication lag; the recent full backups and restores; the newest audit events of every
partition. Never the admin's credentials that `pool.json` also holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from openmhsm.api.context import ApiContext
from openmhsm.api.metrics import LATENCY_BUCKETS, PROBES, WINDOWS, RequestMetrics
from openmhsm.cluster.layout import DataDir, read_json
from openmhsm.services.audit import parse_lines, partition_files

PATH = "/openmhsm/dashboard"
PROBE_TIMEOUT = 1.0  # a partition slower than this to answer /readyz is shown as down
AUDIT_EVENTS = 50
BACKUP_JOBS = 20
SUPERVISOR_EVENTS = 15
OPERATIONS = 60  # the busiest operations, as the page has room for
TAIL_BYTES = 256 * 1024  # of each audit file read per request
STATIC: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_NO_STORE = {"Cache-Control": "no-store"}
# Left out of the audit events shown: health probes, and the dashboard's own page and polls.
QUIET = PROBES | {f"GET {path}" for path in ("/ui", "/ui/", PATH, *(f"/ui/{n}" for n in STATIC))}

Probe = Callable[[str], Awaitable[dict[str, Any]]]
"""GET a URL: `{"ok", "status", "body", "ms", "error"}`; never raises for network errors."""


@functools.cache
def static_file(name: str) -> bytes:
    return resources.files("openmhsm").joinpath("ui", name).read_bytes()


def static_routes() -> list[BaseRoute]:
    """The page's files, public."""

    def serve(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return Response(static_file(name), media_type=STATIC[name], headers=SECURITY_HEADERS)

        return endpoint

    index = serve("index.html")
    return [
        Route("/ui", index, methods=["GET"]),
        Route("/ui/", index, methods=["GET"]),
        *(Route(f"/ui/{name}", serve(name), methods=["GET"]) for name in STATIC),
    ]


def data_dir_of(ctx: ApiContext) -> DataDir | None:
    """The partition's data dir: its audit log is kept in the data dir's `audit` folder
    (`cluster/layout.py`). None without an audit log (unit fixtures)."""
    return DataDir(ctx.audit.directory.parent) if ctx.audit is not None else None


def https_probe(ca_cert: Path) -> Probe:
    """Probes over TLS with the pool CA (etcd's client URLs are plain http), on one client
    kept for the partition's life, so that a probe reuses its connection to each process."""
    http: httpx.AsyncClient | None = None

    async def probe(url: str) -> dict[str, Any]:
        nonlocal http
        if http is None:
            tls = ssl.create_default_context(cafile=str(ca_cert))
            http = httpx.AsyncClient(verify=tls, timeout=PROBE_TIMEOUT)
        started = time.perf_counter()
        try:
            response = await http.get(url)
        except httpx.HTTPError as exc:
            error = "timed out" if isinstance(exc, httpx.TimeoutException) else type(exc).__name__
            return {"ok": False, "status": None, "body": None, "ms": None, "error": error}
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        ok = response.status_code == 200
        return {
            "ok": ok,
            "status": response.status_code,
            "body": body,
            "ms": round((time.perf_counter() - started) * 1000, 1),
            "error": None if ok else f"HTTP {response.status_code}",
        }

    return probe


class DashboardApi:
    """The dashboard's data. `data` is the pool's data dir (None: this partition alone) and
    `probe` how other processes are asked whether they are up (tests inject one)."""

    def __init__(
        self, ctx: ApiContext, data: DataDir | None = None, probe: Probe | None = None
    ) -> None:
        self.ctx = ctx
        self.data = data if data is not None else data_dir_of(ctx)
        if probe is None and self.data is not None:
            probe = https_probe(self.data.ca_cert)
        self.probe = probe

    def routes(self) -> list[BaseRoute]:
        return [Route(PATH, self.show, methods=["GET"])]

    async def show(self, request: Request) -> Response:
        return JSONResponse(await self.document(), headers=_NO_STORE)

    async def document(self) -> dict[str, Any]:
        """Everything the page shows, as one JSON object."""
        pool, supervisor, audit = await asyncio.to_thread(self._read_files)
        partitions, etcd, backups = await asyncio.gather(
            self._partitions(pool, supervisor), self._etcd(pool, supervisor), self._backups()
        )
        metrics = self.ctx.metrics
        return {
            "time": time.time(),
            "partition": self.ctx.partition_id,
            "pool": {key: pool.get(key) for key in ("name", "url", "mode")},
            "state": self.ctx.state(),
            "partitions": partitions,
            "etcd": etcd,
            "supervisor": _supervisor_summary(supervisor),
            "availability": {name: metrics.availability(seconds) for name, seconds in WINDOWS},
            "operations": operation_stats(metrics)[:OPERATIONS],
            "scheduler_leader": None
            if metrics.scheduler_leading is None
            else metrics.scheduler_leading(),
            "region": self._region(pool),
            "backups": backups,
            "audit": audit,
        }

    def _read_files(self) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        if self.data is None:
            return {}, {}, []
        return (
            _read_optional(self.data.pool_json),
            _read_optional(self.data.supervisor_state),
            newest_audit_events(self.data.audit, AUDIT_EVENTS),
        )

    async def _partitions(
        self, pool: Mapping[str, Any], supervisor: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        listed = [p for p in pool.get("partitions", []) if isinstance(p, dict) and "url" in p]
        if not listed or self.probe is None:  # not written yet, or no data dir: this one alone
            me = {"id": self.ctx.partition_id, "pid": os.getpid(), "url": None}
            return [{**me, "up": True, "state": self.ctx.state(), "probe_ms": 0.0, "error": None}]
        seen = {p.get("id"): p for p in supervisor.get("partitions", []) if isinstance(p, dict)}
        probes = await asyncio.gather(*(self.probe(f"{p['url']}/readyz") for p in listed))
        out = []
        for part, probe in zip(listed, probes, strict=True):
            body = probe["body"] if isinstance(probe["body"], dict) else {}
            known = seen.get(part.get("id"), {})
            out.append(
                {
                    "id": part.get("id"),
                    "pid": part.get("pid"),
                    "url": part["url"],
                    "up": probe["ok"],
                    "state": body.get("state"),
                    "probe_ms": probe["ms"],
                    "error": probe["error"],
                    "supervisor_ready": known.get("ready"),
                }
            )
        return out

    async def _etcd(
        self, pool: Mapping[str, Any], supervisor: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        members = [m for m in pool.get("etcd", []) if isinstance(m, dict) and "client_url" in m]
        if self.probe is None:
            return []
        seen = {m.get("name"): m for m in supervisor.get("etcd", []) if isinstance(m, dict)}
        probes = await asyncio.gather(*(self.probe(f"{m['client_url']}/health") for m in members))
        out = []
        for member, probe in zip(members, probes, strict=True):
            body = probe["body"] if isinstance(probe["body"], dict) else {}
            healthy = probe["ok"] and str(body.get("health")).lower() == "true"
            out.append(
                {
                    "name": member.get("name"),
                    "pid": member.get("pid"),
                    "client_url": member["client_url"],
                    "healthy": healthy,
                    "running": seen.get(member.get("name"), {}).get("running"),
                    "probe_ms": probe["ms"],
                    "error": probe["error"] or (None if healthy else body.get("reason")),
                }
            )
        return out

    async def _backups(self) -> list[dict[str, Any]]:
        if self.ctx.jobs is None:
            return []
        jobs = await self.ctx.jobs.store.list_jobs()
        jobs.sort(key=lambda job: job.id, reverse=True)  # ids sort by start time
        return [{**job.wire(), "kind": job.kind} for job in jobs[:BACKUP_JOBS]]

    def _region(self, pool: Mapping[str, Any]) -> dict[str, Any]:
        primary = self.ctx.forwards_to()
        regions = [r for r in pool.get("regions", []) if isinstance(r, str)]
        hook = self.ctx.metrics.replication_lag
        lag = hook() if hook is not None else None
        role = "extended" if primary is not None else "primary" if regions else "single"
        out: dict[str, Any] = {"role": role, "primary_url": primary, "regions": regions}
        if lag is not None:
            out |= {
                "lag_seconds": lag.seconds,
                "lag_revisions": lag.revisions,
                "applied_revision": lag.applied_revision,
                "source_revision": lag.source_revision,
            }
        return out


def operation_stats(metrics: RequestMetrics) -> list[dict[str, Any]]:
    """Per operation: requests, client (4xx) and server (5xx) errors, mean latency and the
    bucket bounds under which half and 99% of them finished; busiest first."""
    counts: dict[str, dict[str, int]] = {}
    for (operation, status), count in metrics.requests.items():
        entry = counts.setdefault(operation, {"count": 0, "client_errors": 0, "server_errors": 0})
        entry["count"] += count
        if 400 <= status < 500:
            entry["client_errors"] += count
        elif status >= 500:
            entry["server_errors"] += count
    out: list[dict[str, Any]] = []
    for operation, entry in counts.items():
        histogram = metrics.latency.get(operation)
        observed = sum(histogram.counts) if histogram is not None else 0
        mean = histogram.total / observed * 1000 if histogram is not None and observed else None
        out.append(
            {
                "operation": operation,
                **entry,
                "mean_ms": None if mean is None else round(mean, 3),
                "p50_ms": _quantile_bound(histogram.counts, 0.5) if histogram else None,
                "p99_ms": _quantile_bound(histogram.counts, 0.99) if histogram else None,
            }
        )
    out.sort(key=lambda entry: (-entry["count"], entry["operation"]))
    return out


def _quantile_bound(counts: list[int], quantile: float) -> float | None:
    """The upper bound (ms) of the bucket holding the `quantile`; None past the last bound."""
    total = sum(counts)
    if total == 0:
        return None
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS, counts, strict=False):
        cumulative += count
        if cumulative >= quantile * total:
            return bound * 1000
    return None


def newest_audit_events(directory: Path, count: int) -> list[dict[str, Any]]:
    """The newest `count` audit records of every partition together, newest first, but for
    QUIET operations, reading at most TAIL_BYTES from the end of a partition's current file
    and, if that holds too few, of its last rotated one."""
    merged: list[dict[str, Any]] = []
    for files in partition_files(directory).values():
        records: list[dict[str, Any]] = []
        for path in files[-1:-3:-1]:  # the current file, then the last rotated one
            if len(records) >= count:
                break
            found = parse_lines(_tail(path, TAIL_BYTES))
            records[:0] = [r for r in found if r.get("operation") not in QUIET]
        merged.extend(records[-count:])
    merged.sort(key=lambda record: record["time"], reverse=True)
    return merged[:count]


def _tail(path: Path, size: int) -> str:
    """The complete lines among the last `size` bytes of `path` ('' if it is gone)."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - size))
            data = f.read(size)
    except FileNotFoundError:  # rotated away between listing and reading
        return ""
    if end > size:  # the first line is cut
        data = data.partition(b"\n")[2]
    return data.decode("utf-8", errors="replace")


def _read_optional(path: Path) -> dict[str, Any]:
    try:
        doc = read_json(path)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _supervisor_summary(state: Mapping[str, Any]) -> dict[str, Any] | None:
    if not state:
        return None
    events = [e for e in state.get("events", []) if isinstance(e, dict)]
    return {
        "pid": state.get("pid"),
        "maintenance": state.get("maintenance"),
        "events": list(reversed(events[-SUPERVISOR_EVENTS:])),
    }
