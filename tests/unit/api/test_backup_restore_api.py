"""`/backup`, `/restore`, `/keys/{name}/restore`, the pre-checks and their status URLs over HTTP
(api/backup_restore.py, API §3.2): Azure's long-running-operation contract, body shapes, Key
Vault errors with nothing started, one full job at a time, and the restore gate."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from backup_support import finished
from unit_stack import BASE_URL, ApiHarness, Stack

from openmhsm.auth.roles import ADMINISTRATOR
from openmhsm.backup import jobs
from openmhsm.backup.jobs import Job
from openmhsm.backup.service import BackupService

API = "api-version=2025-07-01"
EC = {"kty": "EC-HSM"}
Make = Callable[..., ApiHarness]


def url(path: str) -> str:
    return f"{path}?{API}"


def service(api: ApiHarness) -> BackupService:
    assert api.stack.jobs is not None
    return api.stack.jobs


def check_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "innererror"}
    return error


def accepted(response: Any, group: str) -> str:
    """The job id of a 202 answer, after checking the polling contract."""
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["jobId"]
    assert response.headers["Azure-AsyncOperation"] == f"{BASE_URL}/{group}/{job_id}/pending"
    assert response.headers["Retry-After"] == "1"
    assert body["status"] == "InProgress" and body["endTime"] is None
    assert isinstance(body["startTime"], int)
    return str(job_id)


def poll(api: ApiHarness, group: str, job_id: str) -> dict[str, Any]:
    """Poll the absolute status URL, as the SDK does (without an api-version)."""
    deadline = time.monotonic() + 30  # a loaded machine is slow
    while time.monotonic() < deadline:
        response = api.client.get(f"{BASE_URL}/{group}/{job_id}/pending")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] != "InProgress":
            assert "Retry-After" not in response.headers
            assert body["jobId"] == job_id and isinstance(body["endTime"], int)
            return body
        assert response.headers["Retry-After"] == "1"
        time.sleep(0.002)
    raise AssertionError(f"{group} job {job_id} did not end")


def start_backup(api: ApiHarness, container: Path) -> tuple[str, str]:
    """A full backup over HTTP: (storageResourceUri, folder) of the finished backup."""
    uri = f"file://{container}"
    body = {"storageResourceUri": uri, "token": None, "useManagedIdentity": False}
    job_id = accepted(api.client.post(url("/backup"), json=body), "backup")
    done = poll(api, "backup", job_id)
    assert done["status"] == "Succeeded", done
    folder_url = done["azureStorageBlobContainerUri"]
    assert folder_url.startswith(uri + "/mhsm-unit-")
    return uri, folder_url.rsplit("/", 1)[1]


def restore_body(uri: str, folder: str, folder_field: str = "folderToRestore") -> dict[str, Any]:
    return {
        "sasTokenParameters": {"storageResourceUri": uri, "useManagedIdentity": False},
        folder_field: folder,
    }


def job_records(api: ApiHarness) -> list[str]:
    view = api.stack.view

    async def listing() -> list[str]:
        return [e.key for p in (jobs.LOG, jobs.PREFIX) for e in await view.list_page(p)]

    return api.call(listing)


def key_names(api: ApiHarness) -> list[str]:
    response = api.client.get(url("/keys"))
    assert response.status_code == 200, response.text
    return sorted(k["kid"].rsplit("/", 1)[1] for k in response.json()["value"])


# --- the round trip --------------------------------------------------------------------------


def test_backup_then_full_restore(make_api: Make, tmp_path: Path) -> None:
    api = make_api(jobs=True)
    for name in ("a", "b"):
        assert api.client.post(url(f"/keys/{name}/create"), json=EC).status_code == 200
    uri, folder = start_backup(api, tmp_path / "c")
    assert (tmp_path / "c" / folder / "manifest.json").is_file()
    assert api.client.post(url("/keys/later/create"), json=EC).status_code == 200
    assert api.client.delete(url("/keys/a")).status_code == 200

    response = api.client.put(url("/restore"), json=restore_body(uri, folder))
    job_id = accepted(response, "restore")
    assert "azureStorageBlobContainerUri" not in response.json()
    done = poll(api, "restore", job_id)
    assert done["status"] == "Succeeded", done
    assert done["error"] is None and "azureStorageBlobContainerUri" not in done
    assert api.call(api.stack.cache.catch_up)
    assert key_names(api) == ["a", "b"]
    assert api.client.get(url("/keys/later/")).status_code == 404


def test_the_pool_lists_its_recent_jobs(make_api: Make, tmp_path: Path) -> None:
    api = make_api(jobs=True)
    start_backup(api, tmp_path / "one")
    uri, folder = start_backup(api, tmp_path / "two")
    listed = api.client.get(url("/openmhsm/jobs") + "&kind=backup")
    assert listed.status_code == 200, listed.text
    found = listed.json()["value"]
    assert [j["kind"] for j in found] == ["backup", "backup"]
    assert found[0]["azureStorageBlobContainerUri"] == f"{uri}/{folder}"  # newest first
    assert found[0]["startTime"] >= found[1]["startTime"]
    assert api.client.get(url("/openmhsm/jobs") + "&kind=restore").json()["value"] == []
    check_error(api.client.get(url("/openmhsm/jobs") + "&kind=all"), 400, "BadParameter")


def test_restore_keeps_the_caller_an_administrator(make_api: Make, tmp_path: Path) -> None:
    """With roles enforced: the backup comes from another pool of the domain, which has never
    heard of this pool's admin; after the restore, the admin may still run backups and read
    role assignments (what Managed HSM Administrator grants)."""
    api = make_api(jobs=True, rbac=True)
    api.call(functools.partial(api.stack.keys.create, "local", EC))

    async def backup_elsewhere() -> tuple[str, str]:
        other = await api.stack.same_domain_pool()
        await other.keys.create("theirs", EC)
        assert other.jobs is not None
        job = await other.jobs.start_backup(f"file://{tmp_path}/c", None, False, pre=False)
        done = await _wait(other, job)
        assert done.folder_url is not None
        uri, folder = done.folder_url.rsplit("/", 1)
        return uri, folder

    uri, folder = api.call(backup_elsewhere)
    job_id = accepted(api.client.put(url("/restore"), json=restore_body(uri, folder)), "restore")
    assert poll(api, "restore", job_id)["status"] == "Succeeded"
    assert api.call(api.stack.cache.catch_up)
    assert api.stack.cache.names() == ["theirs"]
    assignments = api.client.get(url("/providers/Microsoft.Authorization/roleAssignments"))
    assert assignments.status_code == 200, assignments.text
    assert api.stack.admin is not None
    mine = [
        a["properties"]
        for a in assignments.json()["value"]
        if a["properties"]["principalId"] == api.stack.admin.object_id
    ]
    assert len(mine) == 1 and mine[0]["roleDefinitionId"].endswith(ADMINISTRATOR)
    start_backup(api, tmp_path / "again")


async def _wait(stack: Stack, job: Job) -> Job:
    return await finished(stack, job)


def test_selective_key_restore_uses_folder(make_api: Make, tmp_path: Path) -> None:
    api = make_api(jobs=True)
    created = api.client.post(url("/keys/k1/create"), json=EC).json()
    assert api.client.post(url("/keys/k2/create"), json=EC).status_code == 200
    uri, folder = start_backup(api, tmp_path / "c")
    assert api.client.delete(url("/keys/k1")).status_code == 200
    assert api.client.delete(url("/deletedkeys/k1")).status_code == 204
    assert api.client.post(url("/keys/k2/rotate")).status_code == 200

    response = api.client.put(url("/keys/k1/restore"), json=restore_body(uri, folder, "folder"))
    done = poll(api, "restore", accepted(response, "restore"))
    assert done["status"] == "Succeeded", done
    assert api.client.get(url("/keys/k1/")).json()["key"]["kid"] == created["key"]["kid"]
    assert len(key_names(api)) == 2  # k2 kept its rotation: only k1 was restored

    missing = api.client.put(url("/keys/nope/restore"), json=restore_body(uri, folder, "folder"))
    failed = poll(api, "restore", accepted(missing, "restore"))
    assert failed["status"] == "Failed"
    assert failed["error"]["code"] == "KeyNotFound"


def test_pre_backup_and_pre_restore(make_api: Make, tmp_path: Path) -> None:
    api = make_api(jobs=True)
    body = {"storageResourceUri": f"file://{tmp_path}/c"}
    done = poll(api, "backup", accepted(api.client.post(url("/prebackup"), json=body), "backup"))
    assert done["status"] == "Succeeded"
    uri, folder = start_backup(api, tmp_path / "c")
    response = api.client.put(url("/prerestore"), json=restore_body(uri, folder))
    assert poll(api, "restore", accepted(response, "restore"))["status"] == "Succeeded"
    response = api.client.put(
        url("/prerestore"), json=restore_body(uri, "mhsm-unit-19990101000000")
    )
    failed = poll(api, "restore", accepted(response, "restore"))
    assert failed["status"] == "Failed" and failed["error"]["code"] == "StorageAccessFailed"


# --- refused requests ------------------------------------------------------------------------

GOOD_URI = "file:///tmp/openmhsm-unit-never-written/c"
BAD_STORAGE: list[Any] = [
    {},
    {"storageResourceUri": ""},
    {"storageResourceUri": 5},
    {"storageResourceUri": "x" * 2049},
    {"storageResourceUri": GOOD_URI, "useManagedIdentity": "false"},
    {"storageResourceUri": GOOD_URI, "token": 7},
    {"storageResourceUri": "ftp://host/c"},
    {"storageResourceUri": "file:///"},
    {"storageResourceUri": "https://acct.blob.core.windows.net/c1"},  # neither SAS nor identity
    {"storageResourceUri": "https://acct.blob.core.windows.net/c1?sv=1"},
    {"storageResourceUri": "https://acct.blob.core.windows.net/c1", "token": "sv=1",
     "useManagedIdentity": True},
]  # fmt: skip


@pytest.mark.parametrize("body", BAD_STORAGE)
@pytest.mark.parametrize("path", ["/backup", "/prebackup"])
def test_bad_backup_bodies(make_api: Make, path: str, body: Any) -> None:
    api = make_api(jobs=True)
    check_error(api.client.post(url(path), json=body), 400, "BadParameter")
    assert job_records(api) == []


BAD_RESTORE: list[Any] = [
    {},
    {"folderToRestore": "mhsm-unit-1"},
    {"sasTokenParameters": GOOD_URI, "folderToRestore": "mhsm-unit-1"},
    {"sasTokenParameters": None, "folderToRestore": "mhsm-unit-1"},
    {"sasTokenParameters": {"storageResourceUri": GOOD_URI}},
    {"sasTokenParameters": {"storageResourceUri": GOOD_URI}, "folderToRestore": ""},
    {"sasTokenParameters": {"storageResourceUri": GOOD_URI}, "folderToRestore": 3},
    {"sasTokenParameters": {"storageResourceUri": GOOD_URI}, "folderToRestore": "../x"},
    {"sasTokenParameters": {"storageResourceUri": GOOD_URI}, "folderToRestore": "f?x=1"},
    {"sasTokenParameters": {"storageResourceUri": GOOD_URI}, "folder": "mhsm-unit-1"},
    {"sasTokenParameters": {}, "folderToRestore": "mhsm-unit-1"},
    *({"sasTokenParameters": s, "folderToRestore": "mhsm-unit-1"} for s in BAD_STORAGE[1:]),
]


@pytest.mark.parametrize("body", BAD_RESTORE)
@pytest.mark.parametrize("path", ["/restore", "/prerestore"])
def test_bad_restore_bodies(make_api: Make, path: str, body: Any) -> None:
    api = make_api(jobs=True)
    check_error(api.client.put(url(path), json=body), 400, "BadParameter")
    assert job_records(api) == []


@pytest.mark.parametrize(
    "body",
    [
        {"sasTokenParameters": {"storageResourceUri": GOOD_URI}, "folderToRestore": "mhsm-u-1"},
        {"sasTokenParameters": {"storageResourceUri": GOOD_URI}, "folder": ""},
        {"sasTokenParameters": {"storageResourceUri": GOOD_URI}, "folder": "../../etc"},
        {"storageResourceUri": GOOD_URI, "folder": "mhsm-u-1"},
    ],
)
def test_bad_selective_restore_bodies(make_api: Make, body: Any) -> None:
    api = make_api(jobs=True)
    check_error(api.client.put(url("/keys/k1/restore"), json=body), 400, "BadParameter")
    assert job_records(api) == []


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'"text"'])
def test_bodies_that_are_not_json_objects(make_api: Make, content: bytes) -> None:
    api = make_api(jobs=True)
    headers = {"content-type": "application/json"}
    for method, path in (("POST", "/backup"), ("PUT", "/restore"), ("PUT", "/keys/k/restore")):
        response = api.client.request(method, url(path), content=content, headers=headers)
        check_error(response, 400, "BadParameter")
    assert job_records(api) == []


def test_a_second_full_job_while_one_holds_the_lock(make_api: Make, tmp_path: Path) -> None:
    api = make_api(jobs=True)
    running = Job(jobs.new_job_id(), jobs.BACKUP)
    held = api.call(functools.partial(service(api).store.start, running, lock=True))
    body = {"storageResourceUri": f"file://{tmp_path}/c"}
    error = check_error(api.client.post(url("/backup"), json=body), 409, "Conflict")
    assert error["innererror"] == {"code": "OperationInProgress"}
    restore = restore_body(f"file://{tmp_path}/c", "mhsm-unit-20240101000000")
    error = check_error(api.client.put(url("/restore"), json=restore), 409, "Conflict")
    assert error["innererror"] == {"code": "OperationInProgress"}
    assert (tmp_path / "c").exists() is False  # refused before touching the container
    assert api.client.get(f"/backup/{running.id}/pending").json()["status"] == "InProgress"
    api.call(service(api).store.finish, running.succeeded(), held)
    accepted(api.client.post(url("/backup"), json=body), "backup")


def test_unknown_and_misplaced_job_ids(make_api: Make, tmp_path: Path) -> None:
    api = make_api(jobs=True)
    for path in ("/backup/nope/pending", "/restore/nope/pending", f"/backup/{'a' * 200}/pending"):
        error = check_error(api.client.get(path), 404, "NotFound")
        assert error["innererror"] == {"code": "JobNotFound"}
    body = {"storageResourceUri": f"file://{tmp_path}/c"}
    job_id = accepted(api.client.post(url("/backup"), json=body), "backup")
    check_error(api.client.get(f"/restore/{job_id}/pending"), 404, "NotFound")
    assert poll(api, "backup", job_id)["status"] == "Succeeded"
    check_error(api.client.get(f"/restore/{job_id}/pending"), 404, "NotFound")


def test_status_urls_need_a_token(make_api: Make) -> None:
    api = make_api(jobs=True)
    assert api.send_anonymous("GET", "/backup/nope/pending").status_code == 401
    assert api.send_anonymous("POST", url("/backup"), json={}).status_code == 401


def test_without_a_backup_service_there_are_no_routes(api: ApiHarness) -> None:
    check_error(api.client.post(url("/backup"), json={"storageResourceUri": GOOD_URI}), 404,
                "NotFound")  # fmt: skip


# --- the restore gate ------------------------------------------------------------------------


def test_during_a_full_restore_only_status_is_served(make_api: Make) -> None:
    api = make_api(jobs=True)
    assert api.client.post(url("/keys/k1/create"), json=EC).status_code == 200
    restoring = Job(jobs.new_job_id(), jobs.RESTORE)
    held = api.call(functools.partial(service(api).store.start, restoring, lock=True, fence=True))
    assert api.call(api.stack.cache.catch_up)
    for method, path in (
        ("GET", url("/keys")),
        ("GET", url("/keys/k1/")),
        ("POST", url("/keys/k2/create")),
        ("POST", url("/backup")),
        ("PUT", url("/restore")),
        ("GET", url("/settings")),
        ("GET", url("/backup/other/pending/x")),
    ):
        response = api.client.request(method, path, json=EC)
        error = check_error(response, 503, "ServiceUnavailable")
        assert error["innererror"] == {"code": "RestoreInProgress"}, path
        assert restoring.id in error["message"]
    status = api.client.get(f"/restore/{restoring.id}/pending")
    assert status.status_code == 200 and status.json()["status"] == "InProgress"
    check_error(api.client.get("/backup/other/pending"), 404, "NotFound")
    assert api.client.get("/readyz").json()["state"] == "Restoring"
    stranger = api.send_anonymous("GET", url("/keys/k1/"))  # the challenge first, not the job
    assert stranger.status_code == 401 and restoring.id not in stranger.text

    api.call(service(api).store.finish, restoring.succeeded(), held)
    assert api.call(api.stack.cache.catch_up)
    assert api.client.get(url("/keys/k1/")).status_code == 200
    assert api.client.get(f"/restore/{restoring.id}/pending").json()["status"] == "Succeeded"
    assert api.client.get("/readyz").json()["state"] == "Active"
