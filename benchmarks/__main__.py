"""`python -m benchmarks` (or `make bench`): run every benchmark."""

from benchmarks import sign_throughput

if __name__ == "__main__":
    sign_throughput.main()
