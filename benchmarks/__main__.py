"""`python -m benchmarks [suite|sign|pool|backup|region|audit]` (`make bench` runs `suite`)."""

import sys

from benchmarks import audit_overhead, backup, pool, region_lag, sign_throughput, suite

CHOICES = {
    "suite": suite.main,
    "sign": sign_throughput.main,
    "pool": pool.main,
    "backup": backup.main,
    "region": region_lag.main,
    "audit": audit_overhead.main,
}

if __name__ == "__main__":
    chosen = sys.argv[1:] or ["suite"]
    unknown = [name for name in chosen if name not in CHOICES]
    if unknown:
        raise SystemExit(f"unknown benchmarks {unknown}; choose from {', '.join(CHOICES)}")
    for name in CHOICES:  # in a fixed order, whatever the order given
        if name in chosen:
            CHOICES[name]()
