"""Where the CPU went during one measurement: named groups of processes (partitions, etcd, the
KMIP server, ...), the whole machine, and what the hypervisor took, read from /proc (Linux)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` (all its threads); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _cpu_line() -> list[int]:
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def machine_busy_seconds() -> float:
    """CPU seconds this machine spent working (user, nice, system, irq, softirq), over all
    cores, since boot."""
    user, nice, system, _idle, _iowait, irq, softirq = _cpu_line()[:7]
    return (user + nice + system + irq + softirq) / _TICK


def machine_steal_seconds() -> float:
    """CPU seconds the hypervisor gave to others while this (virtual) machine wanted to run,
    since boot: a high rate means the numbers were disturbed from outside."""
    return _cpu_line()[7] / _TICK


@dataclass(frozen=True)
class CpuUse:
    """CPU used over `seconds` of wall time, in cores (1.0 = one core busy all the time)."""

    seconds: float
    groups: dict[str, float]
    machine: float
    steal: float

    def as_json(self) -> dict[str, float]:
        return {
            **{k: round(v, 3) for k, v in self.groups.items()},
            "machine": round(self.machine, 3),
            "steal": round(self.steal, 3),
        }


class CpuMeter:
    """`start()` then `stop()` around a measurement."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self._start: tuple[float, float, float, dict[str, float]] | None = None

    def _sample(self) -> dict[str, float]:
        return {n: sum(process_seconds(p) for p in pids) for n, pids in self.groups.items()}

    def start(self) -> None:
        self._start = (
            time.monotonic(),
            machine_busy_seconds(),
            machine_steal_seconds(),
            self._sample(),
        )

    def stop(self) -> CpuUse:
        assert self._start is not None, "start() first"
        began, busy, steal, groups = self._start
        wall = time.monotonic() - began
        now = self._sample()
        return CpuUse(
            seconds=wall,
            groups={n: (now[n] - groups[n]) / wall for n in groups},
            machine=(machine_busy_seconds() - busy) / wall,
            steal=(machine_steal_seconds() - steal) / wall,
        )
