"""The suite's numbers and what they mean: measurements, ratios, the issue's goal lines, and the
table. Pure functions of the measurements (no I/O), so they are unit-tested."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

POOL, CEILING, KMIP = "pool", "ceiling", "kmip"


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`th percentile (0 < p <= 100) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Measurement:
    operation: str
    source: str  # POOL, CEILING or KMIP
    concurrency: int
    rate: float  # operations per second
    p50_ms: float
    p99_ms: float
    errors: int = 0
    workers: int = 0  # wrk connections, ceiling threads, or KMIP client connections
    client_cores: float = 0.0  # the load generator's CPU over the run, in cores
    client_cpu_seconds: float = 0.0  # the same in CPU seconds (wrk's from RUSAGE_CHILDREN)
    cpu: dict[str, float] = field(default_factory=dict)  # cores by process group, + "machine"
    failures: tuple[str, ...] = ()  # the first failed responses, for the reader


def find(results: Iterable[Measurement], op: str, source: str, c: int) -> Measurement | None:
    return next(
        (m for m in results if (m.operation, m.source, m.concurrency) == (op, source, c)), None
    )


def peak(results: Iterable[Measurement], op: str, source: str) -> Measurement | None:
    """The measurement of `op` from `source` with the highest throughput (any concurrency)."""
    rows = [m for m in results if m.operation == op and m.source == source]
    return max(rows, key=lambda m: m.rate, default=None)


def ratio(top: Measurement | None, bottom: Measurement | None) -> float | None:
    if top is None or bottom is None or bottom.rate <= 0:
        return None
    return top.rate / bottom.rate


@dataclass(frozen=True)
class Goal:
    text: str
    target: float
    measured: float | None  # None: not measured in this run
    detail: str

    @property
    def met(self) -> bool | None:
        return None if self.measured is None else self.measured >= self.target

    @property
    def verdict(self) -> str:
        return {None: "NOT MEASURED", True: "met", False: "MISSED"}[self.met]


def _peak_ratio(
    results: Sequence[Measurement], text: str, target: float, top: str, bottom: str, source: str
) -> Goal:
    a, b = peak(results, top, POOL), peak(results, bottom, source)
    value = ratio(a, b)
    detail = "" if a is None or b is None else f"{a.rate:.0f}/s (c={a.concurrency}) vs "
    if b is not None:
        detail += f"{b.rate:.0f}/s (c={b.concurrency})"
    return Goal(text, target, value, detail + _errors_note(a, b))


def _errors_note(*rows: Measurement | None) -> str:
    errors = sum(m.errors for m in rows if m is not None)
    return f"; {errors} failed requests" if errors else ""


def _sign_vs_raw(results: Sequence[Measurement], threads: int) -> Goal:
    text = f"RSA-2048 sign through the pool >= 0.85 x raw {threads}-thread sign (peaks)"
    pool = peak(results, "rsa2048-sign", POOL)
    raw = max(
        (
            m
            for m in results
            if m.operation == "rsa2048-sign" and m.source == CEILING and m.workers == threads
        ),
        key=lambda m: m.rate,
        default=None,
    )
    detail = "" if pool is None else f"{pool.rate:.0f}/s (c={pool.concurrency}) vs "
    detail += "" if raw is None else f"raw {raw.rate:.0f}/s"
    return Goal(text, 0.85, ratio(pool, raw), detail + _errors_note(pool))


def _create(results: Sequence[Measurement], rate: float, p99_ms: float) -> Goal:
    text = f"create key >= {rate:.0f}/s with p99 < {p99_ms:.0f} ms on the etcd pool"
    rows = [m for m in results if m.operation == "create-key" and m.source == POOL]
    fast = [m for m in rows if m.p99_ms < p99_ms and m.errors == 0]
    best = max(fast, key=lambda m: m.rate, default=None)
    top = max(rows, key=lambda m: m.rate, default=None)
    if best is not None:
        detail = f"{best.rate:.0f}/s at c={best.concurrency}, p99 {best.p99_ms:.1f} ms"
        return Goal(text, rate, best.rate, detail)
    if top is not None:
        detail = (
            f"no level with p99 < {p99_ms:.0f} ms and no errors; peak {top.rate:.0f}/s "
            f"at c={top.concurrency}, p99 {top.p99_ms:.1f} ms{_errors_note(top)}"
        )
        return Goal(text, rate, 0.0, detail)
    return Goal(text, rate, None, "")


def evaluate_goals(results: Sequence[Measurement], raw_threads: int = 2) -> list[Goal]:
    """The issue's goal lines, each as a ratio of peaks (or a rate) measured in this run."""
    return [
        _sign_vs_raw(results, raw_threads),
        _peak_ratio(
            results,
            "P-256 sign through the pool >= 0.6 x the no-op",
            0.6,
            "p256-sign",
            "noop",
            POOL,
        ),
        _peak_ratio(results, "get key >= 0.8 x the no-op", 0.8, "get-key", "noop", POOL),
        _create(results, 300, 50),
        _peak_ratio(
            results,
            "RSA-2048 sign >= 3 x PyKMIP's server",
            3.0,
            "rsa2048-sign",
            "rsa2048-sign",
            KMIP,
        ),
    ]


