"""Full backup and restore of a pool at Managed HSM's key limit (5,000 keys x 3 versions), timed
against a baseline measured in the same run, just before: reading every raw record of the pool
from etcd, and writing as many records to etcd in 100-operation transactions (what a restore
cannot avoid; it writes each record twice, staged then applied, and deletes the old ones).

The keys are EC P-256 and AES (RSA key generation would take most of the set-up time and change
nothing here: records are a few hundred bytes to ~2 KB either way). The round trip is checked:
after the backup every key is deleted or changed, and the restore must bring back exactly the
keys, versions, attributes and tags there were."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.pool_process import start_pool
from openmhsm.auth import roles
from openmhsm.client import connect
from openmhsm.storage.base import Delete, Put
from openmhsm.storage.registry import open_storage

API = "api-version=7.6"
KEYS = int(os.environ.get("BENCH_BACKUP_KEYS", "5000"))
VERSIONS = 3
CONCURRENCY = 16
ASSIGNMENTS = 50
AUTHZ = "/providers/Microsoft.Authorization"
CRYPTO_USER = (
    "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/" + roles.CRYPTO_USER
)
SETTING = "AllowKeyManagementOperationsThroughARM"


async def _post(http: httpx.AsyncClient, path: str, body: Any = None) -> None:
    """POST with the retry policy of DESIGN §2: a resend carries the same client request id, so
    a create or rotate that committed before its response was lost is not done twice."""
    headers = {"x-ms-client-request-id": str(uuid.uuid4())}
    for attempt in range(5):
        try:
            made = await http.post(path, json=body, headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(0.2 * 2**attempt)
            continue
        if made.status_code in (500, 503, 504):
            await asyncio.sleep(0.2 * 2**attempt)
            continue
        assert made.status_code == 200, made.text
        return
    raise RuntimeError(f"POST {path} kept failing")


async def _populate(http: httpx.AsyncClient) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(KEYS):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            body: dict[str, Any] = (
                {"kty": "EC-HSM", "crv": "P-256"} if n % 2 else {"kty": "oct-HSM", "key_size": 256}
            )
            body["tags"] = {"n": str(n)}
            await _post(http, f"/keys/k{n}/create?{API}", body)
            for _ in range(VERSIONS - 1):
                await _post(http, f"/keys/k{n}/rotate?{API}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    for n in range(ASSIGNMENTS):  # role assignments on keys, and a setting, to come back too
        body = {"properties": {"principalId": str(uuid.uuid4()), "roleDefinitionId": CRYPTO_USER}}
        made = await http.put(f"/keys/k{n}{AUTHZ}/roleAssignments/{uuid.uuid4()}?{API}", json=body)
        assert made.status_code == 201, made.text
    setting = await http.patch(f"/settings/{SETTING}?{API}", json={"value": "true"})
    assert setting.status_code == 200, setting.text


async def _assignments(http: httpx.AsyncClient) -> list[Any]:
    found: list[Any] = []
    for n in range(ASSIGNMENTS):
        page = (await http.get(f"/keys/k{n}{AUTHZ}/roleAssignments?{API}")).json()
        found += sorted((a["name"], a["properties"]["principalId"]) for a in page["value"])
    return found


async def _state(http: httpx.AsyncClient) -> dict[str, Any]:
    """Every key's versions with their attributes and tags, the role assignments on keys, the
    setting."""
    names: list[str] = []
    url: str | None = f"/keys?{API}&maxresults=25"
    while url:
        page = (await http.get(url)).json()
        names += [item["kid"].rsplit("/", 1)[1] for item in page["value"]]
        url = page.get("nextLink")
    sem = asyncio.Semaphore(CONCURRENCY)

    async def versions(name: str) -> tuple[str, Any]:
        async with sem:
            page = (await http.get(f"/keys/{name}/versions?{API}&maxresults=25")).json()
            items = sorted(
                (i["kid"], i["attributes"]["created"], i.get("tags")) for i in page["value"]
            )
            return name, items

    keys = dict(await asyncio.gather(*(versions(n) for n in names)))
    setting = (await http.get(f"/settings/{SETTING}?{API}")).json()["value"]
    return {"keys": keys, "assignments": await _assignments(http), "setting": setting}


async def _job(http: httpx.AsyncClient, method: str, path: str, body: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    started = await http.request(method, f"{path}?{API}", json=body)
    assert started.status_code == 202, started.text
    status_url = started.headers["Azure-AsyncOperation"]
    while True:
        status = (await http.get(status_url)).json()
        if status["status"] != "InProgress":
            assert status["status"] == "Succeeded", status
            return time.perf_counter() - start, status
        await asyncio.sleep(0.05)


async def _raw_read(storage_url: str, prefix: str) -> tuple[float, int]:
    """Seconds to read every record under `prefix` from etcd, and how many there were."""
    storage = open_storage(storage_url)
    try:
        start = time.perf_counter()
        after, read = None, 0
        while True:
            page = await storage.list_page(prefix, start_after=after, limit=500)
            read += len(page)
            if len(page) < 500:
                return time.perf_counter() - start, read
            after = page[-1].key
    finally:
        await storage.close()


async def _raw_write(storage_url: str, records: int) -> float:
    """Seconds to write `records` records of ~900 bytes in 100-operation transactions (then
    they are deleted again, untimed)."""
    storage = open_storage(storage_url)
    try:
        value = os.urandom(900)
        start = time.perf_counter()
        for batch in range(0, records, 100):
            await storage.txn([Put(f"/bench-raw/{batch + i:08d}", value) for i in range(100)])
        seconds = time.perf_counter() - start
        for batch in range(0, records, 100):
            await storage.txn([Delete(f"/bench-raw/{batch + i:08d}") for i in range(100)])
        return seconds
    finally:
        await storage.close()


async def run(data: Path, backups: Path) -> None:
    doc = json.loads((data / "pool.json").read_text())
    clients = connect(data)
    token = clients.credential.get_token(doc["resource"] + "/.default").token
    clients.close()
    tls = ssl.create_default_context(cafile=doc["ca_cert"])
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=doc["url"], verify=tls, headers=headers, timeout=120, limits=limits
    ) as http:
        start = time.perf_counter()
        await _populate(http)
        print(f"made {KEYS} keys x {VERSIONS} versions in {time.perf_counter() - start:.0f} s")
        before = await _state(http)
        etcd = "etcd://" + ",".join(m["client_url"].removeprefix("http://") for m in doc["etcd"])
        read_s, _ = await _raw_read(etcd, f"/{doc['name']}/")
        container = f"file://{backups}/c"
        backup_s, status = await _job(http, "POST", "/backup", {"storageResourceUri": container})
        records = status["progress"]["total"]
        folder = status["azureStorageBlobContainerUri"]
        size = sum(f.stat().st_size for f in Path(folder[len("file://") :]).iterdir())
        for n in range(0, KEYS, 2):  # delete half the keys, add a version, change the rest
            await http.delete(f"/keys/k{n}?{API}")
        await http.post(f"/keys/k1/create?{API}", json={"kty": "oct-HSM"})
        await http.patch(f"/settings/{SETTING}?{API}", json={"value": "false"})
        extra = {"properties": {"principalId": str(uuid.uuid4()), "roleDefinitionId": CRYPTO_USER}}
        await http.put(f"/keys/k1{AUTHZ}/roleAssignments/{uuid.uuid4()}?{API}", json=extra)
        body = {
            "sasTokenParameters": {"storageResourceUri": container, "useManagedIdentity": False},
            "folderToRestore": folder.rsplit("/", 1)[1],
        }
        write_s = await _raw_write(etcd, records)
        restore_s, _ = await _job(http, "PUT", "/restore", body)
        after = await _state(http)
        assert after == before, "the restored pool differs from the backed-up one"
        await http.delete(f"/keys/k3?{API}")
        await http.delete(f"/deletedkeys/k3?{API}")
        one = {**body, "folder": body["folderToRestore"]}
        del one["folderToRestore"]
        selective_s, _ = await _job(http, "PUT", "/keys/k3/restore", one)
    sealed = f"{size / 1e6:.1f} MB sealed"
    print(f"\nFull backup and restore: {records} records, {sealed}, round trip equal")
    print(f"{'operation':34} {'seconds':>8} {'records/s':>10} {'x baseline':>11}")
    for name, seconds, base in (
        ("full backup (dir target)", backup_s, read_s),
        ("full restore (dir target)", restore_s, write_s),
        ("baseline: raw etcd read", read_s, None),
        ("baseline: raw etcd write", write_s, None),
    ):
        ratio = f"{seconds / base:11.1f}" if base else f"{'':11}"
        print(f"{name:34} {seconds:8.2f} {records / seconds:10.0f} {ratio}")
    print(f"{'selective restore of one key':34} {selective_s:8.2f}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, data, _ = start_pool(Path(tmp))
        try:
            asyncio.run(run(data, Path(tmp)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=90)


if __name__ == "__main__":
    main()
