"""A pool across three hosts, run from the files `mhsm deploy init` writes (issue 11).

Three network namespaces stand for the hosts; in each runs exactly the ExecStart of its generated
systemd units, and HAProxy runs the generated `haproxy.cfg` in the root namespace (`three_hosts.py`
starts it all, and says how the client reaches the pool without DNS). The pool is activated, used
and hurt through the front door with the Azure SDK clients.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from azure.keyvault.keys.crypto import SignatureAlgorithm
from netns_hosts import NetnsHosts, available
from three_hosts import HEAL_TIMEOUT, MHSM, Pool, missing, started_pool

from openmhsm.client import Clients, connect

DIGEST = bytes(range(32))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("deploy")
    with NetnsHosts() as hosts, started_pool(hosts, tmp) as pool:
        yield pool


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
            assert client.get_key("deploy-ec").key.crv == "P-256"  # type: ignore[attr-defined]


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
        clients.key_client.create_ec_key("deploy-ec", curve="P-256")  # the worker's key
        clients.key_client.create_rsa_key("deploy-rsa", size=2048)  # read after the rejoin
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
        assert client.get_key("deploy-rsa").key.kty in ("RSA", "RSA-HSM")  # type: ignore[attr-defined]


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
                assert client.get_key("while-cut-2").key.crv == "P-384"  # type: ignore[attr-defined]
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
