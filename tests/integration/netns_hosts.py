"""Hosts for tests: network namespaces joined by veth pairs to a bridge in the root namespace.

Each `NetnsHosts` picks a random `10.x.y.0/24` no route of this machine uses and a random name
suffix, so tests running at the same time do not collide. Host `i` is the namespace
`mh<suffix>h<i>` with `eth0` at `10.x.y.<i+1>`; the bridge holds `10.x.y.254` (the root
namespace, where a load balancer or a client reaches every host). Links can be cut and healed,
slowed and made lossy with `htb` and a random classic-BPF classifier (`link_shaping`, which needs
no `sch_netem`), and delayed with `tc netem` where the kernel has it, for fault and chaos tests.

Needs root and iproute2 (`ip`, `tc`); `available()` says whether they are there. Processes
started with `run` are killed (by PID) and the namespaces and bridge deleted by `close()`, which
the context manager calls whatever happened. Every call is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import link_shaping
from link_shaping import Shape

COMMAND_TIMEOUT = 10.0
SUBNET_TRIES = 50
SUBNET_LOCK = "/tmp/openmhsm-netns-subnets.lock"


def available() -> str | None:
    """None if this machine can make hosts, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    return None


def _run(argv: Sequence[str], check: bool) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check)


def _tc_root(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`tc` in the root namespace (on a link's bridge end)."""
    return _run(["tc", *args], check)


def _used_prefixes() -> set[str]:
    """The `10.x.y` prefixes of this machine's routes and addresses."""
    text = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr").stdout
    return {".".join(word.split(".")[:3]) for word in text.split() if word.startswith("10.")}


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """Between this machine's processes: checking a subnet is free and claiming it is one step."""
    with open(SUBNET_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pick_prefix() -> str:
    used = _used_prefixes()
    for _ in range(SUBNET_TRIES):
        prefix = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
        if prefix not in used:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 subnet found")


class NetemUnavailable(RuntimeError):
    """The kernel has no `tc netem` (sch_netem): delay cannot be set."""


@dataclass
class Host:
    """One namespace: its name, address, and the root side of its link."""

    index: int
    namespace: str
    ip: str
    link: str  # the veth end in the root namespace, on the bridge
    sends: Shape | None = None  # what `slow`/`loss` did to the host's side of its link
    receives: Shape | None = None  # and to the bridge's side (what the host receives)


class NetnsHosts:
    """`count` hosts on one bridge. Use as a context manager."""

    def __init__(self, count: int = 3) -> None:
        suffix = secrets.token_hex(3)
        self.prefix = _pick_prefix()
        self.bridge = f"mh{suffix}br"
        self.bridge_ip = f"{self.prefix}.254"
        self.hosts = [
            Host(i, f"mh{suffix}h{i}", f"{self.prefix}.{i + 1}", f"mh{suffix}v{i}")
            for i in range(count)
        ]
        self._procs: list[subprocess.Popen[Any]] = []
        self._made: list[str] = []  # namespaces made so far (for close)

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> NetnsHosts:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        with _subnet_lock():  # another test's hosts may be picking a subnet right now
            if self.prefix in _used_prefixes():
                self._renumber(_pick_prefix())
            _ip("addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for host in self.hosts:
            _ip("netns", "add", host.namespace)
            self._made.append(host.namespace)
            _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0",
                "netns", host.namespace)  # fmt: skip
            _ip("link", "set", host.link, "master", self.bridge, "up")
            _ip("-n", host.namespace, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            _ip("-n", host.namespace, "link", "set", "eth0", "up")
            _ip("-n", host.namespace, "link", "set", "lo", "up")

    def _renumber(self, prefix: str) -> None:
        self.prefix, self.bridge_ip = prefix, f"{prefix}.254"
        for host in self.hosts:
            host.ip = f"{prefix}.{host.index + 1}"

    def close(self) -> None:
        """Kill every process started here (SIGKILL, by PID), delete the namespaces (and their
        veth pairs with them) and the bridge. Idempotent; never raises for what is gone."""
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=COMMAND_TIMEOUT)
        self._procs.clear()
        for namespace in self._made:
            _ip("netns", "del", namespace, check=False)
        self._made.clear()
        for host in self.hosts:
            _ip("link", "del", host.link, check=False)
        _ip("link", "del", self.bridge, check=False)

    # --- processes ------------------------------------------------------------------------

    def host(self, host: int | Host) -> Host:
        return host if isinstance(host, Host) else self.hosts[host]

    def run(
        self, host: int | Host, argv: Sequence[str], **popen_kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start `argv` in the host's namespace. `ip netns exec` execs `argv` in its own
        process, so the PID is the command's own. Killed by `close()` if still running."""
        namespace = self.host(host).namespace
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc: subprocess.Popen[Any] = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv], **popen_kwargs
        )
        self._procs.append(proc)
        return proc

    def check(self, host: int | Host, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the host's namespace to completion (bounded); raise if it fails."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.host(host).namespace, *argv],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on host {host}: {done.stderr.strip()}")
        return done

    # --- faults ---------------------------------------------------------------------------

    def cut(self, host: int | Host) -> None:
        """Take the host off the network: its link to the bridge goes down."""
        _ip("link", "set", self.host(host).link, "down")

    def heal(self, host: int | Host) -> None:
        """Bring the host's link back up."""
        _ip("link", "set", self.host(host).link, "up")

    def slow(
        self, host: int | Host, rate_kbit: int, latency_ms: int, loss_percent: float = 0.0
    ) -> None:
        """Make the host's link slow both ways: `rate_kbit` on each end, queueing up to
        `latency_ms` of traffic and dropping what does not fit, and `loss_percent` % of the
        packets dropped at random. `clear` undoes it."""
        target = self.host(host)
        shape = Shape(rate_kbit, latency_ms, loss_percent)
        self._shape(target, shape, shape)

    def loss(self, host: int | Host, percent: float) -> None:
        """Drop a random `percent` % of the packets the host sends (on top of any `slow`)."""
        target = self.host(host)
        sends = replace(target.sends or Shape(), loss_percent=percent)
        self._shape(target, sends, target.receives)

    def shaped_stats(self, host: int | Host) -> dict[str, int]:
        """What the shaping of `slow`/`loss` did so far: packets sent and dropped, both ways."""
        target = self.host(host)
        sent = self._tc(target, "-s", "qdisc", "show", "dev", "eth0").stdout
        received = _tc_root("-s", "qdisc", "show", "dev", target.link).stdout
        (sent_packets, sent_dropped) = link_shaping.parse_stats(sent)
        (received_packets, received_dropped) = link_shaping.parse_stats(received)
        return {
            "packets_sent": sent_packets, "packets_sent_dropped": sent_dropped,
            "packets_received": received_packets, "packets_received_dropped": received_dropped,
        }  # fmt: skip

    def _shape(self, target: Host, sends: Shape | None, receives: Shape | None) -> None:
        if sends is not None:
            self._tc(target, "qdisc", "del", "dev", "eth0", "root", check=False)
            for step in link_shaping.commands("eth0", sends):
                self._tc(target, *step)
        if receives is not None:
            _tc_root("qdisc", "del", "dev", target.link, "root", check=False)
            for step in link_shaping.commands(target.link, receives):
                _tc_root(*step)
        target.sends, target.receives = sends, receives

    def delay(self, host: int | Host, ms: float) -> None:
        """Delay every packet the host sends by `ms` (adds `ms` to each of its round trips),
        replacing any `slow`/`loss` on its side. Raises NetemUnavailable where the kernel has
        no sch_netem, which constant delay needs."""
        target = self.host(host)
        target.sends = None
        self._tc(target, "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", f"{ms}ms")

    def clear(self, host: int | Host) -> None:
        """Remove the host's delay, loss or slowness, on either end."""
        target = self.host(host)
        self._tc(target, "qdisc", "del", "dev", "eth0", "root", check=False)
        if target.receives is not None:
            _tc_root("qdisc", "del", "dev", target.link, "root", check=False)
        target.sends = target.receives = None

    def netem_available(self) -> bool:
        """Whether this kernel has `tc netem` (sch_netem), which `delay` needs."""
        probe = ("qdisc", "replace", "dev", "lo", "root", "netem", "delay", "0ms")
        try:
            self._tc(self.hosts[0], *probe)
        except NetemUnavailable:
            return False
        self._tc(self.hosts[0], "qdisc", "del", "dev", "lo", "root", check=False)
        return True

    def _tc(self, host: Host, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["ip", "netns", "exec", host.namespace, "tc", *args],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            message = f"tc {' '.join(args)} on {host.namespace}: {done.stderr.strip()}"
            if "netem" in args and "unknown" in done.stderr:
                raise NetemUnavailable(message + " (this kernel has no sch_netem)")
            raise RuntimeError(message)
        return done

    # --- helpers --------------------------------------------------------------------------

    def free_port(self) -> int:
        """A port free right now on the bridge address (for a server in the root namespace)."""
        with socket.socket() as s:
            s.bind((self.bridge_ip, 0))
            port: int = s.getsockname()[1]
            return port


def wait_for_port(
    ip: str, port: int, timeout: float, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Wait until `ip:port` accepts a TCP connection. Raises TimeoutError, or RuntimeError if
    `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process for {ip}:{port} exited with {proc.returncode}")
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{ip}:{port} did not accept connections in {timeout} s")
