"""A partition killed in the middle of a full restore (issue 6, "Done when"): the pool ends in the
old state or the new one, never a mix, and the job says which. Also: the pool refuses data-plane
calls while a restore runs, and a backup taken during continuous writes restores consistently.

The partition that runs the restore is the one the request reached (its own port); another
partition answers the status polls. The kill lands wherever the restore happens to be: before
applying (the job fails, the pool is unchanged) or after (another partition takes the job over
and completes it); the assertions hold for both, and a mixed state fails them."""

from __future__ import annotations

import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.keyvault.keys import KeyClient
from dev_pool import free_port
from pool_support import PoolProcess

API = "api-version=7.6"
KEYS = 150


def _http(pool: PoolProcess, url: str) -> httpx.Client:
    tls = ssl.create_default_context(cafile=pool.ca)
    headers = {"Authorization": f"Bearer {pool.token()}"}
    return httpx.Client(base_url=url, verify=tls, headers=headers, timeout=30)


def _state(client: KeyClient) -> set[tuple[str, str]]:
    """Every live key version and every deleted key name."""
    live = {
        (props.name, version.version or "")
        for props in client.list_properties_of_keys()
        for version in client.list_properties_of_key_versions(props.name or "")
    }
    deleted = {(d.name or "", "deleted") for d in client.list_deleted_keys()}
    return live | deleted


def _wait_done(http: httpx.Client, status_path: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = http.get(status_path)
        if response.status_code == 200 and response.json()["status"] != "InProgress":
            body: dict[str, Any] = response.json()
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {status_path} did not end")


def _start_restore(http: httpx.Client, folder_url: str) -> str:
    container, folder = folder_url.rsplit("/", 1)
    body = {
        "sasTokenParameters": {"storageResourceUri": container, "useManagedIdentity": False},
        "folderToRestore": folder,
    }
    started = http.put(f"/restore?{API}", json=body)
    assert started.status_code == 202, started.text
    location = started.headers["Azure-AsyncOperation"]
    return location[location.index("/restore/") :]


def _backup(http: httpx.Client, container: str) -> str:
    started = http.post(f"/backup?{API}", json={"storageResourceUri": container})
    assert started.status_code == 202, started.text
    location = started.headers["Azure-AsyncOperation"]
    done = _wait_done(http, location[location.index("/backup/") :])
    assert done["status"] == "Succeeded", done
    return str(done["azureStorageBlobContainerUri"])


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Any:
    running = PoolProcess(tmp_path_factory.mktemp("faults") / "pool", free_port()).start()
    yield running
    running.stop()


@pytest.mark.parametrize("when", ["at-once", "while-applying"])
def test_partition_killed_mid_restore_leaves_old_or_new_state(
    pool: PoolProcess, tmp_path: Path, when: str
) -> None:
    container = f"file://{tmp_path}/backups"
    parts = pool.reload()["partitions"]
    with pool.key_client() as client, _http(pool, parts[1]["url"]) as poller:
        for n in range(KEYS):
            client.create_ec_key(f"{when}-{n}")
        folder_url = _backup(poller, container)
        backed_up = _state(client)
        for n in range(0, KEYS, 3):  # the state the restore replaces
            client.begin_delete_key(f"{when}-{n}").wait()
        client.create_ec_key(f"{when}-after-backup")
        before = _state(client)
        assert before != backed_up

        victim = pool.reload()["partitions"][0]
        with _http(pool, victim["url"]) as runner:
            status_path = _start_restore(runner, folder_url)
        if when == "while-applying":
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                details = poller.get(status_path).json()["statusDetails"] or ""
                if "Replacing" in details or "Restored" in details:
                    break
        os.kill(victim["pid"], signal.SIGKILL)

        done = _wait_done(poller, status_path)
        pool.wait_for(lambda d: d["partitions"][0]["pid"] != victim["pid"], 30)
        after = _state(client)  # the client retries the restore's 503s
        if done["status"] == "Succeeded":
            assert after == backed_up, done
        else:
            assert done["statusDetails"] == "The pool is unchanged.", done
            assert after == before, done


def test_calls_are_refused_while_a_restore_runs(pool: PoolProcess, tmp_path: Path) -> None:
    parts = pool.reload()["partitions"]
    with pool.key_client() as client, _http(pool, parts[2]["url"]) as http:
        for n in range(KEYS):
            client.create_ec_key(f"refused-{n}")
        folder_url = _backup(http, f"file://{tmp_path}/backups")
        status_path = _start_restore(http, folder_url)
        refused = http.get(f"/keys/refused-1/?{API}")
        done = _wait_done(http, status_path)
        assert done["status"] == "Succeeded", done
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"  # the SDK waits the restore out
        assert refused.json()["error"]["innererror"]["code"] == "RestoreInProgress"
        assert http.get(f"/keys/refused-1/?{API}").status_code == 200


def test_backup_during_continuous_writes_restores_consistently(
    pool: PoolProcess, tmp_path: Path
) -> None:
    """Each writer creates keys in order w-0, w-1, ...: a consistent snapshot holds a prefix of
    every writer's sequence, with every key whole (current version and versions together)."""
    stop = threading.Event()
    made = {0: 0, 1: 0}

    def writer(n: int) -> None:
        with pool.key_client() as client:
            i = 0
            while not stop.is_set():
                client.create_ec_key(f"stream{n}-{i}")
                client.rotate_key(f"stream{n}-{i}")
                made[n] = i = i + 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while min(made.values()) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # every writer has a whole key before the backup
        with _http(pool, pool.url) as http:
            folder_url = _backup(http, f"file://{tmp_path}/backups")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    with _http(pool, pool.url) as http:
        done = _wait_done(http, _start_restore(http, folder_url))
    assert done["status"] == "Succeeded", done
    with pool.key_client() as client:
        for n in range(2):
            names = {p.name for p in client.list_properties_of_keys()}
            have = sorted(
                int(name.rsplit("-", 1)[1]) for name in names if name.startswith(f"stream{n}-")
            )
            assert have == list(range(len(have))), have  # a prefix: nothing skipped
            assert 0 < len(have) <= made[n]
            for i in have:
                versions = list(client.list_properties_of_key_versions(f"stream{n}-{i}"))
                current = client.get_key(f"stream{n}-{i}")
                assert current.properties.version in {v.version for v in versions}
