"""`python -m benchmarks [sign|pool|backup]` (or `make bench`): run the benchmarks."""

import sys

from benchmarks import backup, pool, sign_throughput

if __name__ == "__main__":
    chosen = set(sys.argv[1:]) or {"sign", "pool"}
    if "sign" in chosen:
        sign_throughput.main()
    if "pool" in chosen:
        pool.main()
    if "backup" in chosen:
        backup.main()
