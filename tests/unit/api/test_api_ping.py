"""`/openmhsm/ping`: authenticated, authorized, and nothing else."""

from __future__ import annotations

from typing import Any


def test_ping_answers_the_partition(api: Any) -> None:
    response = api.client.get("/openmhsm/ping?api-version=7.6")
    assert response.status_code == 200 and response.json() == {"partition": 0}


def test_a_stranger_is_challenged(api: Any) -> None:
    assert api.send_anonymous("GET", "/openmhsm/ping?api-version=7.6").status_code == 401


def test_it_needs_a_role_that_reads_keys(make_api: Any) -> None:
    api = make_api(rbac=True)  # the admin holds Managed HSM Administrator only
    refused = api.client.get("/openmhsm/ping?api-version=7.6")
    assert refused.status_code == 403
    assert "keys/read/action" in refused.json()["error"]["message"]
