"""`mhsm backup|restore`: argument checks, the job client against a scripted pool, the progress
bar, listing and pruning a directory container. No processes or sockets."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from openmhsm.backup.dir_target import DirectoryTarget
from openmhsm.cli import backup, backup_jobs, backup_schedule
from openmhsm.cli.backup_jobs import JobFailed, ProgressBar, Storage
from openmhsm.cli.main import build_parser, main

SAS = "sv=2024-01-01&sig=TOPSECRET"
BLOB = "https://acct.blob.core.windows.net/backups"
POOL_URL = "https://127.0.0.1:8443"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def mhsm(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["backup", "start", "--data-dir", "d"],  # no target
        ["backup", "start", "--data-dir", "d", "--dir", "x", "--storage-container-uri", BLOB],
        ["backup", "start", "--data-dir", "d", "--storage-container-uri", BLOB,
         "--sas-token", SAS, "--use-managed-identity"],
        ["backup", "start", "--dir", "x"],  # no --data-dir
        ["backup", "list", "--dir", "x", "--sas-token", SAS, "--use-managed-identity"],
        ["restore", "start", "--data-dir", "d"],  # no --backup-folder
        ["backup", "schedule", "--data-dir", "d", "--dir", "x", "--keep", "2"],  # no --every
        ["backup", "schedule", "--data-dir", "d", "--dir", "x", "--every", "1m"],  # no --keep
        ["backup", "schedule", "--data-dir", "d", "--dir", "x", "--every", "1m", "--keep", "0"],
        ["backup", "schedule", "--data-dir", "d", "--dir", "x", "--every", "1m", "--keep", "2",
         "--count", "0"],
        ["backup", "schedule", "--data-dir", "d", "--dir", "x", "--every", "soon", "--keep", "2"],
    ],
)  # fmt: skip
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2
    assert SAS not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("1s", 1)],
)
def test_durations(text: str, seconds: float) -> None:
    assert backup_schedule.duration_arg(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "0s", "-1s", "1.5h", "h", "1 h", "367d", "1H"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        backup_schedule.duration_arg(text)


def test_dir_is_an_absolute_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = parse("backup", "start", "--data-dir", "d", "--dir", "my backups/c")
    storage = backup_jobs.storage_of(args)
    assert storage == Storage((tmp_path / "my backups" / "c").as_uri())
    assert storage.uri.startswith("file:///")
    assert storage.wire() == {"storageResourceUri": storage.uri, "useManagedIdentity": False}
    assert not (tmp_path / "my backups").exists()  # the pool creates it, not the CLI


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dir", "x", "--sas-token", SAS], "--dir takes no --sas-token"),
        (["--dir", "x", "--use-managed-identity"], "--dir takes no --sas-token"),
        (["--storage-container-uri", BLOB], "needs --sas-token or --use-managed-identity"),
        (["--storage-container-uri", f"{BLOB}?{SAS}", "--sas-token", SAS], "must not carry"),
        (["--storage-container-uri", "file:///tmp/c", "--sas-token", SAS], "file:// URL takes"),
        (["--storage-container-uri", "ftp://host/c", "--sas-token", SAS], "https://"),
        (["--storage-container-uri", BLOB, "--sas-token", "?"], "--sas-token is empty"),
    ],
)
def test_bad_target_combinations(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = mhsm(capsys, "backup", "start", "--data-dir", "nowhere", *extra)
    assert code == 1
    assert out == ""
    assert message in err
    assert len(err.splitlines()) == 1
    assert "TOPSECRET" not in err


def test_blob_storage_keeps_the_token_out_of_repr() -> None:
    args = parse("backup", "list", "--storage-container-uri", BLOB, "--sas-token", f"?{SAS}")
    storage = backup_jobs.storage_of(args)
    assert storage.wire() == {
        "storageResourceUri": BLOB,
        "useManagedIdentity": False,
        "token": SAS,  # the leading "?" is dropped
    }
    assert "TOPSECRET" not in repr(storage)


def test_split_folder_url_like_the_sdk() -> None:
    assert backup_jobs.split_folder_url(f"{BLOB}/mhsm-p-20240101000000") == (
        BLOB,
        "mhsm-p-20240101000000",
    )
    assert backup_jobs.split_folder_url("file:///srv/b/c/mhsm-p-20240101000000") == (
        "file:///srv",
        "b/c/mhsm-p-20240101000000",
    )
    with pytest.raises(ValueError, match="--backup-folder"):
        backup_jobs.split_folder_url(BLOB)


# --- the job client against a scripted pool ----------------------------------------------


class FakeResponse:
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.payload = body
        self.headers = headers or {}

    reason = "Reason"
    content_type = "application/json"
    request = None

    def json(self) -> Any:
        return self.payload

    def text(self, encoding: str | None = None) -> str:
        return json.dumps(self.payload)

    def body(self) -> bytes:  # what HttpResponseError reads an error from
        return self.text().encode()


class FakePool:
    """Stands in for Clients: answers requests from a script and records them."""

    def __init__(self, answers: list[FakeResponse | Callable[[], FakeResponse]]) -> None:
        self.url = POOL_URL
        self.answers = answers
        self.sent: list[tuple[str, str, Any]] = []
        self.key_client = self
        self.closed = False

    def send_request(self, request: Any) -> FakeResponse:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, request.url, body))
        answer = self.answers.pop(0)
        return answer() if callable(answer) else answer

    def __enter__(self) -> FakePool:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True


def status(state: str, done: int = 0, total: int | None = None, **extra: Any) -> dict[str, Any]:
    body = {"status": state, "statusDetails": None, "error": None, "startTime": 1,
            "endTime": None, "jobId": "j1", "progress": {"done": done, "total": total}}  # fmt: skip
    return {**body, **extra}


def accepted(body: dict[str, Any], group: str = "backup") -> FakeResponse:
    headers = {"Azure-AsyncOperation": f"{POOL_URL}/{group}/j1/pending", "Retry-After": "1"}
    return FakeResponse(202, body, headers)


FOLDER_URL = "file:///srv/c/mhsm-p-20240101000000"


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    yield slept


def use_pool(monkeypatch: pytest.MonkeyPatch, pool: FakePool) -> None:
    monkeypatch.setattr(backup, "connect", lambda _: pool)


def test_backup_start_polls_to_the_end(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_sleep: list[float]
) -> None:
    done = status("Succeeded", 7, 7, azureStorageBlobContainerUri=FOLDER_URL, endTime=2)
    pool = FakePool([
        accepted(status("InProgress")),
        FakeResponse(200, status("InProgress", 3, 7), {"Retry-After": "1"}),
        FakeResponse(200, done),
    ])  # fmt: skip
    use_pool(monkeypatch, pool)
    code, out, err = mhsm(capsys, "backup", "start", "--data-dir", "d", "--dir", "/srv/c")
    assert code == 0
    assert pool.closed
    assert pool.sent == [
        ("POST", "/backup", {"storageResourceUri": "file:///srv/c", "useManagedIdentity": False}),
        ("GET", f"{POOL_URL}/backup/j1/pending", None),
        ("GET", f"{POOL_URL}/backup/j1/pending", None),
    ]
    summary = json.loads(out)
    assert summary["folderUrl"] == FOLDER_URL
    assert summary["records"] == 7
    assert summary["status"] == "Succeeded"
    assert isinstance(summary["seconds"], float)
    assert err == "backup: job j1 started\n"  # not a terminal: no bar
    assert no_sleep == [0.25, 0.5]  # sooner than Retry-After at first


def test_failed_job_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_sleep: list[float]
) -> None:
    error = {"code": "StorageAccessFailed", "message": "The storage container was not found."}
    use_pool(monkeypatch, FakePool([accepted(status("InProgress")),
                                    FakeResponse(200, status("Failed", error=error))]))  # fmt: skip
    code, out, err = mhsm(capsys, "backup", "start", "--data-dir", "d", "--dir", "/srv/c")
    assert code == 1
    assert out == ""
    assert err.splitlines()[-1] == (
        "backup Failed: (StorageAccessFailed) The storage container was not found."
    )


def test_a_refused_start_is_the_service_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = {"error": {"code": "Conflict", "message": "Another full backup is running."}}
    use_pool(monkeypatch, FakePool([FakeResponse(409, refused)]))
    code, _, err = mhsm(capsys, "backup", "start", "--data-dir", "d", "--dir", "/srv/c")
    assert code == 1
    assert "Another full backup is running." in err


def test_a_status_url_elsewhere_is_not_followed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = FakeResponse(
        202,
        status("InProgress"),
        {"Azure-AsyncOperation": "https://evil.example/backup/j1/pending"},
    )
    pool = FakePool([elsewhere])
    use_pool(monkeypatch, pool)
    code, _, err = mhsm(capsys, "backup", "start", "--data-dir", "d", "--dir", "/srv/c")
    assert code == 1
    assert "status URL" in err
    assert len(pool.sent) == 1


def test_no_wait_prints_the_job(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = FakePool([accepted(status("InProgress"))])
    use_pool(monkeypatch, pool)
    args = ["--data-dir", "d", "--storage-container-uri", BLOB, "--sas-token", SAS, "--no-wait"]
    code, out, _ = mhsm(capsys, "backup", "start", *args)
    assert code == 0
    assert json.loads(out) == {
        "status": "InProgress",
        "jobId": "j1",
        "statusUrl": f"{POOL_URL}/backup/j1/pending",
    }
    assert pool.sent[0][2] == {
        "storageResourceUri": BLOB,
        "useManagedIdentity": False,
        "token": SAS,
    }
    assert "TOPSECRET" not in out


@pytest.mark.parametrize(
    ("key", "path", "folder_field", "unit"),
    [(None, "/restore", "folderToRestore", "records"),
     ("k 1", "/keys/k%201/restore", "folder", "versions")],
)  # fmt: skip
def test_restore_sends_what_the_sdk_sends(
    key: str | None,
    path: str,
    folder_field: str,
    unit: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_sleep: list[float],
) -> None:
    pool = FakePool([accepted(status("InProgress"), "restore"),
                     FakeResponse(200, status("Succeeded", 2, 2))])  # fmt: skip
    use_pool(monkeypatch, pool)
    folder_url = f"{BLOB}/mhsm-p-20240101000000"
    argv = ["restore", "start", "--data-dir", "d", "--backup-folder", folder_url,
            "--use-managed-identity", *(["--key", key] if key else [])]  # fmt: skip
    code, out, _ = mhsm(capsys, *argv)
    assert code == 0
    sas = {"storageResourceUri": BLOB, "useManagedIdentity": True}
    assert pool.sent[0] == (
        "PUT", path, {"sasTokenParameters": sas, folder_field: "mhsm-p-20240101000000"}
    )  # fmt: skip
    summary = json.loads(out)
    assert summary["status"] == "Succeeded"
    assert summary["folderUrl"] == folder_url
    assert summary[unit] == 2
    assert summary.get("key") == key


def test_restore_needs_auth_for_a_blob_folder(capsys: pytest.CaptureFixture[str]) -> None:
    folder = f"{BLOB}/mhsm-p-20240101000000"
    code, _, err = mhsm(capsys, "restore", "start", "--data-dir", "d", "--backup-folder", folder)
    assert code == 1
    assert "needs --sas-token or --use-managed-identity" in err


# --- progress ----------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    stream = Terminal()
    bar = ProgressBar("backup", stream)
    bar.started("j1")
    bar.update(status("InProgress", 5, 10))
    bar.finish(status("Succeeded", 10, 10))
    text = stream.getvalue()
    assert text.startswith("\rbackup [" + "#" * 15 + "." * 15 + "] 5/10 records")
    assert "[" + "#" * 30 + "] 10/10 records" in text
    assert text.endswith("\n")
    assert bar.line(0, None).startswith("backup [" + "." * 30 + "] 0/? records")


def test_progress_in_a_log_is_a_line_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    bar = ProgressBar("restore", stream)
    bar.started("j1")
    bar.update(status("InProgress", 1, 10))
    now[0] += ProgressBar.LOG_EVERY
    bar.update(status("InProgress", 4, 10))
    bar.finish(status("Succeeded", 10, 10))
    assert stream.getvalue() == "restore: job j1 started\nrestore: 4/10 records\n"


def test_interrupted_wait_says_the_job_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)
    use_pool(monkeypatch, FakePool([accepted(status("InProgress"))]))
    code, _, err = mhsm(capsys, "backup", "start", "--data-dir", "d", "--dir", "/srv/c")
    assert code == 130
    assert "stopped waiting; job j1 goes on in the pool" in err


def test_describe_error() -> None:
    assert backup_jobs.describe_error({"error": {"code": "X", "message": "m"}}) == "(X) m"
    assert backup_jobs.describe_error({"error": None, "statusDetails": "why"}) == "why"
    with pytest.raises(JobFailed):
        raise JobFailed("x")


# --- listing and pruning a directory container -------------------------------------------


def make_folder(root: Path, name: str, *, complete: bool = True, pool: str = "p") -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "records-00000.bin").write_bytes(b"sealed")
    if complete:
        manifest = {"format": 1, "pool": pool, "created": 1_704_067_200, "mac": "x",
                    "counts": {"keys": 3, "rbac": 2}, "files": []}  # fmt: skip
        (folder / "manifest.json").write_text(json.dumps(manifest))


def test_list_reads_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "c"
    make_folder(root, "mhsm-p-20240101000000")
    make_folder(root, "mhsm-p-eu-20240102000000", complete=False)
    (root / "mhsm-bad-20240103000000").mkdir()
    (root / "mhsm-bad-20240103000000" / "manifest.json").write_text("{not json")
    (root / "other").mkdir()
    code, out, _ = mhsm(capsys, "backup", "list", "--dir", str(root))
    assert code == 0
    rows = json.loads(out)
    assert [r["folder"] for r in rows] == [
        "mhsm-bad-20240103000000",
        "mhsm-p-20240101000000",
        "mhsm-p-eu-20240102000000",
    ]
    bad, good, partial = rows
    assert good == {
        "folder": "mhsm-p-20240101000000",
        "pool": "p",
        "created": "2024-01-01T00:00:00+00:00",
        "complete": True,
        "records": 5,
        "counts": {"keys": 3, "rbac": 2},
        "url": (root / "mhsm-p-20240101000000").as_uri(),
    }
    assert partial["complete"] is False
    assert partial["pool"] == "p-eu"
    assert partial["created"] == "2024-01-02T00:00:00+00:00"
    assert partial["records"] is None
    assert bad["complete"] is False


def test_list_as_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_folder(tmp_path / "c", "mhsm-p-20240101000000")
    code, out, _ = mhsm(capsys, "backup", "list", "--dir", str(tmp_path / "c"), "-o", "table")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:5] == ["folder", "pool", "created", "complete", "records"]
    assert row.startswith("mhsm-p-20240101000000")


def test_list_of_a_missing_container(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = mhsm(capsys, "backup", "list", "--dir", str(tmp_path / "nope"))
    assert code == 1
    assert err == "The storage container was not found.\n"


def prune(root: Path, keep: int, newest: str, pool: str = "p") -> list[str]:
    target = DirectoryTarget(root)
    return asyncio.run(backup_schedule.prune(target, pool, keep, newest))


def test_prune_keeps_the_newest_complete_backups_of_this_pool(tmp_path: Path) -> None:
    root = tmp_path / "c"
    for day in range(1, 6):
        make_folder(root, f"mhsm-p-2024010{day}000000", complete=day != 4)
    make_folder(root, "mhsm-p-eu-20230101000000", pool="p-eu")  # another pool, older
    make_folder(root, "mhsm-px-20230101000000", pool="px")
    make_folder(root, "mhsm-p-20240109000000", complete=False)  # started after ours
    make_folder(root, "mhsm-p-latest")  # not a backup folder name
    pruned = prune(root, 2, "mhsm-p-20240105000000")
    # 05 (ours) and 03 are kept; 04 is a failed backup's remains; 02 and 01 are beyond --keep.
    assert pruned == ["mhsm-p-20240101000000", "mhsm-p-20240102000000", "mhsm-p-20240104000000"]
    assert sorted(p.name for p in root.iterdir()) == [
        "mhsm-p-20240103000000",
        "mhsm-p-20240105000000",
        "mhsm-p-20240109000000",
        "mhsm-p-eu-20230101000000",
        "mhsm-p-latest",
        "mhsm-px-20230101000000",
    ]


def test_prune_with_nothing_to_do(tmp_path: Path) -> None:
    make_folder(tmp_path / "c", "mhsm-p-20240101000000")
    assert prune(tmp_path / "c", 1, "mhsm-p-20240101000000") == []
    assert prune(tmp_path / "c", 3, "mhsm-p-20240101000000") == []
    # keep 1 still keeps the newest even before its manifest is visible
    make_folder(tmp_path / "c", "mhsm-p-20240102000000", complete=False)
    assert prune(tmp_path / "c", 1, "mhsm-p-20240102000000") == ["mhsm-p-20240101000000"]


def test_next_slot_skips_missed_slots() -> None:
    assert backup_schedule.next_slot(100.0, 10.0, 101.0) == 110.0
    assert backup_schedule.next_slot(100.0, 10.0, 110.0) == 110.0
    assert backup_schedule.next_slot(100.0, 10.0, 125.0) == 130.0


def test_folder_of() -> None:
    assert backup_schedule.folder_of(FOLDER_URL) == "mhsm-p-20240101000000"
    with pytest.raises(ValueError, match="folder"):
        backup_schedule.folder_of("")


def test_schedule_goes_on_after_a_failure_and_prunes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_sleep: list[float],
) -> None:
    root = tmp_path / "c"
    make_folder(root, "mhsm-p-20240101000000")
    make_folder(root, "mhsm-p-20240102000000")
    monkeypatch.setattr(backup_schedule, "load_pool_document", lambda _: {"name": "p"})
    monkeypatch.setattr(time, "sleep", lambda _: None)
    folder_url = (root / "mhsm-p-20240103000000").as_uri()

    def made() -> FakeResponse:  # the pool writes the folder while the job runs
        make_folder(root, "mhsm-p-20240103000000")
        return FakeResponse(200, status("Succeeded", 5, 5, azureStorageBlobContainerUri=folder_url))

    error = {"code": "StorageAccessFailed", "message": "nope"}
    failed = FakeResponse(200, status("Failed", error=error))
    pool = FakePool([accepted(status("InProgress")), failed, accepted(status("InProgress")), made])
    monkeypatch.setattr(backup_schedule, "connect", lambda _: pool)
    argv = ["backup", "schedule", "--data-dir", str(tmp_path), "--dir", str(root),
            "--every", "1s", "--keep", "2", "--count", "2"]  # fmt: skip
    code, out, err = mhsm(capsys, *argv)
    assert code == 1  # one backup failed
    assert "backup Failed: (StorageAccessFailed) nope" in err
    (line,) = out.splitlines()
    summary = json.loads(line)
    assert summary["folderUrl"] == folder_url
    assert summary["pruned"] == ["mhsm-p-20240101000000"]
    assert sorted(p.name for p in root.iterdir()) == [
        "mhsm-p-20240102000000",
        "mhsm-p-20240103000000",
    ]
    assert pool.closed


@pytest.mark.parametrize("sleeps_before", [0, 1])  # between backups, or while one runs
def test_schedule_stops_cleanly_on_ctrl_c(
    sleeps_before: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sleeps = [sleeps_before]

    def sleep(_: float) -> None:
        sleeps[0] -= 1
        if sleeps[0] < 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(backup_schedule, "load_pool_document", lambda _: {"name": "p"})
    pool = FakePool([accepted(status("InProgress"))])
    monkeypatch.setattr(backup_schedule, "connect", lambda _: pool)
    monkeypatch.setattr(time, "sleep", sleep)
    argv = ["backup", "schedule", "--data-dir", "d", "--dir", "/srv/c", "--every", "1h",
            "--keep", "1"]  # fmt: skip
    code, out, err = mhsm(capsys, *argv)
    assert code == 0
    assert out == ""
    assert err.endswith("backup schedule: stopped after 0 backups\n")
    if sleeps_before:
        assert "stopped waiting; job j1 goes on in the pool" in err
        assert pool.closed


def test_the_sas_token_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backup_jobs.SAS_TOKEN_VARIABLE, f"?{SAS}")
    from_env = backup_jobs.storage_of(parse("backup", "list", "--storage-container-uri", BLOB))
    assert from_env.wire()["token"] == SAS  # off the command line, out of the process list
    given = parse("backup", "list", "--storage-container-uri", BLOB, "--sas-token", "sv=1&sig=x")
    assert backup_jobs.storage_of(given).wire()["token"] == "sv=1&sig=x"  # the flag wins
    managed = parse("backup", "list", "--storage-container-uri", BLOB, "--use-managed-identity")
    assert "token" not in backup_jobs.storage_of(managed).wire()
    assert "token" not in backup_jobs.storage_of(parse("backup", "list", "--dir", "/x/c")).wire()
