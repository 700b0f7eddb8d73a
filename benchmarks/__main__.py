"""`python -m benchmarks [sign|pool|backup|region]` (or `make bench`): run the benchmarks."""

import sys

from benchmarks import backup, pool, region_lag, sign_throughput

if __name__ == "__main__":
    chosen = set(sys.argv[1:]) or {"sign", "pool"}
    if "sign" in chosen:
        sign_throughput.main()
    if "pool" in chosen:
        pool.main()
    if "backup" in chosen:
        backup.main()
    if "region" in chosen:
        region_lag.main()
