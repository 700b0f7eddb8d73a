"""`mhsm audit tail|search` over audit files written by two partitions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openmhsm.cli.main import main
from openmhsm.services.audit import AuditLog, AuditRecord

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
APP = {"object_id": "oid-app", "client_id": "cid-app", "name": "app1"}
ADMIN = {"object_id": "oid-admin", "client_id": "cid-admin", "name": "admin"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    logs = [AuditLog(tmp_path / "audit", n) for n in range(2)]
    for n in range(10):
        principal = APP if n % 2 else ADMIN
        logs[n % 2].write(
            AuditRecord(
                time=T0 + n * 60,
                request_id=f"r{n}",
                operation="POST /keys/{name}/{version}/sign" if n % 3 else "GET /keys",
                resource="/keys/k1/v1/sign" if n % 3 else "/keys",
                status=403 if n == 7 else 200,
                error_code="Forbidden" if n == 7 else None,
                latency_ms=1.0,
                partition=n % 2,
                principal=principal,
            )
        )
    for log in logs:
        log.close()
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    assert main(list(argv)) == 0
    out = capsys.readouterr().out
    return [json.loads(line)["request_id"] for line in out.splitlines()]


def test_tail(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "audit", "tail", "--data-dir", str(data_dir), "-n", "3") == [
        "r7",
        "r8",
        "r9",
    ]
    assert len(run(capsys, "audit", "tail", "--data-dir", str(data_dir))) == 10


def test_search_filters(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["audit", "search", "--data-dir", str(data_dir)]
    assert run(capsys, *base) == [f"r{n}" for n in range(10)]
    assert run(capsys, *base, "--principal", "APP1") == ["r1", "r3", "r5", "r7", "r9"]
    assert run(capsys, *base, "--principal", "oid-admin", "--operation", "get") == ["r0", "r6"]
    assert run(capsys, *base, "--status", "403") == ["r7"]
    assert run(capsys, *base, "--status", "2xx", "--principal", "cid-app") == [
        "r1",
        "r3",
        "r5",
        "r9",
    ]
    assert run(capsys, *base, "--since", "2023-11-14T22:20:20") == ["r7", "r8", "r9"]
    assert run(capsys, *base, "--since", "2023-11-14T23:20:20+01:00") == ["r7", "r8", "r9"]
    assert run(capsys, *base, "--operation", "sign", "--status", "4XX") == ["r7"]


def test_empty_or_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "audit", "search", "--data-dir", str(tmp_path / "nope")) == []


@pytest.mark.parametrize("argv", [["--status", "40"], ["--since", "yesterday"]])
def test_bad_arguments(tmp_path: Path, argv: list[str], capsys: Any) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "search", "--data-dir", str(tmp_path), *argv])
    assert "error" in capsys.readouterr().err


def test_tail_follow_prints_new_records(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    naps = 0

    def sleep(seconds: float) -> None:
        nonlocal naps
        naps += 1
        if naps == 1:  # a partition answers a request while we wait
            log = AuditLog(data_dir / "audit", 1)
            log.write(AuditRecord(T0 + 3600, "late", "GET /keys", "/keys", 200, 1.0, 1))
            log.close()
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr("openmhsm.cli.audit.time.sleep", sleep)
    argv = ["audit", "tail", "--data-dir", str(data_dir), "-n", "2", "--follow"]
    assert main(argv) == 130
    out = capsys.readouterr().out
    assert [json.loads(line)["request_id"] for line in out.splitlines()] == ["r8", "r9", "late"]
