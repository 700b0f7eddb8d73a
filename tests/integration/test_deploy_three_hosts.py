"""A pool across three hosts, run from the files `mhsm deploy init` writes (issue 11).

Three network namespaces stand for the hosts (`netns_hosts.py`). In each runs exactly the
ExecStart of its generated systemd units (etcd with its `etcd.conf.yml`, then `mhsm partition`),
and HAProxy runs the generated `haproxy.cfg` in the root namespace on the bridge address. The
pool is activated, used and hurt through the front door with the Azure SDK clients.

The pool's DNS name resolves nowhere here, and the test may not touch /etc/hosts. So the bridge
address is given as a second `--hostname` (every certificate lists it) and the client's copy of
`pool.json` names it as the URL's host: the same TLS checks, tokens and audiences as through a
DNS name, with no resolver involved.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import SignatureAlgorithm
from netns_hosts import NetnsHosts, available, wait_for_port

from openmhsm.cli.activation import grant_development_roles
from openmhsm.client import Clients, connect, credential_from_pool, retry_policy

ETCD = shutil.which("etcd")
HAPROXY = shutil.which("haproxy")
MHSM = Path(sys.executable).parent / "mhsm"
POOL_NAME = "mhsm.deploy.openmhsm.test"
START_TIMEOUT = 90.0
HEAL_TIMEOUT = 60.0
DIGEST = bytes(range(32))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.skipif(ETCD is None or HAPROXY is None, reason="etcd and haproxy are needed"),
]


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
    partitions: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    haproxy: subprocess.Popen[bytes] | None = None

    @property
    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.client_dir / "pool.json").read_text())
        return doc

    def start(self, i: int, unit: str) -> subprocess.Popen[bytes]:
        """Start host `i`'s unit as systemd would: its ExecStart, in the host's namespace."""
        with (self.logs / f"host-{i}-{unit}.log").open("ab") as out:
            return self.hosts.run(
                i, exec_start(self.root / f"host-{i}" / f"openmhsm-{unit}.service"),
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def start_partition(self, i: int) -> None:
        self.partitions[i] = self.start(i, "partition")

    def partition_url(self, i: int) -> str:
        return str(self.doc["partitions"][i]["url"])

    def ready(self, i: int) -> bool:
        tls = ssl.create_default_context(cafile=self.doc["ca_cert"])
        try:
            return httpx.get(f"{self.partition_url(i)}/readyz", verify=tls, timeout=2).is_success
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

    def log_tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:])

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


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("deploy")
    started = time.monotonic()
    with NetnsHosts() as hosts:
        port = hosts.free_port()
        deploy_init(hosts, tmp / "deploy", port)
        logs = tmp / "logs"
        logs.mkdir()
        pool = Pool(hosts, tmp / "deploy", tmp / "client", logs)
        client_pool_json(pool.root, pool.client_dir, hosts.bridge_ip)
        for i in range(3):
            pool.start(i, "etcd")
        for i in range(3):
            pool.start_partition(i)
        for i in range(3):
            pool.wait_ready(i, START_TIMEOUT)
        with (logs / "haproxy.log").open("ab") as out:
            pool.haproxy = subprocess.Popen(
                [str(HAPROXY), "-db", "-f", str(pool.root / "haproxy.cfg")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            wait_for_port(hosts.bridge_ip, port, 10, pool.haproxy)
            activate(pool, tmp)
            print(f"pool deployed and activated in {time.monotonic() - started:.1f} s")
            yield pool
        finally:
            pool.haproxy.kill()
            pool.haproxy.wait(timeout=10)


def test_the_units_pass_systemd_analyze_verify(pool: Pool) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for i in range(3):
        host = pool.root / f"host-{i}"
        units = [str(host / "openmhsm-etcd.service"), str(host / "openmhsm-partition.service")]
        done = subprocess.run(
            [analyze, "verify", "--man=no", *units],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


def test_keys_are_made_and_used_through_the_front_door(pool: Pool) -> None:
    with connect(pool.client_dir) as clients:
        assert clients.url.startswith(f"https://{pool.hosts.bridge_ip}:")
        rsa = clients.key_client.create_rsa_key("deploy-rsa", size=2048)
        ec = clients.key_client.create_ec_key("deploy-ec", curve="P-256")
        signed = clients.crypto(rsa).sign(SignatureAlgorithm.rs256, DIGEST)
        assert clients.crypto(rsa).verify(SignatureAlgorithm.rs256, DIGEST, signed.signature)
        result = clients.key_operation(ec.id, "sign", {"alg": "ES256", "value": _b64(DIGEST)})
        assert result["value"]
    for i in range(3):  # every partition serves what any wrote
        with pool.direct(i) as client:
            assert client.get_key("deploy-ec").key.crv == "P-256"


@dataclass
class Worker:
    clients: Clients
    done: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                assert self.clients.key_client.get_key("deploy-ec").name == "deploy-ec"
                sign = {"alg": "ES256", "value": _b64(DIGEST)}
                self.clients.key_operation("deploy-ec", "sign", sign)
                self.done.append(time.monotonic())
            except Exception as exc:  # what the client saw
                self.failures.append(repr(exc)[:300])


def test_a_killed_partition_costs_clients_nothing_and_rejoins(pool: Pool) -> None:
    with connect(pool.client_dir) as clients:
        worker, stop = Worker(clients), threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        try:
            time.sleep(1.0)
            victim = pool.partitions[1]
            victim.send_signal(signal.SIGKILL)  # by PID
            victim.wait(timeout=10)
            killed = time.monotonic()
            time.sleep(3.0)
            assert sum(1 for t in worker.done if t > killed) > 5
            pool.start_partition(1)  # what Restart=always does
            pool.wait_ready(1, HEAL_TIMEOUT)
            time.sleep(2.0)  # the front door's checks see it again (rise 2, every second)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert worker.failures == []
    with pool.direct(1) as client:  # it unsealed its own copy and serves from its cache
        assert client.get_key("deploy-rsa").key.kty in ("RSA", "RSA-HSM")


def test_writes_go_on_while_one_host_is_cut_off(pool: Pool) -> None:
    pool.hosts.cut(2)
    try:
        with connect(pool.client_dir) as clients:
            deadline = time.monotonic() + 30
            made = None
            while made is None:  # the first write may meet an etcd election (leader on host 2)
                try:
                    made = clients.key_client.create_ec_key("while-cut", curve="P-256")
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            for n in range(3):
                clients.key_client.create_ec_key(f"while-cut-{n}", curve="P-384")
            assert not pool.ready(2)  # it really is cut off
    finally:
        pool.hosts.heal(2)
    deadline = time.monotonic() + HEAL_TIMEOUT
    with pool.direct(2) as client:
        while True:  # host 2's partition catches up through its etcd watch
            try:
                assert client.get_key("while-cut-2").key.crv == "P-384"
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        client.create_ec_key("after-heal", curve="P-256")  # and takes writes again


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_status_sees_every_host_healthy_again(pool: Pool) -> None:
    """`mhsm status` on the client's pool.json: the front door, the three partitions and the
    three etcd members (host 2's member back in the cluster after its link healed)."""
    deadline = time.monotonic() + HEAL_TIMEOUT
    while True:
        done = subprocess.run(
            [str(MHSM), "status", "--data-dir", str(pool.client_dir), "--output", "json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        report = json.loads(done.stdout)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert report["healthy"], json.dumps(report, indent=2)
    assert [p["state"] for p in report["partitions"]] == ["Active"] * 3
    assert len(report["etcd"]["members"]) == 3
