"""Issue 10's chaos suite: one pool (`mhsm up`, three partitions, three etcd members) under a mixed
SDK workload while faults within quorum are injected one after another; afterwards the checker
reads the pool back and finds every acknowledged write and no refused one.

The short form (this test in `make test`) injects each fault of `faults.SEQUENCE` once. `make
chaos` runs the long form: CHAOS_SECONDS of faults drawn at random after the sequence. Other knobs:
CHAOS_SEED, CHAOS_WORKERS, CHAOS_RETRY (`sdk`: azure-core's default retry policy, the default;
`pool`: openmhsm.client's), CHAOS_STRICT=1 (see below), CHAOS_REPORT (where the figures go as
JSON; the journal of every operation goes next to it, for a post-mortem).

Client-visible errors fail the test, except one kind DESIGN §2 leaves to the caller: a POST or
PATCH whose connection broke because its partition crashed (SIGKILL), which azure-core's default
policy does not send again. CHAOS_STRICT=1 fails on those too.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from checker import STALE_READ_BOUND, Report, check_pool, summary
from dev_pool import free_port
from faults import SEQUENCE, ChaosPool, Faults, run_faults
from workload import Workload

CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS", "0"))
CHAOS_SEED = int(os.environ.get("CHAOS_SEED", "10"))
CHAOS_WORKERS = int(os.environ.get("CHAOS_WORKERS", "3"))
CHAOS_RETRY = os.environ.get("CHAOS_RETRY", "sdk")
CHAOS_STRICT = os.environ.get("CHAOS_STRICT", "") == "1"
SHORT_BUDGET = 280.0  # seconds for the short form, pool start and stop included
WORKLOAD_LIMIT = 600.0 + 2 * CHAOS_SECONDS  # the workload's own bound, far beyond the faults

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(SHORT_BUDGET + 2 * CHAOS_SECONDS),
    # Twice in ~20 minutes of the long form (never in the short one), a client socket whose
    # connection a fault broke was left to the garbage collector somewhere in the SDK's
    # requests/urllib3 stack; where has not been found. Only that finalizer warning is ignored.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <ssl.SSLSocket:pytest.PytestUnraisableExceptionWarning"
    ),
]


def _figures(report: Report, faults: Faults, work: Workload, took: float) -> dict[str, Any]:
    return {
        "seed": CHAOS_SEED,
        "retry_policy": CHAOS_RETRY,
        "workers": CHAOS_WORKERS,
        "duration_seconds": round(took, 1),
        "workload_seconds": round(work.stopped - work.started, 1),
        "faults": [vars(f) for f in faults.done],
        **report.figures(),
        "errors_in_flight_on_crash": len(report.errors)
        - len(report.unexplained_errors(faults.crash_phases())),
        "errors": report.error_summary(),
        "lost": report.lost,
        "refused_applied": report.refused_applied,
        "stale_reads": report.stale_reads,
        "workload_crashed": work.crashed,
    }


def test_chaos_short(tmp_path: Path) -> None:
    began = time.monotonic()
    rng = random.Random(CHAOS_SEED)
    pool = ChaosPool(tmp_path / "pool", free_port()).start()
    try:
        work = Workload(
            pool.doc, workers=CHAOS_WORKERS, seed=CHAOS_SEED, seconds=WORKLOAD_LIMIT,
            retry=CHAOS_RETRY,
        )  # fmt: skip
        faults = Faults(pool, work.set_phase, rng, tmp_path)
        with work.running():
            run_faults(faults, SEQUENCE, rng, CHAOS_SECONDS)
        pool.wait_healthy()
        report = check_pool(pool.reload(), work.journal.outcomes)
    finally:
        pool.stop()
    figures = _figures(report, faults, work, time.monotonic() - began)
    out = Path(os.environ.get("CHAOS_REPORT", tmp_path / "chaos-report.json"))
    work.journal.save(out, figures)
    print(json.dumps(figures, indent=2))

    assert work.crashed == []
    assert report.lost == [], "acknowledged writes lost"
    assert report.refused_applied == [], "refused writes took effect"
    assert report.unbounded_stale_reads(STALE_READ_BOUND) == [], "stale reads beyond a fault"
    assert report.acknowledged_writes > 0
    assert [f.name for f in faults.done if f.skipped and f.name != "partition disk full"] == []
    unexplained = report.unexplained_errors(faults.crash_phases())
    assert unexplained == [], summary(unexplained)
    if CHAOS_STRICT:
        assert report.errors == [], report.error_summary()
