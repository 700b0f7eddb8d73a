"""The faults of the chaos suite, injected into a running pool (`mhsm up`, three partitions on a
three-member etcd cluster) by PID, and waited out until the pool is whole again.

Every fault is bounded in time: it holds for a few seconds, is undone (SIGCONT, space freed), and
`wait_healthy` gives the supervisor `HEAL_TIMEOUT` seconds to restore all three partitions and
members. Each fault names the workload's phase while it runs, so the journal says which fault an
error happened under.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pool_support import PoolProcess, etcd_leaders, mhsm, runs
from small_disk import fill, mount_tmpfs, unmount

from openmhsm.client import credential_from_pool

HEAL_TIMEOUT = 45.0
MAINTAIN_TIMEOUT = 120.0
DISK_BYTES = 256 * 1024
DIRECT_WRITES = 20
API = {"api-version": "7.6"}


class ChaosPool(PoolProcess):
    """A pool-mode `mhsm up` with the health views the faults need."""

    def ready_partitions(self) -> list[int]:
        doc = self.reload()
        tls = ssl.create_default_context(cafile=doc["ca_cert"])
        ready = []
        with httpx.Client(verify=tls, timeout=1.0) as client:
            for part in doc["partitions"]:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{part['url']}/readyz").status_code == 200:
                        ready.append(part["id"])
        return ready

    def etcd_status(self) -> dict[str, str | None]:
        """Each member's answer: the leader's name it reports, or None if it did not answer
        a linearizable read within two seconds."""
        members = self.reload()["etcd"]
        return dict(zip([m["name"] for m in members], etcd_leaders(members), strict=True))

    def etcd_leader(self) -> dict[str, Any]:
        """The member (from pool.json) that etcd reports as leader. Raises AssertionError if
        no member names one."""
        leaders = {name for name in self.etcd_status().values() if name}
        assert len(leaders) == 1, f"no single etcd leader: {leaders}"
        (name,) = leaders
        return next(m for m in self.doc["etcd"] if m["name"] == name)

    def wait_healthy(self, timeout: float = HEAL_TIMEOUT) -> float:
        """Seconds until all three partitions answer /readyz and every etcd member serves a
        linearizable read. Raises AssertionError after `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if len(self.ready_partitions()) == 3 and all(self.etcd_status().values()):
                return time.monotonic() - start
            time.sleep(0.2)
        raise AssertionError(f"pool not healthy after {timeout} s: {self.doc}")

    def marker(self) -> str:
        """What every process of this pool has in its command line (see `runs`)."""
        return str(self.data_dir.resolve())


@dataclass
class FaultRecord:
    name: str
    detail: str = ""
    seconds: float = 0.0  # from injection until the pool was whole again
    skipped: str = ""
    crashed_partition: bool = False  # a partition died with requests in flight
    began: float = 0.0  # time.monotonic() at injection, and once the pool was whole again
    ended: float = 0.0


@dataclass
class FaultLog:
    """Runs faults one at a time on a pool with `wait_healthy()`, labelling the workload's
    journal through `set_phase` and keeping a record of each."""

    pool: Any
    set_phase: Callable[[str], None]
    rng: random.Random
    settle: float = field(default=2.0, kw_only=True)
    done: list[FaultRecord] = field(default_factory=list, kw_only=True)

    @contextlib.contextmanager
    def fault(self, name: str) -> Iterator[FaultRecord]:
        """Label the phase, run the fault, wait until the pool is whole, then let traffic run
        `settle` seconds on the healed pool (still labelled: late errors belong to the fault)."""
        record = FaultRecord(name, began=time.monotonic())
        self.set_phase(name)
        try:
            yield record
            if not record.skipped:
                self.pool.wait_healthy()
                record.ended = time.monotonic()
                record.seconds = round(record.ended - record.began, 2)
                time.sleep(self.settle)
        finally:
            self.set_phase("steady")
            self.done.append(record)

    def crash_phases(self) -> set[str]:
        """The faults under which a partition died or was cut off with requests in flight."""
        return {f.name for f in self.done if f.crashed_partition}

    def steady(self, seconds: float) -> None:
        self.set_phase("steady")
        time.sleep(seconds)


@dataclass
class Faults(FaultLog):
    """Process faults on a one-host pool (`mhsm up`)."""

    pool: ChaosPool
    scratch: Path
    hold: float = field(default=4.0, kw_only=True)
    direct: int = field(default=0, kw_only=True)  # keys made by `_direct_writes` so far

    # --- partitions ---------------------------------------------------------------------------

    def _partition(self) -> dict[str, Any]:
        return dict(self.rng.choice(self.pool.reload()["partitions"]))

    def partition_sigkill(self) -> None:
        with self.fault("partition SIGKILL") as record:
            victim = self._partition()
            record.detail = f"partition {victim['id']} pid {victim['pid']}"
            record.crashed_partition = True
            os.kill(victim["pid"], signal.SIGKILL)
            time.sleep(0.5)  # until the supervisor's next tick, all looks healthy

    def partition_sigstop(self) -> None:
        with self.fault("partition SIGSTOP") as record:
            victim = self._partition()
            record.detail = f"partition {victim['id']} pid {victim['pid']} for {self.hold} s"
            with self._stopped(victim["pid"]):
                time.sleep(self.hold)
            self.pool.wait_healthy()
            if self.pool.partition_pids()[victim["id"]] != victim["pid"]:
                record.crashed_partition = True  # the supervisor found it unresponsive
                record.detail += ", killed by the supervisor"

    # --- etcd ---------------------------------------------------------------------------------

    def etcd_leader_sigkill(self) -> None:
        with self.fault("etcd leader SIGKILL") as record:
            leader = self.pool.etcd_leader()
            record.detail = f"{leader['name']} pid {leader['pid']}"
            os.kill(leader["pid"], signal.SIGKILL)
            time.sleep(0.5)

    def etcd_follower_sigstop(self) -> None:
        with self.fault("etcd follower SIGSTOP") as record:
            leader = self.pool.etcd_leader()
            followers = [m for m in self.pool.doc["etcd"] if m["name"] != leader["name"]]
            victim = self.rng.choice(followers)
            record.detail = f"{victim['name']} pid {victim['pid']} for {self.hold} s"
            with self._stopped(victim["pid"]):
                time.sleep(self.hold)

    def partition_and_etcd_sigkill(self) -> None:
        """One partition and one etcd member (the leader) at once: still within quorum."""
        with self.fault("partition + etcd leader SIGKILL") as record:
            part, member = self._partition(), self.pool.etcd_leader()
            record.detail = f"partition {part['id']} and {member['name']}"
            record.crashed_partition = True
            os.kill(part["pid"], signal.SIGKILL)
            os.kill(member["pid"], signal.SIGKILL)
            time.sleep(0.5)

    # --- operations ---------------------------------------------------------------------------

    def rolling_maintenance(self) -> None:
        with self.fault("mhsm maintain") as record:
            done = mhsm(
                "maintain",
                "--data-dir",
                str(self.pool.data_dir),
                "--timeout",
                str(MAINTAIN_TIMEOUT),
                timeout=MAINTAIN_TIMEOUT + 30,
            )
            record.detail = done.stdout.strip().splitlines()[-1] if done.stdout else ""
            assert done.code == 0, done.stderr

    def disk_full(self) -> None:
        """One partition's audit log and output log on a full tmpfs (DESIGN §6: a failed audit
        write never fails the request it records), then the space freed again."""
        with self.fault("partition disk full") as record:
            disk = self.scratch / "disk"
            reason = mount_tmpfs(disk, DISK_BYTES)
            if reason:
                record.skipped = reason
                return
            try:
                victim = self._partition()
                record.detail = f"partition {victim['id']}: audit and log on a full {disk}"
                with self._full_disk_for(victim["id"], disk) as audit_file:
                    url = self.pool.reload()["partitions"][victim["id"]]["url"]
                    # The workload's connections stay with the partitions they were made to:
                    # writes sent to this partition's own port make sure it serves some.
                    made = self._direct_writes(url, DIRECT_WRITES)
                    time.sleep(self.hold)
                    assert audit_file.stat().st_size == 0, "audit written to a full disk?"
                    (disk / "filler").unlink()  # the space comes back: audit writes resume
                    made += self._direct_writes(url, 1)
                    audit_bytes = audit_file.stat().st_size
                    record.detail += (
                        f"; {made} writes acknowledged by it while full, "
                        f"{audit_bytes} audit bytes once freed"
                    )
                    assert audit_bytes > 0, "audit writes did not resume"
            finally:
                unmount(disk)

    @contextlib.contextmanager
    def _full_disk_for(self, n: int, disk: Path) -> Iterator[Path]:
        """Point partition `n`'s audit file and output log at `disk`, fill `disk`, and restart
        the partition gracefully (it opens both files anew); undo it all afterwards."""
        data = self.pool.data_dir
        links = {
            data / "audit" / f"partition-{n}.jsonl": disk / f"partition-{n}.jsonl",
            data / "logs" / f"partition-{n}.log": disk / f"partition-{n}.log",
        }
        for link, target in links.items():
            if link.exists():
                os.replace(link, link.with_name(link.name + ".before-disk-full"))
            target.touch(mode=0o600)
            link.symlink_to(target)
        fill(disk / "filler")
        self._restart_partition(n)
        try:
            yield disk / f"partition-{n}.jsonl"
        finally:
            for link in links:
                link.unlink(missing_ok=True)
                saved = link.with_name(link.name + ".before-disk-full")
                if saved.exists():
                    os.replace(saved, link)
            self._restart_partition(n)  # closes its files on the tmpfs
            for link, target in links.items():
                shutil.copy2(target, link.with_name(link.name + ".disk-full"))

    def _direct_writes(self, url: str, count: int) -> int:
        """Create `count` keys through the partition at `url` (raw HTTPS, the admin's token) and
        read each back through the pool URL. Returns how many it acknowledged; raises
        AssertionError if one fails."""
        doc = self.pool.reload()
        tls = ssl.create_default_context(cafile=doc["ca_cert"])
        with credential_from_pool(doc) as credential:
            token = credential.get_token(doc["resource"] + "/.default").token
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(verify=tls, timeout=30, headers=headers) as http:
            for _ in range(count):
                self.direct += 1
                name = f"chaos-direct-{self.direct}"
                made = http.post(
                    f"{url}/keys/{name}/create", params=API, json={"kty": "EC-HSM", "crv": "P-256"}
                )
                assert made.status_code == 200, made.text
                got = http.get(f"{doc['url']}/keys/{name}/", params=API)
                assert got.status_code == 200, got.text
                assert (
                    got.json()["key"]["kid"].split("/keys/")[1]
                    == (made.json()["key"]["kid"].split("/keys/")[1])
                )
        return count

    def _restart_partition(self, n: int) -> None:
        """SIGTERM (drain) partition `n` and wait until the supervisor has a new one serving."""
        pid = self.pool.partition_pids()[n]
        os.kill(pid, signal.SIGTERM)
        self.pool.wait_for(lambda doc: doc["partitions"][n]["pid"] != pid, HEAL_TIMEOUT)
        self.pool.wait_healthy()

    @contextlib.contextmanager
    def _stopped(self, pid: int) -> Iterator[None]:
        """SIGSTOP `pid` for the block, then SIGCONT it if it is still this pool's process (the
        supervisor may have killed a stopped partition and its pid been reused)."""
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            if runs(pid, self.pool.marker()):
                os.kill(pid, signal.SIGCONT)


# The short form's sequence (CI); the long form draws from the same list at random.
SEQUENCE = (
    "partition_sigkill",
    "partition_sigstop",
    "etcd_leader_sigkill",
    "etcd_follower_sigstop",
    "partition_and_etcd_sigkill",
    "rolling_maintenance",
    "disk_full",
)


def run_faults(faults: Any, sequence: tuple[str, ...], rng: random.Random, seconds: float) -> None:
    """Each fault of `sequence` once (by method name of `faults`), then faults drawn at random
    for `seconds`, with steady traffic between them."""
    faults.steady(3.0)
    for name in sequence:
        getattr(faults, name)()
        faults.steady(1.0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        getattr(faults, rng.choice(sequence))()
        faults.steady(rng.uniform(1.0, 5.0))
    faults.steady(2.0)
