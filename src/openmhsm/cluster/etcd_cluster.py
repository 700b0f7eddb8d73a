"""A local etcd cluster as child processes: start, probe, kill, restart and replace its members.

Used by the supervisor (`mhsm up`) and by tests. Member `n` is named `etcd<n>`, keeps its data in
`root/<n>` and logs to `root/<n>.log`. Ports are chosen free (bind to port 0) unless given; a
cluster restarted over existing data dirs must be given the same ports, because the members'
peer URLs are part of the cluster's stored membership.

Children get `SIGKILL` when the thread that started them dies (`setpriv --pdeathsig`, where
available), so start them from a long-lived thread (the event loop's, the test's). `stop()` is
also registered with `atexit`. Process control is synchronous; everything that talks to the
cluster API (`wait_healthy`, `leader`, `cluster_members`, `replace`) is async.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aetcd  # type: ignore[import-untyped]

ETCD_PACKAGE_HINT = "install Debian's etcd-server (apt-get install etcd-server)"
_LIVE: set[LocalEtcdCluster] = set()  # clusters with members we started: stopped at exit


@dataclass
class EtcdMember:
    """One member as this manager started it."""

    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def endpoint(self) -> str:
        """`host:port` of the client URL, as `EtcdStorage` takes it."""
        return urlsplit(self.client_url).netloc

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """One member as the cluster's membership lists it (name is empty until it first starts)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


MAX_TXN_OPS = 1024
MAX_REQUEST_BYTES = 8 * 1024 * 1024


