"""A pool across three hosts for tests, run from the files `mhsm deploy init` writes (issue 11).

Three network namespaces stand for the hosts (`netns_hosts.py`). In each runs exactly the
ExecStart of its generated systemd units (etcd with its `etcd.conf.yml`, then `mhsm partition`),
and HAProxy runs the generated `haproxy.cfg` in the root namespace on the bridge address. The
pool is activated by a security-domain download, then used and hurt through the front door.

The pool's DNS name resolves nowhere here, and tests may not touch /etc/hosts. So the bridge
address is given as a second `--hostname` (every certificate lists it) and the client's copy of
`pool.json` names it as the URL's host: the same TLS checks, tokens and audiences as through a
DNS name, with no resolver involved.

`started_pool` starts it all and stops HAProxy afterwards (the hosts' processes die with
`NetnsHosts.close`). It can give one host a small disk (its install directory, etcd data and
partition files, on a size-limited tmpfs) for disk-full faults. `Healer` restarts a host's
process that exits, as the units' Restart=always does under systemd. Every wait here is bounded.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from azure.keyvault.keys import KeyClient
from netns_hosts import NetnsHosts, wait_for_port
from pool_support import etcd_leaders
from small_disk import moved_onto_tmpfs

from openmhsm.cli.activation import grant_development_roles
from openmhsm.client import credential_from_pool, retry_policy

ETCD = shutil.which("etcd")
HAPROXY = shutil.which("haproxy")
MHSM = Path(sys.executable).parent / "mhsm"
POOL_NAME = "mhsm.deploy.openmhsm.test"
START_TIMEOUT = 90.0
HEAL_TIMEOUT = 60.0
UNITS = ("etcd", "partition")
SMALL_DISK_BYTES = 256 * 1024 * 1024  # room for etcd's preallocated 64 MiB WAL segments


def missing() -> str | None:
    """None if this machine has what a three-host pool needs besides namespaces, else what not."""
    if ETCD is None or HAPROXY is None:
        return "etcd and haproxy are needed"
    return None


def exec_start(unit: Path) -> list[str]:
    """The command line of a unit's ExecStart (our units have exactly one, unquoted)."""
    lines = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
    assert len(lines) == 1, unit
    return shlex.split(lines[0].removeprefix("ExecStart="))


