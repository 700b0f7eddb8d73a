"""Issue 3 item 7, on a real pool (three partitions, three etcd members): `mhsm status`,
`GET /metrics` on every partition's own URL, and `mhsm maintain` rolling every partition while a
client signs with zero errors."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.pipeline.policies import RetryPolicy
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from dev_pool import free_port
from pool_support import PoolProcess, mhsm

from openmhsm.cluster.partition import KEEP_ALIVE

pytestmark = pytest.mark.integration

DIGEST = hashlib.sha256(b"operations").digest()
# DESIGN §2: signing is idempotent, so the client may resend a POST that died in flight.
RETRY_METHODS = frozenset({"HEAD", "GET", "PUT", "DELETE", "OPTIONS", "TRACE", "POST"})
SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$", re.M)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolProcess]:
    tmp = tmp_path_factory.mktemp("operations")
    started = PoolProcess(tmp / "pool", free_port()).start()
    try:
        yield started
    finally:
        started.stop()


def retrying_policy() -> RetryPolicy[Any, Any]:
    return RetryPolicy(retry_backoff_factor=0.2, retry_backoff_max=2)


def key_client(pool: PoolProcess, url: str | None = None) -> KeyClient:
    credential = pool.credential_at(url) if url else pool.credential()
    return KeyClient(
        url or pool.url, credential, connection_verify=pool.ca, retry_policy=retrying_policy()
    )


def scrape(pool: PoolProcess, url: str) -> list[tuple[str, dict[str, str], float]]:
    """`GET /metrics` with no token: (name, labels, value) of every labelled sample."""
    with httpx.Client(verify=ssl.create_default_context(cafile=pool.ca), timeout=5) as http:
        response = http.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [
        (name, dict(LABEL.findall(labels)), float(value))
        for name, labels, value in SAMPLE.findall(response.text)
    ]


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, lbl, v in samples if n == name and labels.items() <= lbl.items())


def test_status_reports_three_ready_partitions_and_a_healthy_etcd(pool: PoolProcess) -> None:
    result = mhsm("status", "--data-dir", str(pool.data_dir), "--output", "json")
    assert result.code == 0, result.stdout + result.stderr
    report = result.json()
    assert report["healthy"] is True
    assert report["pool"]["running"] and report["pool"]["pid"] == pool.pid
    assert report["pool"]["ready"]
    parts = report["partitions"]
    assert [p["id"] for p in parts] == [0, 1, 2]
    assert all(p["ready"] and p["state"] == "Active" for p in parts)
    assert [p["pid"] for p in parts] == list(pool.partition_pids().values())
    etcd = report["etcd"]
    assert len(etcd["members"]) == 3 and all(m["healthy"] for m in etcd["members"])
    assert etcd["leader"] in {m["name"] for m in etcd["members"]}
    assert [m["name"] for m in etcd["members"] if m["leader"]] == [etcd["leader"]]
    assert isinstance(etcd["revision"], int) and etcd["revision"] > 1
    assert report["supervisor"]["last_event"]["event"] == "pool started"
    assert report["supervisor"]["maintenance"]["state"] == "idle"
    assert report["availability"]["1m"] == report["availability"]["1h"] == 1.0

    table = mhsm("status", "--data-dir", str(pool.data_dir))
    assert table.code == 0, table.stderr
    assert "HEALTHY" in table.stdout and f"leader {etcd['leader']}" in table.stdout


def test_status_of_a_pool_that_is_not_running_exits_1(pool: PoolProcess, tmp_path: Path) -> None:
    doc = json.loads((pool.data_dir / "pool.json").read_text())
    doc["pid"] = None
    doc["url"] = f"https://127.0.0.1:{free_port()}"
    for entry in doc["partitions"]:
        entry["url"] = f"https://127.0.0.1:{free_port()}"
    for entry in doc["etcd"]:
        entry["client_url"] = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "pool.json").write_text(json.dumps(doc))
    shutil.copy(pool.data_dir / "supervisor.json", tmp_path / "supervisor.json")
    result = mhsm("status", "--data-dir", str(tmp_path), "--output", "json")
    assert result.code == 1, result.stderr
    report = result.json()
    assert report["healthy"] is False and report["pool"]["running"] is False
    assert not any(p["ready"] for p in report["partitions"])
    assert report["etcd"]["leader"] is None
    assert not any(m["healthy"] for m in report["etcd"]["members"])
    assert report["availability"] is None


def test_metrics_on_each_partition_count_its_requests(pool: PoolProcess) -> None:
    with key_client(pool) as client:
        client.create_ec_key("metrics-ec", curve="P-256")
    for part in pool.reload()["partitions"]:
        with key_client(pool, part["url"]) as client:  # this partition alone
            for _ in range(3):
                client.get_key("metrics-ec")
        samples = scrape(pool, part["url"])
        requests = "openmhsm_requests_total"
        assert total(samples, requests, operation="GET /keys/{name}/", status="200") >= 3
        assert total(samples, requests, operation="GET /keys/{name}/", status="401") >= 1
        assert total(samples, requests, operation="GET /readyz", status="200") >= 1  # probes
        latency = "openmhsm_request_duration_seconds_count"
        assert total(samples, latency, operation="GET /keys/{name}/") >= 4
        assert total(samples, "openmhsm_partition_info", partition=str(part["id"])) == 1
        assert total(samples, "openmhsm_availability_ratio", window="1m") == 1.0


class SignLoop:
    """A thread signing through the pool URL as fast as it can, recording every error."""

    def __init__(self, pool: PoolProcess, key_id: str) -> None:
        self.crypto = CryptographyClient(
            key_id, pool.credential(), connection_verify=pool.ca, retry_policy=retrying_policy()
        )
        self.stop = threading.Event()
        self.signs = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> SignLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)
        self.crypto.close()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.crypto.sign(SignatureAlgorithm.es256, DIGEST, retry_on_methods=RETRY_METHODS)
                self.signs += 1
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")


class UpdateLoop(threading.Thread):
    """A thread updating a key's tags through the pool URL with azure-core's default retry
    policy, which sends a PATCH again only if it never reached the server: a graceful stop
    that dropped a request sent on a kept-alive connection shows here as an error."""

    def __init__(self, pool: PoolProcess, name: str) -> None:
        super().__init__()
        self.client = KeyClient(pool.url, pool.credential(), connection_verify=pool.ca)
        self.name, self.updates, self.errors = name, 0, list[str]()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.client.update_key_properties(self.name, tags={"n": str(self.updates)})
                self.updates += 1
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> UpdateLoop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join(timeout=120)
        self.client.close()


def test_maintain_restarts_every_partition_with_no_client_errors(pool: PoolProcess) -> None:
    with key_client(pool) as client:
        key = client.create_ec_key("maintain-ec", curve="P-256")
    assert key.id is not None
    before = pool.partition_pids()
    with SignLoop(pool, key.id) as load, UpdateLoop(pool, "maintain-ec") as updates:
        result = mhsm("maintain", "--data-dir", str(pool.data_dir), "--timeout", "150")
        signs_during = load.signs
    assert updates.errors == []
    assert updates.updates > 10
    assert result.code == 0, result.stdout + result.stderr
    assert "maintenance done" in result.stdout
    assert result.stdout.count("restarted (pid") == 3
    after = pool.partition_pids()
    assert after.keys() == before.keys()
    assert all(after[n] != before[n] for n in before), (before, after)
    assert load.errors == []
    assert signs_during > 10
    report = mhsm("status", "--data-dir", str(pool.data_dir), "--output", "json").json()
    assert report["supervisor"]["maintenance"]["state"] == "done"
    assert report["supervisor"]["last_event"]["event"] == "maintenance done"
    assert report["partitions"][0]["pid"] == after[0]


def test_a_request_sent_to_a_stalled_partition_is_answered_when_it_resumes(
    pool: PoolProcess,
) -> None:
    """A partition stopped (SIGSTOP: a stall, a paused VM) longer than the keep-alive timeout
    with a request waiting on an idle connection answers it when it resumes: uvloop runs the
    overdue keep-alive timer before it reads, and the timer must not close the connection
    under the unread request."""
    part = pool.reload()["partitions"][2]
    host, port = part["url"].removeprefix("https://").rsplit(":", 1)
    tls = ssl.create_default_context(cafile=pool.ca)
    conn = http.client.HTTPSConnection(host, int(port), context=tls, timeout=30)
    resume = threading.Timer(KEEP_ALIVE + 0.5, os.kill, (part["pid"], signal.SIGCONT))
    try:
        conn.request("GET", "/readyz")
        assert conn.getresponse().read()  # the connection is idle now, kept alive
        stopped = time.monotonic()
        os.kill(part["pid"], signal.SIGSTOP)
        resume.start()
        conn.request("GET", "/readyz")  # waits in the socket until the partition resumes
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()
        assert time.monotonic() - stopped >= KEEP_ALIVE
    finally:
        resume.join()
        os.kill(part["pid"], signal.SIGCONT)
        conn.close()


def test_maintain_refuses_a_dev_pool(tmp_path: Path) -> None:
    (tmp_path / "pool.json").write_text(json.dumps({"mode": "dev", "pid": None}))
    result = mhsm("maintain", "--data-dir", str(tmp_path))
    assert result.code == 2
    assert "dev pool" in result.stderr and "nothing to roll" in result.stderr


def test_status_without_a_pool_json_exits_1(tmp_path: Path) -> None:
    result = mhsm("status", "--data-dir", str(tmp_path))
    assert result.code == 1 and "no pool.json" in result.stderr
