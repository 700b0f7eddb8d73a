"""`python -m benchmarks suite` (`make bench`): every operation of issue 9 through the full stack
of a three-partition etcd pool at several concurrencies, with, in the same run, the ceiling (raw
`cryptography` in as many threads, capped at the cores) and the peer (PyKMIP's server) where it
has the operation. Prints a table of ratios and the goal lines, writes
benchmarks/results/latest.json and benchmarks/results/throughput.png.

Environment: BENCH_SECONDS (per measurement, default 3), BENCH_QUICK=1 (a smoke run: concurrency
1 and 8, 1 s), BENCH_CONCURRENCY ("1,8,32,128"), BENCH_OPS (comma-separated operation names),
BENCH_PEER=0 / BENCH_CEILING=0 (skip those), BENCH_WRK_THREADS (default 1).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import ceiling, chart, report, wrk_load
from benchmarks.cpu import CpuMeter
from benchmarks.operations import NOOP, Operation, by_name
from benchmarks.pool_process import start_pool
from benchmarks.pool_target import PoolTarget
from benchmarks.report import CEILING, KMIP, Measurement

RESULTS = Path(__file__).parent / "results"
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    seconds: float
    concurrency: tuple[int, ...]
    operations: tuple[Operation, ...]
    ceiling: bool
    peer: bool
    wrk_threads: int

    @staticmethod
    def from_env() -> Settings:
        quick = os.environ.get("BENCH_QUICK") == "1"
        default_c = "1,8" if quick else "1,8,32,128"
        levels = os.environ.get("BENCH_CONCURRENCY") or default_c
        return Settings(
            seconds=float(os.environ.get("BENCH_SECONDS") or (1 if quick else 3)),
            concurrency=tuple(int(c) for c in levels.split(",")),
            operations=by_name(os.environ.get("BENCH_OPS")),
            ceiling=os.environ.get("BENCH_CEILING") != "0",
            peer=os.environ.get("BENCH_PEER") != "0",
            wrk_threads=int(os.environ.get("BENCH_WRK_THREADS") or 1),
        )


def _progress(m: Measurement) -> None:
    extra = f" errors {m.errors}: {m.failures[0]}" if m.errors and m.failures else ""
    print(
        f"  {m.source:8} {m.operation:18} c={m.concurrency:<4} {m.rate:9.1f}/s "
        f"p50 {m.p50_ms:7.2f} ms  p99 {m.p99_ms:7.2f} ms{extra}",
        file=sys.stderr,
        flush=True,
    )


def measure_pool(root: Path, settings: Settings) -> list[Measurement]:
    """Every operation x concurrency through the pool; the no-op first, creates last."""
    print("starting a three-partition pool on etcd ...", file=sys.stderr, flush=True)
    proc, data, doc = start_pool(root)
    target = PoolTarget(data, doc)
    out = []
    try:
        target.prepare()
        ordered = sorted(
            settings.operations, key=lambda op: (op.name == "create-key", op.name != NOOP)
        )
        for op in ordered:
            for c in settings.concurrency:
                out.append(target.measure(op.name, c, settings.seconds, settings.wrk_threads))
                _progress(out[-1])
    finally:
        target.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return out


def measure_ceiling(settings: Settings) -> list[Measurement]:
    """Raw `cryptography` at min(concurrency, cores) threads; each thread count measured once."""
    out = []
    for op in (o for o in settings.operations if o.ceiling):
        by_threads: dict[int, Measurement] = {}
        for c in settings.concurrency:
            threads = min(c, CORES)
            if threads not in by_threads:
                r = ceiling.measure(op.name, threads, settings.seconds)
                by_threads[threads] = Measurement(
                    op.name,
                    CEILING,
                    c,
                    r.rate,
                    r.p50_ms,
                    r.p99_ms,
                    workers=threads,
                    cpu={
                        "ceiling": round(r.cores, 3),
                        "machine": round(r.machine_cores, 3),
                        "steal": round(r.steal_cores, 3),
                    },
                )
                _progress(by_threads[threads])
            out.append(dataclasses.replace(by_threads[threads], concurrency=c))
    return out


def measure_peer(root: Path, settings: Settings) -> list[Measurement]:
    from benchmarks.kmip_peer import KmipPeer

    out = []
    print("starting PyKMIP's server ...", file=sys.stderr, flush=True)
    with KmipPeer(root) as peer:
        for op in (o for o in settings.operations if o.kmip):
            for c in settings.concurrency:
                r = peer.measure(op.name, c, settings.seconds)
                out.append(
                    Measurement(
                        op.name,
                        KMIP,
                        c,
                        r.rate,
                        r.p50_ms,
                        r.p99_ms,
                        r.errors,
                        r.connections,
                        client_cores=r.client_cpu_seconds / settings.seconds,
                        client_cpu_seconds=r.client_cpu_seconds,
                        cpu=r.cpu,
                        failures=r.failures,
                    )
                )
                _progress(out[-1])
    return out


def _versions() -> dict[str, str]:
    found = {}
    for package in ("openmhsm", "cryptography", "pykmip", "uvicorn", "starlette"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "missing"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    found["wrk"] = (wrk.stdout + wrk.stderr).split("\n", 1)[0]
    return found


def load_generator_share(results: list[Measurement]) -> dict[str, float]:
    """wrk's CPU over the pool runs: mean and max in cores, and the mean share of the machine."""
    pool = [m for m in results if m.source == report.POOL]
    if not pool:
        return {}
    mean = sum(m.client_cores for m in pool) / len(pool)
    return {
        "cpu_seconds": round(sum(m.client_cpu_seconds for m in pool), 2),
        "mean_cores": round(mean, 3),
        "max_cores": round(max(m.client_cores for m in pool), 3),
        "mean_share_of_machine": round(mean / CORES, 3),
    }


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as null, so that the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def summary(
    results: list[Measurement],
    goals: list[report.Goal],
    settings: Settings,
    share: dict[str, float],
    elapsed: float,
) -> list[str]:
    """The printed report: the table, which numbers were disturbed, the goals, wrk's CPU."""
    labels = {op.name: op.label for op in settings.operations}
    lines = [
        f"\nOpenMHSM pool (3 partitions + 3 etcd members) on {CORES} cores, "
        f"{settings.seconds:g} s per measurement; ceiling = raw cryptography in "
        f"min(c, {CORES}) threads; kmip = PyKMIP's server. CPU columns in cores.",
        *report.table_rows(results, labels, settings.concurrency),
    ]
    marked = report.disturbed(results)
    if marked:
        others = sorted(
            {f"; {m.source} {m.operation} x{m.workers}" for m in marked if m.source != report.POOL}
        )
        lines.append(
            f"! {len(marked)} of {len(results)} measurements ran while other work took more "
            f"than {report.DISTURBED_CORES} cores (pool rows marked above{''.join(others)})"
        )
    lines += [
        "\nGoals (ratios of peak throughputs measured in this run):",
        *report.goal_lines(goals),
        f"\nwrk's CPU: {share.get('mean_cores', 0):.2f} cores on average, "
        f"{share.get('max_cores', 0):.2f} at most "
        f"({100 * share.get('mean_share_of_machine', 0):.0f}% of the machine), "
        f"{share.get('cpu_seconds', 0):.1f} CPU seconds in all; the run took {elapsed:.0f} s.",
    ]
    return lines


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores the machine keeps busy, over `seconds`, before we add any work."""
    meter = CpuMeter({})
    meter.start()
    time.sleep(seconds)
    return meter.stop().machine


def main() -> None:
    settings = Settings.from_env()
    if not wrk_load.available():
        raise SystemExit("the suite needs wrk (Debian: apt-get install wrk)")
    busy_before = busy_cores()
    if busy_before > report.DISTURBED_CORES:
        print(
            f"warning: other work keeps {busy_before:.2f} cores busy before the run; "
            "the numbers will be disturbed (see the 'other' column)",
            file=sys.stderr,
        )
    began = time.monotonic()
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="openmhsm-bench-") as tmp:
        results += measure_pool(Path(tmp), settings)
        if settings.ceiling:
            results += measure_ceiling(settings)
        if settings.peer:
            results += measure_peer(Path(tmp) / "kmip", settings)
    goals = report.evaluate_goals(results, raw_threads=min(2, CORES))
    elapsed = time.monotonic() - began
    labels = {op.name: op.label for op in settings.operations}
    share = load_generator_share(results)
    lines = summary(results, goals, settings, share, elapsed)
    print("\n".join(lines))
    doc: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cores": CORES, "python": platform.python_version(), **_versions()},
        "settings": {
            "seconds": settings.seconds,
            "concurrency": list(settings.concurrency),
            "wrk_threads": settings.wrk_threads,
        },
        "labels": labels,
        "kmip_operations": {op.name: op.kmip for op in settings.operations if op.kmip},
        "noop_endpoint": "GET /openmhsm/ping",
        "run_seconds": round(elapsed, 1),
        "busy_cores_before_run": round(busy_before, 3),
        "disturbed": [
            f"{m.source} {m.operation} c={m.concurrency}" for m in report.disturbed(results)
        ],
        "load_generator_cpu": share,
        "goals": [{**dataclasses.asdict(g), "met": g.met, "verdict": g.verdict} for g in goals],
        "results": [dataclasses.asdict(m) for m in results],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(_finite(doc), indent=2) + "\n")
    (RESULTS / "latest.txt").write_text("\n".join(lines) + "\n")
    png = chart.draw(
        results,
        labels,
        RESULTS / "throughput.png",
        f"Throughput vs concurrency, {CORES} cores ({doc['when']})",
    )
    print(f"wrote {RESULTS / 'latest.json'}" + (f" and {png}" if png else " (no matplotlib)"))


if __name__ == "__main__":
    main()
