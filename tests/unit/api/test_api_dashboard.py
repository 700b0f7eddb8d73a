"""`/ui` and `/openmhsm/dashboard` (`api/ui.py`): the page is public and locked down by its
headers; the data is for Managed HSM Administrators only, holds what the pool's files, probes,
metrics, jobs and audit log say, and never the admin's credentials that `pool.json` holds."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from unit_stack import RESOURCE, TENANT, ApiHarness, Stack

from openmhsm.api import ui
from openmhsm.api.app import build_app
from openmhsm.api.metrics import RequestMetrics
from openmhsm.auth import roles
from openmhsm.cluster.layout import DataDir
from openmhsm.services.audit import AuditLog, AuditRecord

API = "api-version=7.6"
URL = f"{ui.PATH}?{API}"
SECRET = "do-not-show-this-secret"
Runner = Callable[..., Any]


@pytest.fixture
def rbac_api(make_api: Callable[..., ApiHarness]) -> ApiHarness:
    return make_api(rbac=True, jobs=True)


def headers_for(api: ApiHarness, role: str | None) -> dict[str, str]:
    """A new principal holding `role` at `/` (or none), and its bearer header."""
    principal, _ = api.call(api.stack.principals.create, f"holder-{role}")
    if role is not None:
        assert api.stack.rbac is not None
        api.call(api.stack.rbac.ensure_assignment, principal.object_id, role)
    token, _ = api.stack.tokens.issue(
        principal=principal, audience=RESOURCE, tenant_id=TENANT, lifetime=3600
    )
    return {"Authorization": f"Bearer {token}"}


# --- the page ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui", "/ui/", *(f"/ui/{name}" for name in ui.STATIC)])
def test_the_page_is_public_and_locked_down(api: ApiHarness, path: str) -> None:
    response = api.send_anonymous("GET", path)
    assert response.status_code == 200
    name = path.removeprefix("/ui").strip("/") or "index.html"
    assert response.headers["content-type"] == ui.STATIC[name]
    assert response.content == ui.static_file(name)
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_page_loads_nothing_from_elsewhere_and_runs_nothing_inline() -> None:
    page = ui.static_file("index.html").decode()
    assert "<script>" not in page and " style=" not in page and "on" + "click=" not in page
    for text in (page, ui.static_file("app.js").decode(), ui.static_file("style.css").decode()):
        assert "//cdn" not in text and "googleapis" not in text
    script = ui.static_file("app.js").decode()
    assert "innerHTML" not in script and "localStorage" not in script
    assert "sessionStorage" not in script


# --- who may read the data -----------------------------------------------------------------


def test_the_administrator_reads_the_dashboard(rbac_api: ApiHarness) -> None:
    response = rbac_api.client.get(URL)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    doc = response.json()
    assert doc["partition"] == 0 and doc["state"] == "Active"
    assert [(p["id"], p["up"]) for p in doc["partitions"]] == [(0, True)]  # no data dir: alone
    assert doc["availability"] == {"1m": 1.0, "1h": 1.0}
    assert doc["region"]["role"] == "single"
    assert doc["backups"] == [] and doc["audit"] == [] and doc["etcd"] == []


@pytest.mark.parametrize(
    "role",
    [
        None,
        roles.CRYPTO_USER,
        roles.CRYPTO_OFFICER,
        roles.CRYPTO_AUDITOR,
        roles.POLICY_ADMINISTRATOR,
        roles.BACKUP,
    ],
)
def test_no_other_built_in_role_reads_it(rbac_api: ApiHarness, role: str | None) -> None:
    response = rbac_api.client.get(URL, headers=headers_for(rbac_api, role))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["innererror"]["code"] == "ForbiddenByRbac"
    assert "securitydomain/download/read" in error["message"]


def test_a_second_administrator_reads_it(rbac_api: ApiHarness) -> None:
    response = rbac_api.client.get(URL, headers=headers_for(rbac_api, roles.ADMINISTRATOR))
    assert response.status_code == 200


def test_without_a_token_the_page_gets_the_challenge_it_signs_in_with(api: ApiHarness) -> None:
    response = api.send_anonymous("GET", URL)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert f'authorization="https://127.0.0.1:8443/{TENANT}"' in challenge
    assert f'resource="{RESOURCE}"' in challenge
    form = {
        "grant_type": "client_credentials",
        "client_id": "not-a-client",
        "client_secret": "wrong",
        "scope": f"{RESOURCE}/.default",
    }
    request = api.client.build_request("POST", f"/{TENANT}/oauth2/v2.0/token", data=form)
    del request.headers["Authorization"]
    assert api.client.send(request).status_code == 401


# --- what it shows -------------------------------------------------------------------------


def write_pool_files(root: Path) -> DataDir:
    data = DataDir(root)
    ports = {0: 9000, 1: 9001, 2: 9002}
    pool = {
        "name": "p1",
        "url": "https://127.0.0.1:8443",
        "mode": "pool",
        "admin": {"client_id": "admin-id", "client_secret": SECRET},
        "partitions": [
            {"id": n, "pid": 100 + n, "url": f"https://127.0.0.1:{port}"}
            for n, port in ports.items()
        ],
        "etcd": [{"name": "etcd0", "pid": 200, "client_url": "http://127.0.0.1:2379"}],
    }
    supervisor = {
        "pid": 99,
        "maintenance": {"state": "idle"},
        "events": [{"time": float(t), "event": f"event {t}"} for t in range(30)],
        "partitions": [{"id": n, "pid": 100 + n, "ready": True} for n in ports],
        "etcd": [{"name": "etcd0", "pid": 200, "running": True}],
    }
    data.pool_json.write_text(json.dumps(pool))
    data.supervisor_state.write_text(json.dumps(supervisor))
    return data


async def fake_probe(url: str) -> dict[str, Any]:
    """Partition 2 hangs; the rest answer as they would."""
    if ":9002/" in url:
        return {"ok": False, "status": None, "body": None, "ms": None, "error": "timed out"}
    body = {"state": "Active"} if url.endswith("/readyz") else {"health": "true"}
    return {"ok": True, "status": 200, "body": body, "ms": 1.5, "error": None}


def audit_record(n: int, operation: str, partition: int = 0) -> AuditRecord:
    return AuditRecord(
        time=1_700_000_000.0 + n,
        request_id=f"r{n}",
        operation=operation,
        resource="/keys/k",
        status=200,
        latency_ms=1.0,
        partition=partition,
    )


def test_the_document_joins_files_probes_and_the_audit_log(hsm: Runner, tmp_path: Path) -> None:
    data = write_pool_files(tmp_path)
    log = AuditLog(data.audit, 1)
    for n in range(5):
        log.write(audit_record(n, "POST /keys/{name}/create", partition=1))
        log.write(audit_record(n, "GET /readyz", partition=1))
        log.write(audit_record(n, f"GET {ui.PATH}", partition=1))
    log.close()

    async def body(stack: Stack) -> dict[str, Any]:
        return await ui.DashboardApi(stack.ctx, data, fake_probe).document()

    doc = hsm(body, jobs=True)
    assert SECRET not in json.dumps(doc) and "admin-id" not in json.dumps(doc)
    assert doc["pool"] == {"name": "p1", "url": "https://127.0.0.1:8443", "mode": "pool"}
    assert [(p["id"], p["pid"], p["up"], p["state"]) for p in doc["partitions"]] == [
        (0, 100, True, "Active"),
        (1, 101, True, "Active"),
        (2, 102, False, None),
    ]
    assert doc["partitions"][2]["error"] == "timed out"
    assert doc["partitions"][2]["supervisor_ready"] is True
    assert doc["etcd"] == [
        {
            "name": "etcd0",
            "pid": 200,
            "client_url": "http://127.0.0.1:2379",
            "healthy": True,
            "running": True,
            "probe_ms": 1.5,
            "error": None,
        }
    ]
    supervisor = doc["supervisor"]
    assert supervisor["pid"] == 99 and len(supervisor["events"]) == ui.SUPERVISOR_EVENTS
    assert supervisor["events"][0]["event"] == "event 29"  # newest first
    audit = doc["audit"]
    assert [r["request_id"] for r in audit] == ["r4", "r3", "r2", "r1", "r0"]  # no probes
    assert {r["operation"] for r in audit} == {"POST /keys/{name}/create"}


def test_the_data_dir_is_the_audit_log_s_parent(hsm: Runner, tmp_path: Path) -> None:
    async def body(stack: Stack) -> DataDir | None:
        ctx = dataclasses.replace(stack.ctx, audit=AuditLog(tmp_path / "audit", 0))
        return ui.DashboardApi(ctx).data

    assert hsm(body) == DataDir(tmp_path)


def test_requests_and_backups_through_the_app(
    make_api: Callable[..., ApiHarness], tmp_path: Path
) -> None:
    """With an audit log (and so a data dir, holding no pool.json yet): a refused key read
    shows in the audit events and the operations, a backup in the backups."""
    api = make_api(rbac=True, jobs=True)
    api.client.app.app = build_app(
        dataclasses.replace(api.stack.ctx, audit=AuditLog(tmp_path / "audit", 0))
    )
    api.client.get(URL)
    assert api.client.get(f"/keys/absent/?{API}").status_code == 403  # the admin uses no keys
    folder = tmp_path / "backups"
    folder.mkdir()
    assert api.stack.jobs is not None
    start = functools.partial(api.stack.jobs.start_backup, pre=False)
    job = api.call(start, f"file://{folder}", None, False)
    doc = api.client.get(URL).json()
    assert doc["audit"][0]["operation"] == "GET /keys/{name}/"
    assert doc["audit"][0]["status"] == 403
    assert all(r["operation"] != f"GET {ui.PATH}" for r in doc["audit"])
    by_operation = {o["operation"]: o for o in doc["operations"]}
    assert by_operation["GET /keys/{name}/"]["client_errors"] == 1
    assert by_operation[f"GET {ui.PATH}"]["count"] == 1  # this one is counted once answered
    assert [b["jobId"] for b in doc["backups"]] == [job.id]
    assert doc["backups"][0]["kind"] == "backup"


def test_operation_stats_count_errors_and_bound_the_latency() -> None:
    metrics = RequestMetrics(clock=lambda: 0.0)
    for seconds in [0.0004] * 98 + [0.2, 3.0]:
        metrics.record("POST /keys/{name}/{version}/sign", 200, seconds)
    metrics.record("GET /keys", 404, 0.001)
    metrics.record("GET /keys", 503, 0.001)
    sign, keys = ui.operation_stats(metrics)
    assert sign["operation"] == "POST /keys/{name}/{version}/sign"
    assert (sign["count"], sign["client_errors"], sign["server_errors"]) == (100, 0, 0)
    assert sign["p50_ms"] == 0.5 and sign["p99_ms"] == 250.0
    assert sign["mean_ms"] == pytest.approx((98 * 0.0004 + 3.2) / 100 * 1000, rel=1e-3)
    assert (keys["count"], keys["client_errors"], keys["server_errors"]) == (2, 1, 1)


def test_audit_events_come_from_the_end_of_big_files(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, 0)
    lines = 2 * ui.TAIL_BYTES // 150 + 10  # each record is over 150 bytes: past the tail
    for n in range(lines):
        log.write(audit_record(n, "POST /keys/{name}/create"))
    log.close()
    newest = ui.newest_audit_events(tmp_path, 3)
    assert [r["request_id"] for r in newest] == [f"r{lines - 1}", f"r{lines - 2}", f"r{lines - 3}"]
    assert len(ui.newest_audit_events(tmp_path, 10_000)) < lines  # only the tail was read