def _num(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None or math.isnan(value) else f"{value:{width}{spec}}"


HEADER = (
    f"{'operation':28} {'c':>4} {'pool/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} "
    f"{'raw/s':>8} {'thr':>3} {'pool/raw':>8} {'/no-op':>6} {'kmip/s':>7} {'pool/kmip':>9} "
    f"{'wrk':>5} {'parts':>5} {'etcd':>5} {'steal':>5} {'other':>5}"
)


def other_cores(m: Measurement) -> float | None:
    """CPU the machine spent outside the measured processes and the load generator during
    `m` (another job on the machine, the kernel's softirqs): high means a disturbed number."""
    if "machine" not in m.cpu:
        return None
    mine = sum(v for k, v in m.cpu.items() if k not in ("machine", "steal")) + m.client_cores
    return max(0.0, m.cpu["machine"] - mine)


DISTURBED_CORES = 0.25  # other work on the machine during a measurement beyond this: marked


def disturbed(results: Iterable[Measurement]) -> list[Measurement]:
    """The measurements during which other work on the machine, plus what the hypervisor
    stole, took more than DISTURBED_CORES."""
    return [
        m for m in results if (other_cores(m) or 0.0) + m.cpu.get("steal", 0.0) > DISTURBED_CORES
    ]


def table_rows(
    results: Sequence[Measurement], labels: dict[str, str], concurrencies: Sequence[int]
) -> list[str]:
    """One line per operation x concurrency; CPU columns are in cores (wrk = load generator,
    parts = the three partitions, steal = taken by the hypervisor, other = everything else on
    the machine, with "!" when steal + other disturbed the number)."""
    lines = [HEADER]
    marked = disturbed(results)
    for op, label in labels.items():
        for c in concurrencies:
            pool = find(results, op, POOL, c)
            if pool is None:
                continue
            raw, kmip = find(results, op, CEILING, c), find(results, op, KMIP, c)
            noop = find(results, "noop", POOL, c)
            lines.append(
                f"{label:28} {c:4d} {pool.rate:8.0f} {pool.p50_ms:8.2f} {pool.p99_ms:8.2f} "
                f"{pool.errors:4d} {_num(raw and raw.rate, '.0f', 8)} "
                f"{raw.workers if raw else '-':>3} {_num(ratio(pool, raw), '.2f', 8)} "
                f"{_num(None if op == 'noop' else ratio(pool, noop), '.2f', 6)} "
                f"{_num(kmip and kmip.rate, '.1f', 7)} {_num(ratio(pool, kmip), '.1f', 9)} "
                f"{pool.client_cores:5.2f} {_num(pool.cpu.get('partitions'), '.2f', 5)} "
                f"{_num(pool.cpu.get('etcd'), '.2f', 5)} {_num(pool.cpu.get('steal'), '.2f', 5)} "
                f"{_num(other_cores(pool), '.2f', 5)}" + ("!" if pool in marked else "")
            )
    return lines


def goal_lines(goals: Sequence[Goal]) -> list[str]:
    return [
        f"[{g.verdict:>12}] {g.text}: "
        + ("-" if g.measured is None else f"{g.measured:.2f} (target {g.target:g})")
        + (f"  [{g.detail}]" if g.detail else "")
        for g in goals
    ]