@dataclass
class Pool:
    hosts: NetnsHosts
    root: Path  # what `mhsm deploy init` wrote
    client_dir: Path  # the client's pool.json (URL host: the bridge address)
    logs: Path
    port: int  # the front door's
    etcd: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    partitions: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    haproxy: subprocess.Popen[bytes] | None = None
    small_disk: Path | None = None  # a host's install directory on a small tmpfs
    small_disk_host: int | None = None
    small_disk_missing: str = ""  # why there is none, when one was asked for

    @property
    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.client_dir / "pool.json").read_text())
        return doc

    # --- processes ------------------------------------------------------------------------

    def start(self, i: int, unit: str) -> subprocess.Popen[bytes]:
        """Start host `i`'s unit as systemd would: its ExecStart, in the host's namespace; the
        process is kept in `etcd` or `partitions`."""
        with (self.logs / f"host-{i}-{unit}.log").open("ab") as out:
            proc = self.hosts.run(
                i, exec_start(self.root / f"host-{i}" / f"openmhsm-{unit}.service"),
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes(unit)[i] = proc
        return proc

    def processes(self, unit: str) -> dict[int, subprocess.Popen[bytes]]:
        """The running (or last) process of `unit` on each host."""
        return self.etcd if unit == "etcd" else self.partitions

    def start_partition(self, i: int) -> None:
        self.start(i, "partition")

    def start_haproxy(self) -> None:
        assert HAPROXY is not None
        with (self.logs / "haproxy.log").open("ab") as out:
            self.haproxy = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.root / "haproxy.cfg")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        wait_for_port(self.hosts.bridge_ip, self.port, 10, self.haproxy)

    def stop_haproxy(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.kill()  # by PID
            self.haproxy.wait(timeout=10)

    def log_tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:])

    # --- health ---------------------------------------------------------------------------

    def partition_url(self, i: int) -> str:
        return str(self.doc["partitions"][i]["url"])

    def ready(self, i: int, timeout: float = 2.0) -> bool:
        """Whether partition `i` answers /readyz on its own address within `timeout`."""
        tls = ssl.create_default_context(cafile=self.doc["ca_cert"])
        try:
            url = f"{self.partition_url(i)}/readyz"
            return httpx.get(url, verify=tls, timeout=timeout).is_success
        except httpx.HTTPError:
            return False

    def wait_ready(self, i: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.partitions[i]
            assert proc.poll() is None, self.log_tail(f"host-{i}-partition")
            if self.ready(i):
                return
            time.sleep(0.2)
        raise AssertionError(f"partition {i} not ready:\n{self.log_tail(f'host-{i}-partition')}")

    def etcd_status(self) -> list[str | None]:
        """Each host's etcd member's answer: the name of the leader it reports, or None if it
        did not serve a linearizable read within two seconds."""
        return etcd_leaders(self.doc["etcd"])

    def etcd_leader(self) -> int:
        """The host whose etcd member every answering member names leader. Raises
        AssertionError if they do not name one member."""
        names = [m["name"] for m in self.doc["etcd"]]
        leaders = {name for name in self.etcd_status() if name}
        assert len(leaders) == 1, f"no single etcd leader: {leaders}"
        return names.index(leaders.pop())

    def healthy(self) -> bool:
        """Every partition ready on its own address and every etcd member answering."""
        return all(self.ready(i, timeout=1.0) for i in range(3)) and all(self.etcd_status())

    def wait_healthy(self, timeout: float = HEAL_TIMEOUT) -> float:
        """Seconds until `healthy()`. Raises AssertionError after `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.healthy():
                return time.monotonic() - start
            time.sleep(0.2)
        states = {i: self.ready(i) for i in range(3)}
        raise AssertionError(
            f"pool not healthy after {timeout} s: ready {states}, etcd {self.etcd_status()}"
        )

    def direct(self, i: int) -> KeyClient:
        """A KeyClient on partition `i`'s own URL, bypassing the front door."""
        doc = self.doc
        return KeyClient(
            self.partition_url(i), credential_from_pool(doc),
            connection_verify=doc["ca_cert"], retry_policy=retry_policy(),
        )  # fmt: skip


def deploy_init(hosts: NetnsHosts, out: Path, port: int) -> None:
    argv = [
        str(MHSM), "deploy", "init", "--name", "three", "--out", str(out),
        *[a for h in hosts.hosts for a in ("--host", h.ip)],
        "--hostname", POOL_NAME, "--hostname", hosts.bridge_ip, "--port", str(port),
        "--install-dir", f"{out}/host-{{i}}", "--mhsm", str(MHSM), "--etcd", str(ETCD),
        "--haproxy-dir", f"{out}/haproxy", "--frontdoor-bind", hosts.bridge_ip,
    ]  # fmt: skip
    made = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stdout + made.stderr


def client_pool_json(root: Path, client_dir: Path, bridge_ip: str) -> None:
    """The generated pool.json with the bridge address as the URL's host (see the docstring)."""
    doc = json.loads((root / "pool.json").read_text())
    for name in ("url", "authority", "identity_endpoint"):
        doc[name] = doc[name].replace(POOL_NAME, bridge_ip)
    client_dir.mkdir(mode=0o700)
    (client_dir / "pool.json").write_text(json.dumps(doc))


def activate(pool: Pool, work: Path) -> None:
    """Azure's way: download the security domain to three wrapping keys, quorum 2; then give
    the administrator the key roles (it holds only Managed HSM Administrator)."""
    mhsm = [str(MHSM), "security-domain"]
    steps = [
        [*mhsm, "make-wrapping-keys", "--out", str(work / "keys")],
        [*mhsm, "download", "--data-dir", str(pool.client_dir),
         "--sd-wrapping-keys", *[str(work / "keys" / f"w{n}.cer") for n in range(3)],
         "--sd-quorum", "2", "--security-domain-file", str(work / "sd.json")],
    ]  # fmt: skip
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    admin = json.loads((pool.root / "host-0" / "admin.json").read_text())
    grant_development_roles(pool.doc, admin["object_id"])


@contextmanager
def started_pool(
    hosts: NetnsHosts, tmp: Path, small_disk_host: int | None = None
) -> Iterator[Pool]:
    """Deploy, start and activate a pool on `hosts` (files under `tmp`); stop HAProxy after.
    The hosts' processes are `hosts`'s: `NetnsHosts.close` kills them. With `small_disk_host`,
    that host's install directory is on a tmpfs of SMALL_DISK_BYTES (`Pool.small_disk`)."""
    started = time.monotonic()
    port = hosts.free_port()
    deploy_init(hosts, tmp / "deploy", port)
    logs = tmp / "logs"
    logs.mkdir()
    pool = Pool(hosts, tmp / "deploy", tmp / "client", logs, port)
    client_pool_json(pool.root, pool.client_dir, hosts.bridge_ip)
    with ExitStack() as disks:
        if small_disk_host is not None:
            directory = pool.root / f"host-{small_disk_host}"
            pool.small_disk_missing = disks.enter_context(
                moved_onto_tmpfs(directory, SMALL_DISK_BYTES)
            )
            if not pool.small_disk_missing:
                pool.small_disk, pool.small_disk_host = directory, small_disk_host
        for i in range(3):
            pool.start(i, "etcd")
        for i in range(3):
            pool.start_partition(i)
        for i in range(3):
            pool.wait_ready(i, START_TIMEOUT)
        try:
            pool.start_haproxy()
            activate(pool, tmp)
            print(f"pool deployed and activated in {time.monotonic() - started:.1f} s")
            yield pool
        finally:
            pool.stop_haproxy()


@dataclass
class Restart:
    unit: str
    host: int
    exit_code: int | None
    at: float  # time.monotonic() of the restart


class Healer:
    """What the units' Restart=always (RestartSec=1s) does under systemd: a background thread
    that restarts a host's etcd member or partition `delay` seconds after it exits. It stops
    on `stop()` or after `lifetime` seconds, whichever comes first. Use as a context manager."""

    POLL = 0.1

    def __init__(self, pool: Pool, lifetime: float, delay: float = 1.0) -> None:
        self.pool = pool
        self.lifetime = lifetime
        self.delay = delay
        self.restarts: list[Restart] = []
        self.failures: list[str] = []  # restarts that raised
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="three-hosts-healer", daemon=True)

    def __enter__(self) -> Healer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        deadline = time.monotonic() + self.lifetime
        exited: dict[tuple[str, int], float] = {}  # when each dead process was first seen
        while not self._stop.wait(self.POLL) and time.monotonic() < deadline:
            for unit in UNITS:
                for i, proc in list(self.pool.processes(unit).items()):
                    if proc.poll() is None:
                        continue
                    seen = exited.setdefault((unit, i), time.monotonic())
                    if time.monotonic() - seen < self.delay:
                        continue
                    del exited[(unit, i)]
                    self._restart(unit, i, proc.returncode)

    def _restart(self, unit: str, i: int, code: int | None) -> None:
        try:
            self.pool.start(i, unit)
        except (OSError, subprocess.SubprocessError) as exc:
            self.failures.append(f"{unit} on host {i}: {exc}")
            return
        self.restarts.append(Restart(unit, i, code, time.monotonic()))


@contextmanager
def stopped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGSTOP `proc` (by PID) for the block, then SIGCONT it if it still runs."""
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
