"""Issue 3's promises under real faults: a three-partition pool on a three-member etcd cluster,
processes killed by PID while clients sign and create keys, and what clients saw and storage
holds afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aetcd  # type: ignore[import-untyped]
import httpx
import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import SignatureAlgorithm
from dev_pool import free_port
from pool_support import PoolProcess

from openmhsm.client import Clients, connect
from openmhsm.crypto.jwk import b64u_encode
from openmhsm.domain.sealing import unseal_from_file

HEAL_DEADLINE = 15.0
DIGEST = hashlib.sha256(b"faults").digest()


class Pool(PoolProcess):
    """A pool-mode `mhsm up` with the health views the fault tests need."""

    def ready_partitions(self) -> list[int]:
        doc = self.reload()
        ready = []
        with httpx.Client(verify=_tls(doc), timeout=1.0) as client:
            for part in doc["partitions"]:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{part['url']}/readyz").status_code == 200:
                        ready.append(part["id"])
        return ready

    def wait_healthy(self, timeout: float = HEAL_DEADLINE) -> float:
        """Seconds until all three partitions answer /readyz and every etcd member runs."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            members = self.reload().get("etcd", [])
            if len(self.ready_partitions()) == 3 and all(_alive(m["pid"]) for m in members):
                return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"pool not healthy after {timeout} s: {self.doc}")


def _tls(doc: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=doc["ca_cert"])


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def etcd_leader(doc: dict[str, Any]) -> dict[str, Any]:
    """The member (from pool.json) that etcd reports as leader."""

    async def ask() -> str | None:
        for member in doc["etcd"]:
            host, port = member["client_url"].split("//")[1].rsplit(":", 1)
            try:
                async with aetcd.Client(host=host, port=int(port), timeout=2) as client:
                    status = await client.status()
                    if status.leader is not None:
                        return str(status.leader.name)
            except aetcd.ClientError:
                continue
        return None

    name = asyncio.run(ask())
    return next(m for m in doc["etcd"] if m["name"] == name)


class Workload:
    """Threads that sign and create keys in a loop through the pool URL, recording every
    acknowledged create and every error a client saw."""

    def __init__(self, pool: Pool, signers: int = 2, creators: int = 1) -> None:
        self.clients = connect(pool.data_dir)
        self.key = self.clients.key_client.create_ec_key("faults-ec", curve="P-256")
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.created: list[tuple[str, str]] = []
        self.signs = 0
        self.threads = [threading.Thread(target=self._sign) for _ in range(signers)]
        self.threads += [threading.Thread(target=self._create, args=(i,)) for i in range(creators)]

    def __enter__(self) -> Workload:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)
        self.clients.close()

    def _sign(self) -> None:
        crypto = self.clients.crypto(self.key.id)
        while not self.stop.is_set():
            try:
                crypto.sign(SignatureAlgorithm.es256, DIGEST)
                self.signs += 1
            except Exception as exc:
                self.errors.append(f"sign: {type(exc).__name__}: {exc}")

    def _create(self, worker: int) -> None:
        client = self.clients.key_client
        n = 0
        while not self.stop.is_set():
            name = f"faults-{worker}-{n}"
            n += 1
            try:
                key = client.create_ec_key(name, curve="P-256")
                assert key.properties.version is not None
                self.created.append((name, key.properties.version))
            except Exception as exc:
                self.errors.append(f"create: {type(exc).__name__}: {exc}")


def assert_all_present(client: KeyClient, created: list[tuple[str, str]]) -> None:
    for name, version in created:
        assert client.get_key(name, version).properties.version == version


@pytest.fixture
def clients(pool: Pool) -> Iterator[Clients]:
    with connect(pool.data_dir) as made:
        yield made


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    pool = Pool(tmp_path_factory.mktemp("faults") / "pool", free_port()).start()
    yield pool
    pool.stop()


def _kill_and_measure(pool: Pool, pid: int, settle: float = 1.0) -> tuple[Workload, float]:
    with Workload(pool) as work:
        time.sleep(settle)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(0.5)  # the supervisor notices within a tick; until then all looks healthy
        pool.wait_healthy()
        heal = time.monotonic() - killed
        time.sleep(settle)
    return work, heal


def test_partition_sigkill_under_load(pool: Pool) -> None:
    victim = pool.reload()["partitions"][1]
    work, heal = _kill_and_measure(pool, victim["pid"])
    assert work.errors == []
    assert work.signs > 0 and work.created
    assert heal < HEAL_DEADLINE
    assert pool.reload()["partitions"][1]["pid"] != victim["pid"]
    with connect(pool.data_dir) as clients:
        assert_all_present(clients.key_client, work.created)


def test_etcd_leader_sigkill_under_load(pool: Pool) -> None:
    leader = etcd_leader(pool.reload())
    work, heal = _kill_and_measure(pool, leader["pid"])
    assert work.errors == []
    assert work.created
    assert heal < HEAL_DEADLINE
    with connect(pool.data_dir) as clients:
        assert_all_present(clients.key_client, work.created)


