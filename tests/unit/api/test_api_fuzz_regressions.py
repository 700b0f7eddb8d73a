"""What the schema fuzzer (tests/integration/test_api_fuzz.py) found, one test per finding: each
replays the request that found it in-process and checks the answer against `/openapi.json` with
schemathesis's own response validation, the check that failed."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from unit_stack import BASE_URL, ApiHarness

from openmhsm.api import openapi

API = "api-version=2025-07-01"


@functools.cache
def _schema() -> Any:
    return schemathesis.openapi.from_dict(openapi.document())


def conforms(method: str, path: str, response: Any) -> dict[str, Any]:
    """The response's JSON body, after validating it against the documented operation."""
    _schema()[path][method].validate_response(response)
    body: dict[str, Any] = response.json()
    return body


def test_a_release_policy_without_data_is_answered_without_nulls(api: ApiHarness) -> None:
    # Found as `POST /keys/{name}/create` answering `release_policy.data: null` (ST108).
    body = {"kty": "EC-HSM", "release_policy": {"immutable": False}}
    created = api.client.post(f"/keys/k1/create?{API}", json=body)
    assert created.status_code == 200, created.text
    policy = conforms("POST", "/keys/{name}/create", created)["release_policy"]
    assert policy == {"contentType": "application/json; charset=utf-8", "immutable": False}
    for method, path, url in (
        ("GET", "/keys/{name}/", f"/keys/k1/?{API}"),
        ("POST", "/keys/{name}/rotate", f"/keys/k1/rotate?{API}"),
    ):
        response = api.client.request(method, url)
        assert response.status_code == 200, response.text
        assert None not in conforms(method, path, response)["release_policy"].values()


def test_a_release_policy_with_data_is_answered_whole(api: ApiHarness) -> None:
    policy = {"contentType": "application/json", "immutable": True, "data": "e30"}
    body = {"kty": "EC-HSM", "release_policy": policy}
    created = api.client.post(f"/keys/k2/create?{API}", json=body)
    assert conforms("POST", "/keys/{name}/create", created)["release_policy"] == policy


@pytest.fixture
def jobs_api(make_api: Any) -> ApiHarness:
    harness: ApiHarness = make_api(jobs=True)
    return harness


def _finished(api: ApiHarness, status_url: str) -> Any:
    deadline = time.monotonic() + 30  # a loaded machine is slow
    while time.monotonic() < deadline:
        response = api.client.get(status_url)
        if response.json()["status"] != "InProgress":
            return response
        time.sleep(0.002)
    raise AssertionError(f"the job at {status_url} did not end")


def test_a_failed_job_status_matches_the_document(jobs_api: ApiHarness, tmp_path: Path) -> None:
    # Found as `GET /openmhsm/jobs` answering a failed job's `error.innererror: null` (ST108):
    # the document now allows the null the status body has always carried.
    body = {
        "sasTokenParameters": {"storageResourceUri": f"file://{tmp_path}/c"},
        "folder": "mhsm-unit-19990101000000",
    }
    started = jobs_api.client.put(f"/keys/k1/restore?{API}", json=body)
    conforms("PUT", "/keys/{name}/restore", started)
    status_url = started.headers["Azure-AsyncOperation"]
    assert status_url.startswith(f"{BASE_URL}/restore/")
    failed = conforms("GET", "/restore/{job}/pending", _finished(jobs_api, status_url))
    assert failed["status"] == "Failed" and failed["error"]["innererror"] is None
    listed = jobs_api.client.get(f"/openmhsm/jobs?{API}")
    assert conforms("GET", "/openmhsm/jobs", listed)["value"][0]["jobId"] == failed["jobId"]
