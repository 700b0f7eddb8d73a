"""The audit log files: one JSON line per record, size-based rotation that keeps `backups`
files, private file modes, failures that never raise, and the readers `mhsm audit` uses."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from openmhsm.services.audit import (
    AuditLog,
    AuditRecord,
    Follower,
    parse_lines,
    partition_files,
    read_records,
    utc_iso,
)

T0 = 1_700_000_000.0


def record(n: int, *, partition: int = 0, t: float | None = None) -> AuditRecord:
    return AuditRecord(
        time=T0 + n if t is None else t,
        request_id=f"req-{n:03d}",
        operation="GET /keys",
        resource="/keys",
        status=200,
        latency_ms=1.23456,
        partition=partition,
    )


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_json_line_per_record(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", 3)
    log.write(
        AuditRecord(
            time=T0 + 0.5,
            request_id="r1",
            operation="POST /keys/{name}/create",
            resource="/keys/k1/create",
            status=403,
            latency_ms=2.0004,
            partition=3,
            client="10.0.0.1",
            principal={"object_id": "o", "client_id": "c", "name": "app"},
            issuer="https://issuer",
            error_code="Forbidden",
        )
    )
    log.write(record(1, partition=3))
    log.close()
    path = tmp_path / "audit" / "partition-3.jsonl"
    first, second = lines(path)
    assert first == {
        "time": "2023-11-14T22:13:20.500Z",
        "request_id": "r1",
        "principal": {"object_id": "o", "client_id": "c", "name": "app"},
        "issuer": "https://issuer",
        "operation": "POST /keys/{name}/create",
        "resource": "/keys/k1/create",
        "status": 403,
        "error_code": "Forbidden",
        "latency_ms": 2.0,
        "partition": 3,
        "client": "10.0.0.1",
    }
    assert "principal" not in second and "error_code" not in second and "client" not in second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700


def test_utc_iso() -> None:
    assert utc_iso(0) == "1970-01-01T00:00:00.000Z"
    assert utc_iso(T0 + 0.9999) == "2023-11-14T22:13:20.999Z"


def test_rotation_keeps_backups(tmp_path: Path) -> None:
    size = len(json.dumps(record(0).to_json(), separators=(",", ":"))) + 1
    log = AuditLog(tmp_path, 0, max_bytes=size * 10, backups=2)
    for n in range(45):
        log.write(record(n))
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["partition-0.jsonl", "partition-0.jsonl.1", "partition-0.jsonl.2"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= size * 10
    assert lines(tmp_path / "partition-0.jsonl.2")[0]["request_id"] == "req-020"
    kept = read_records(tmp_path)
    assert [r["request_id"] for r in kept] == [f"req-{n:03d}" for n in range(20, 45)]
    assert partition_files(tmp_path)[0][-1].name == "partition-0.jsonl"


def test_reopening_appends_and_keeps_counting(tmp_path: Path) -> None:
    size = len(json.dumps(record(0).to_json(), separators=(",", ":"))) + 1
    first = AuditLog(tmp_path, 0, max_bytes=size * 4)
    for n in range(3):
        first.write(record(n))
    first.close()
    second = AuditLog(tmp_path, 0, max_bytes=size * 4)
    for n in range(3, 6):
        second.write(record(n))
    second.close()
    assert [r["request_id"] for r in lines(tmp_path / "partition-0.jsonl.1")] == [
        f"req-{n:03d}" for n in range(4)
    ]
    assert len(read_records(tmp_path)) == 6


def test_write_failure_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "audit"
    blocker.write_text("a file where the folder should be")
    log = AuditLog(blocker, 0)
    log.write(record(1))
    log.write(record(2))
    assert log.failed_writes == 2
    blocker.unlink()
    log.write(record(3))  # recovers once the folder can be made
    log.close()
    assert [r["request_id"] for r in read_records(blocker)] == ["req-003"]


def test_read_records_merges_partitions_by_time(tmp_path: Path) -> None:
    logs = [AuditLog(tmp_path, n) for n in range(3)]
    for n in range(30):
        logs[n % 3].write(record(n, partition=n % 3))
    for log in logs:
        log.close()
    merged = read_records(tmp_path)
    assert [r["request_id"] for r in merged] == [f"req-{n:03d}" for n in range(30)]
    newest = read_records(tmp_path, newest=4)
    assert [r["request_id"] for r in newest] == [f"req-{n:03d}" for n in range(26, 30)]
    assert read_records(tmp_path, newest=0) == []
    assert read_records(tmp_path / "missing") == []


def test_torn_and_foreign_lines_are_skipped() -> None:
    text = '{"time":"t","a":1}\n{"time": \nnot json\n[1]\n{"no_time":1}\n{"time":"u"}'
    assert [r["time"] for r in parse_lines(text)] == ["t", "u"]


def test_follower_sees_new_records_across_rotation(tmp_path: Path) -> None:
    size = len(json.dumps(record(0).to_json(), separators=(",", ":"))) + 1
    log = AuditLog(tmp_path, 0, max_bytes=size * 3, backups=3)
    log.write(record(0))
    follower = Follower(tmp_path)
    follower.start_at_end()
    assert follower.poll() == []
    seen: list[str] = []
    for n in range(1, 11):
        log.write(record(n))
        if n % 4 == 0:
            seen += [r["request_id"] for r in follower.poll()]
    other = AuditLog(tmp_path, 1)
    other.write(record(11, partition=1))
    seen += [r["request_id"] for r in follower.poll()]
    follower.close()
    log.close()
    other.close()
    assert seen == [f"req-{n:03d}" for n in range(1, 12)]


def test_follower_waits_for_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "partition-0.jsonl"
    path.write_text("")
    follower = Follower(tmp_path)
    follower.start_at_end()
    with path.open("a") as f:
        f.write('{"time":"a","request_id":')
        f.flush()
        assert follower.poll() == []
        f.write('"x"}\n')
    assert follower.poll() == [{"time": "a", "request_id": "x"}]
    follower.close()