def test_partition_directory_lost_is_rebuilt(pool: Pool, clients: Clients) -> None:
    doc = pool.reload()
    victim = doc["partitions"][2]
    part_dir = pool.data_dir / "partitions" / "2"
    shutil.rmtree(part_dir)
    os.kill(victim["pid"], signal.SIGKILL)
    pool.wait_for(lambda d: d["partitions"][2]["pid"] != victim["pid"], HEAL_DEADLINE)
    pool.wait_healthy()
    sealed = (part_dir / "sealed").read_bytes()
    root = _domain_root(pool)
    assert root not in sealed
    # The rebuilt partition serves on its own URL with the pool's keys.
    key = clients.key_client.create_ec_key("rebuilt-check", curve="P-256")
    with httpx.Client(verify=_tls(doc), timeout=10) as http:
        token = clients.credential.get_token(doc["resource"] + "/.default").token
        r = http.get(
            f"{victim['url']}/keys/rebuilt-check/?api-version=7.6",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["key"]["kid"].endswith(key.properties.version)


def _domain_root(pool: Pool) -> bytes:
    part = pool.data_dir / "partitions" / "0"
    return unseal_from_file(part / "sealed", part / "seal.key").root


def test_key_is_readable_on_every_partition_at_once(pool: Pool, clients: Clients) -> None:
    doc = pool.reload()
    token = clients.credential.get_token(doc["resource"] + "/.default").token
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(verify=_tls(doc), timeout=10, headers=headers) as http:
        for i in range(5):
            made = http.post(
                f"{doc['url']}/keys/everywhere-{i}/create?api-version=7.6",
                json={"kty": "EC-HSM", "crv": "P-256"},
            )
            assert made.status_code == 200, made.text
            for part in doc["partitions"]:
                got = http.get(f"{part['url']}/keys/everywhere-{i}/?api-version=7.6")
                assert got.status_code == 200, (part, got.text)
                # Same key and version; the kid's host is the one each request addressed.
                assert (
                    got.json()["key"]["kid"].split("/keys/")[1]
                    == (made.json()["key"]["kid"].split("/keys/")[1])
                )


def test_quorum_lost_reads_work_writes_fail_fast(pool: Pool, clients: Clients) -> None:
    doc = pool.reload()
    key = clients.key_client.create_ec_key("quorum-ec", curve="P-256")
    token = clients.credential.get_token(doc["resource"] + "/.default").token
    survivor = doc["partitions"][0]
    paused = [p["pid"] for p in doc["partitions"][1:]] + [m["pid"] for m in doc["etcd"][1:]]
    headers = {"Authorization": f"Bearer {token}"}
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        with httpx.Client(verify=_tls(doc), timeout=30, headers=headers) as http:
            base = survivor["url"]
            signed = http.post(
                f"{base}/keys/quorum-ec//sign?api-version=7.6",
                json={"alg": "ES256", "value": b64u_encode(DIGEST)},
            )
            assert signed.status_code == 200, signed.text
            got = http.get(f"{base}/keys/quorum-ec/?api-version=7.6")
            assert got.status_code == 200
            start = time.monotonic()
            made = http.post(
                f"{base}/keys/quorum-new/create?api-version=7.6",
                json={"kty": "EC-HSM", "crv": "P-256"},
            )
            elapsed = time.monotonic() - start
            assert made.status_code == 503, made.text
            assert made.json()["error"]["code"] == "ServiceUnavailable"
            assert elapsed < 9.0  # the store's 4 s retry budget, not the 30 s client timeout
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    pool.wait_healthy(30)
    assert clients.key_client.get_key("quorum-ec").id == key.id


def test_etcd_member_with_lost_data_is_replaced(pool: Pool, clients: Clients) -> None:
    doc = pool.reload()
    leader = etcd_leader(doc)["name"]
    victim = next(m for m in doc["etcd"] if m["name"] != leader)
    # Frozen first: a running member could write its data dir again between the removal and
    # the kill, and would then be restarted rather than replaced.
    os.kill(victim["pid"], signal.SIGSTOP)
    shutil.rmtree(pool.data_dir / "etcd" / victim["name"].removeprefix("etcd"))
    os.kill(victim["pid"], signal.SIGKILL)
    pool.wait_for(
        lambda d: next(m for m in d["etcd"] if m["name"] == victim["name"])["pid"] != victim["pid"],
        HEAL_DEADLINE,
    )
    pool.wait_healthy(30)
    events = json.loads((pool.data_dir / "supervisor.json").read_text())["events"]
    assert any(e["event"] == "etcd member replaced" for e in events)
    # The replaced member has caught up: writes still commit and read back everywhere.
    key = clients.key_client.create_ec_key("after-replace", curve="P-256")
    assert clients.key_client.get_key("after-replace").id == key.id