class LocalEtcdCluster:
    """`size` etcd members on `host`, with fast failure detection for loopback."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        host: str = "127.0.0.1",
        *,
        ports: Sequence[tuple[int, int]] | None = None,
        token: str | None = None,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        quota_backend_bytes: int = 1 << 30,
        auto_compaction_retention: str = "1h",
        api_timeout: float = 2.0,
    ) -> None:
        """`ports` are (client, peer) per member; free ones are picked when omitted."""
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        if ports is not None and len(ports) != size:
            raise ValueError(f"expected {size} (client, peer) port pairs, got {len(ports)}")
        self.root = Path(root)
        self.token = token or f"openmhsm-{uuid.uuid4().hex}"
        self._flags = [
            f"--heartbeat-interval={heartbeat_ms}",
            f"--election-timeout={election_ms}",
            f"--quota-backend-bytes={quota_backend_bytes}",
            "--auto-compaction-mode=periodic",
            f"--auto-compaction-retention={auto_compaction_retention}",
            "--pre-vote=true",  # a rejoining member does not disrupt the sitting leader
            # One key with all its versions restores in one transaction (etcd's default: 128).
            f"--max-txn-ops={MAX_TXN_OPS}",
            f"--max-request-bytes={MAX_REQUEST_BYTES}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        self.api_timeout = api_timeout
        pairs = list(ports) if ports is not None else _free_port_pairs(host, size)
        self._members = [
            EtcdMember(
                name=f"etcd{n}",
                client_url=f"http://{host}:{client}",
                peer_url=f"http://{host}:{peer}",
                data_dir=self.root / str(n),
                log_path=self.root / f"{n}.log",
            )
            for n, (client, peer) in enumerate(pairs)
        ]

    def members(self) -> list[EtcdMember]:
        return list(self._members)

    def member(self, name: str) -> EtcdMember:
        for member in self._members:
            if member.name == name:
                return member
        raise KeyError(f"no etcd member named {name!r}")

    def endpoints(self) -> list[str]:
        """Every member's `host:port`, for `EtcdStorage` (or `etcd://` + ",".join(...))."""
        return [m.endpoint for m in self._members]

    def start(self) -> None:
        """Start every member that is not running (a new cluster, or existing data dirs)."""
        self.root.mkdir(parents=True, exist_ok=True)
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self._members)
        for member in self._members:
            if not member.running():
                self._spawn(member, initial, "new")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the member's process by PID; reap it when the signal ends it."""
        member = self.member(name)
        if not member.running() or member.process is None:
            return
        member.process.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.process.wait(timeout=10)

    def restart(self, name: str) -> None:
        """Stop the member if it runs and start it again on its own data dir.

        Raises RuntimeError when the data dir is gone: that member needs `replace()`, because a
        member restarted empty under its old identity corrupts the raft log."""
        member = self.member(name)
        if not (member.data_dir / "member").is_dir():
            raise RuntimeError(f"{name}: data dir {member.data_dir} is gone; replace the member")
        self._stop_member(member)
        self._spawn(member, "", "existing")

    async def replace(self, name: str, timeout: float = 20.0) -> None:
        """Give the member a fresh identity and an empty data dir: kill it, remove it from the
        membership, add it back (same URLs) and start it with `--initial-cluster-state existing`.

        Raises TimeoutError when no healthy member accepts the membership change in time."""
        member = self.member(name)
        self._stop_member(member, sig=signal.SIGKILL)
        shutil.rmtree(member.data_dir, ignore_errors=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                initial = await self._readd(member)
                break
            except aetcd.ClientError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name}: the cluster refused the member change") from None
                await asyncio.sleep(0.2)
        self._spawn(member, initial, "existing")

    async def wait_healthy(self, timeout: float = 20.0) -> None:
        """Wait until every member answers a linearizable read.

        Raises RuntimeError (with the log's tail) when a member exits, TimeoutError at `timeout`."""
        deadline = time.monotonic() + timeout
        pending = list(self._members)
        while pending:
            for member in pending:
                if not member.running():
                    raise RuntimeError(f"{member.name} exited:\n{self.log_tail(member.name)}")
            healthy = await asyncio.gather(*(self.is_healthy(m.name) for m in pending))
            pending = [m for m, ok in zip(pending, healthy, strict=True) if not ok]
            if pending and time.monotonic() > deadline:
                names = ", ".join(m.name for m in pending)
                raise TimeoutError(f"etcd members not healthy after {timeout} s: {names}")
            if pending:
                await asyncio.sleep(0.1)

    async def is_healthy(self, name: str) -> bool:
        """Whether the member runs and serves a linearizable read (it sees a leader and quorum)."""
        member = self.member(name)
        if not member.running():
            return False
        try:
            async with self._client(member) as client:
                await client.get(b"health")
        except aetcd.ClientError:
            return False
        return True

    async def leader(self) -> str | None:
        """The current leader's name, as the first running member that knows one reports it."""
        for member in self._running():
            with contextlib.suppress(aetcd.ClientError):
                async with self._client(member) as client:
                    status = await client.status()
                if status.leader is not None:
                    return str(status.leader.name)
        return None

    async def cluster_members(self) -> list[ClusterMember]:
        """The membership as a running member reports it. Raises RuntimeError if none answers."""
        for member in self._running():
            with contextlib.suppress(aetcd.ClientError):
                async with self._client(member) as client:
                    return [_cluster_member(m) async for m in client.members()]
        raise RuntimeError("no etcd member answered")

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM the members one at a time, SIGKILL one still running after `timeout`.
        Idempotent. One at a time, because a stopping leader first hands leadership to a
        follower and waits for it; a SIGKILL loses nothing acknowledged (etcd fsyncs its WAL)."""
        for member in self._members:
            self._stop_member(member, timeout=timeout)
        _LIVE.discard(self)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.member(name).log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def _readd(self, member: EtcdMember) -> str:
        """Remove `member`'s old identity and add it anew; return its `--initial-cluster`."""
        for peer in self._running():
            if peer is member:
                continue
            async with self._client(peer) as client:
                current = [_cluster_member(m) async for m in client.members()]
                mine = [m for m in current if member.peer_url in m.peer_urls]
                if mine and mine[0].name:  # the old, started identity
                    await client.remove_member(mine[0].id)
                    mine = []
                if not mine:  # added but never started (an earlier replace) is reused
                    await client.add_member([member.peer_url])
                listed = [_cluster_member(m) async for m in client.members()]
            named = [f"{m.name}={m.peer_urls[0]}" for m in listed if m.name and m.peer_urls]
            return ",".join([*named, f"{member.name}={member.peer_url}"])
        raise aetcd.ClientError("no running member to change the membership through")

    def _spawn(self, member: EtcdMember, initial_cluster: str, state: str) -> None:
        command = [
            _etcd_binary(),
            f"--name={member.name}",
            f"--data-dir={member.data_dir}",
            f"--listen-client-urls={member.client_url}",
            f"--advertise-client-urls={member.client_url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster-token={self.token}",
            f"--initial-cluster-state={state}",
            *([f"--initial-cluster={initial_cluster}"] if initial_cluster else []),
            *self._flags,
        ]
        _LIVE.add(self)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        with member.log_path.open("ab") as log:
            member.process = subprocess.Popen(  # noqa: S603
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_etcd_environment(),
                start_new_session=True,  # terminal signals go to us; we stop members in order
            )

    def _stop_member(
        self, member: EtcdMember, sig: int = signal.SIGTERM, timeout: float = 5.0
    ) -> None:
        if member.process is None:
            return
        if member.running():
            member.process.send_signal(sig)
        try:
            member.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            member.process.kill()
            member.process.wait()

    def _running(self) -> list[EtcdMember]:
        return [m for m in self._members if m.running()]

    @contextlib.asynccontextmanager
    async def _client(self, member: EtcdMember) -> AsyncIterator[Any]:
        parts = urlsplit(member.client_url)
        client = aetcd.Client(parts.hostname, parts.port, timeout=self.api_timeout)
        try:
            yield client
        finally:
            await client.close()


def _cluster_member(member: Any) -> ClusterMember:
    return ClusterMember(
        id=int(member.id),
        name=str(member.name),
        peer_urls=tuple(str(u) for u in member.peer_urls),
        client_urls=tuple(str(u) for u in member.client_urls),
    )


def _etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise RuntimeError(f"etcd is not installed: {ETCD_PACKAGE_HINT}")
    return path


def _etcd_environment() -> dict[str, str]:
    """Our environment minus stray ETCD_* variables (etcd reads them as flags)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    if platform.machine().lower() in ("aarch64", "arm64"):
        env["ETCD_UNSUPPORTED_ARCH"] = "arm64"
    return env


def _free_port_pairs(host: str, count: int) -> list[tuple[int, int]]:
    """`count` (client, peer) pairs of distinct free ports, all held open while choosing."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(2 * count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
    return [(ports[2 * i], ports[2 * i + 1]) for i in range(count)]


@atexit.register
def _stop_live_clusters() -> None:
    for cluster in list(_LIVE):
        cluster.stop(timeout=2.0)
