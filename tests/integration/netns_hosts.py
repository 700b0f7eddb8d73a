"""Hosts for tests: network namespaces joined by veth pairs to a bridge in the root namespace.

Each `NetnsHosts` picks a random `10.x.y.0/24` no route of this machine uses and a random name
suffix, so tests running at the same time do not collide. Host `i` is the namespace
`mh<suffix>h<i>` with `eth0` at `10.x.y.<i+1>`; the bridge holds `10.x.y.254` (the root
namespace, where a load balancer or a client reaches every host). Links can be cut and healed,
slowed with `tc tbf` (which every kernel has), and delayed or made lossy with `tc netem` where the
kernel has sch_netem, for fault and chaos tests.

Needs root and iproute2 (`ip`, `tc`); `available()` says whether they are there. Processes
started with `run` are killed (by PID) and the namespaces and bridge deleted by `close()`, which
the context manager calls whatever happened. Every call is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

COMMAND_TIMEOUT = 10.0
SUBNET_TRIES = 50
SLOW_BURST_BYTES = 4096  # a tbf bucket must hold a full frame (1514 bytes) or it passes none


def available() -> str | None:
    """None if this machine can make hosts, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _tc_root(*args: str, check: bool = True) -> None:
    """`tc` in the root namespace (on a link's bridge end)."""
    done = subprocess.run(
        ["tc", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)}: {done.stderr.strip()}")


def _used_prefixes() -> set[str]:
    """The `10.x.y` prefixes of this machine's routes and addresses."""
    text = _ip("-4", "route", "show", "table", "all").stdout + _ip("-4", "addr").stdout
    return {".".join(word.split(".")[:3]) for word in text.split() if word.startswith("10.")}


def _pick_prefix() -> str:
    used = _used_prefixes()
    for _ in range(SUBNET_TRIES):
        prefix = f"10.{random.randint(64, 250)}.{random.randint(0, 255)}"
        if prefix not in used:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 subnet found")


class NetemUnavailable(RuntimeError):
    """The kernel has no `tc netem` (sch_netem): delay and loss cannot be set."""


@dataclass
class Host:
    """One namespace: its name, address, and the root side of its link."""

    index: int
    namespace: str
    ip: str
    link: str  # the veth end in the root namespace, on the bridge
    netem: dict[str, str] = field(default_factory=dict)  # what `delay`/`loss` set
    shaped: bool = False  # `slow` put a tbf on both ends of the link


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

    def slow(self, host: int | Host, rate_kbit: int, latency_ms: int) -> None:
        """Make the host's link slow both ways: a token bucket (`tc tbf`) of `rate_kbit` on each
        end that queues up to `latency_ms` of traffic and drops what does not fit (tail drop).
        Under load that is a delayed and lossy link, and it needs only `sch_tbf`: some kernels
        (this project's CI among them) have no `sch_netem`, which `delay` and `loss` need.
        `clear` undoes it."""
        target = self.host(host)
        burst = max(SLOW_BURST_BYTES, rate_kbit * 1000 // 8 // 100)  # at least 10 ms of rate
        shape = ("root", "tbf", "rate", f"{rate_kbit}kbit", "burst", str(burst),
                 "latency", f"{latency_ms}ms")  # fmt: skip
        self._tc(target, "qdisc", "replace", "dev", "eth0", *shape)  # what the host sends
        _tc_root("qdisc", "replace", "dev", target.link, *shape)  # what it receives
        target.shaped = True

    def slow_stats(self, host: int | Host) -> dict[str, int]:
        """What the `slow` token buckets did so far: packets sent and dropped, both ways."""
        target = self.host(host)
        sent = self._tc_stats(["ip", "netns", "exec", target.namespace, "tc"], "eth0")
        received = self._tc_stats(["tc"], target.link)
        return {
            "packets_sent": sent[0], "packets_sent_dropped": sent[1],
            "packets_received": received[0], "packets_received_dropped": received[1],
        }  # fmt: skip

    @staticmethod
    def _tc_stats(tc: list[str], dev: str) -> tuple[int, int]:
        """(packets, dropped) of the root qdisc of `dev`, from `tc -s` ("Sent B bytes P pkt
        (dropped D, ..."); `tc` is the command, in a namespace or not."""
        done = subprocess.run(
            [*tc, "-s", "qdisc", "show", "dev", dev],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        words = done.stdout.replace(",", " ").split()
        if "Sent" not in words:
            return 0, 0
        at = words.index("Sent")
        return int(words[at + 3]), int(words[at + 6])

    def delay(self, host: int | Host, ms: float) -> None:
        """Delay every packet the host sends by `ms` (adds `ms` to each of its round trips).
        Raises NetemUnavailable where the kernel has no sch_netem (see `slow`)."""
        self._netem(self.host(host), "delay", f"{ms}ms")

    def loss(self, host: int | Host, percent: float) -> None:
        """Drop `percent` % of the packets the host sends. Raises NetemUnavailable where the
        kernel has no sch_netem (see `slow`)."""
        self._netem(self.host(host), "loss", f"{percent}%")

    def clear(self, host: int | Host) -> None:
        """Remove the host's delay, loss or slowness (`netem` or `tbf`, on either end)."""
        target = self.host(host)
        target.netem.clear()
        self._tc(target, "qdisc", "del", "dev", "eth0", "root", check=False)
        if target.shaped:
            _tc_root("qdisc", "del", "dev", target.link, "root", check=False)
            target.shaped = False

    def netem_available(self) -> bool:
        """Whether this kernel has `tc netem` (sch_netem), which `delay` and `loss` need."""
        probe = ("qdisc", "replace", "dev", "lo", "root", "netem", "delay", "0ms")
        try:
            self._tc(self.hosts[0], *probe)
        except NetemUnavailable:
            return False
        self._tc(self.hosts[0], "qdisc", "del", "dev", "lo", "root", check=False)
        return True

    def _netem(self, host: Host, what: str, value: str) -> None:
        host.netem[what] = value
        rules = [word for key, val in host.netem.items() for word in (key, val)]
        self._tc(host, "qdisc", "replace", "dev", "eth0", "root", "netem", *rules)

    def _tc(self, host: Host, *args: str, check: bool = True) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", host.namespace, "tc", *args],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            message = f"tc {' '.join(args)} on {host.namespace}: {done.stderr.strip()}"
            if "netem" in args and "unknown" in done.stderr:
                raise NetemUnavailable(message + " (this kernel has no sch_netem)")
            raise RuntimeError(message)

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
