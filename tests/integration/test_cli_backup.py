"""`mhsm backup start|list|schedule` and `mhsm restore start` against a dev pool, with a directory
(`--dir`, `file://`) as the container; keys are checked with the SDK."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azurite_support import (
    Azurite,
    azurite_server,  # noqa: F401 - the "azurite" fixture
    container_sas,
    make_container,
)
from dev_pool import DevPool
from pool_support import CliResult

from openmhsm.cli.main import main

pytestmark = pytest.mark.integration


def mhsm(*argv: str) -> CliResult:
    """The CLI in this process (a process each would spend most of the time importing)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return CliResult(code, out.getvalue(), err.getvalue())


def ok(run: CliResult) -> CliResult:
    assert run.code == 0, run.stderr
    return run


@dataclass
class Backup:
    container: Path
    folder_url: str
    keys: dict[str, str]  # name -> version
    summary: dict[str, Any]

    @property
    def folder(self) -> Path:
        return self.container / self.folder_url.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def made(
    dev_pool: DevPool, key_client: KeyClient, tmp_path_factory: pytest.TempPathFactory
) -> Backup:
    """A few keys, then a full backup of the pool into a fresh directory container."""
    tag = uuid.uuid4().hex[:8]
    keys = {}
    for n in range(3):
        key = key_client.create_ec_key(f"bk-{tag}-{n}", hardware_protected=True)
        assert key.properties.version is not None
        keys[key.name] = key.properties.version
    container = tmp_path_factory.mktemp("backups") / "container"
    run = ok(mhsm("backup", "start", "--data-dir", str(dev_pool.data_dir), "--dir", str(container)))
    summary = run.json()
    return Backup(container, summary["folderUrl"], keys, summary)


def test_backup_start_writes_a_complete_folder(made: Backup, dev_pool: DevPool) -> None:
    assert made.summary["status"] == "Succeeded"
    assert made.folder_url.startswith(made.container.as_uri() + "/")
    assert made.folder.name.startswith(f"mhsm-{dev_pool.doc['name']}-")
    assert (made.folder / "manifest.json").is_file()
    assert made.summary["records"] >= len(made.keys)
    assert made.summary["seconds"] >= 0


def test_backup_list_shows_it(made: Backup, dev_pool: DevPool) -> None:
    rows = ok(mhsm("backup", "list", "--dir", str(made.container))).json()
    (row,) = [r for r in rows if r["folder"] == made.folder.name]
    assert row["complete"] is True
    assert row["pool"] == dev_pool.doc["name"]
    assert row["records"] == made.summary["records"]
    assert row["counts"]["keys"] >= len(made.keys)
    assert row["url"] == made.folder_url
    table = ok(mhsm("backup", "list", "--dir", str(made.container), "-o", "table")).stdout
    assert made.folder.name in table


def test_backup_list_of_the_pool(made: Backup, dev_pool: DevPool) -> None:
    """Without a container: the pool's own recent backups, wherever they went."""
    rows = ok(mhsm("backup", "list", "--data-dir", str(dev_pool.data_dir))).json()
    (row,) = [r for r in rows if r["folderUrl"] == made.folder_url]
    assert row["status"] == "Succeeded"
    assert row["records"] == made.summary["records"]
    assert row["jobId"] == made.summary["jobId"]
    assert mhsm("backup", "list").code == 1  # neither the pool nor a container


def test_full_restore(made: Backup, dev_pool: DevPool, key_client: KeyClient) -> None:
    run = ok(
        mhsm("restore", "start", "--data-dir", str(dev_pool.data_dir),
             "--backup-folder", made.folder_url)
    )  # fmt: skip
    summary = run.json()
    assert summary["status"] == "Succeeded"
    assert summary["records"] == made.summary["records"]
    for name, version in made.keys.items():
        assert key_client.get_key(name).properties.version == version


def test_key_restore_brings_back_a_purged_key(
    made: Backup, dev_pool: DevPool, key_client: KeyClient
) -> None:
    name, version = next(iter(made.keys.items()))
    key_client.begin_delete_key(name).wait()
    key_client.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key(name)
    run = ok(
        mhsm("restore", "start", "--data-dir", str(dev_pool.data_dir),
             "--backup-folder", made.folder_url, "--key", name, "-o", "table")
    )  # fmt: skip
    assert "Succeeded" in run.stdout
    assert key_client.get_key(name).properties.version == version


def test_a_failed_job_exits_1_with_its_error(made: Backup, dev_pool: DevPool) -> None:
    run = mhsm(
        "restore", "start", "--data-dir", str(dev_pool.data_dir),
        "--backup-folder", made.folder_url, "--key", "no-such-key",
    )  # fmt: skip
    assert run.code == 1
    assert run.stdout == ""
    assert run.stderr.splitlines()[-1].startswith("key restore Failed: (KeyNotFound)")


def test_backup_into_an_unreachable_directory_fails(dev_pool: DevPool, tmp_path: Path) -> None:
    run = mhsm(
        "backup", "start", "--data-dir", str(dev_pool.data_dir),
        "--dir", str(tmp_path / "missing" / "container"),
    )  # fmt: skip
    assert run.code == 1
    assert "backup Failed: (StorageAccessFailed)" in run.stderr


def test_schedule_keeps_the_newest(dev_pool: DevPool, tmp_path: Path) -> None:
    container = tmp_path / "container"
    pool = dev_pool.doc["name"]
    for other in (f"mhsm-{pool}x-20200101000000", f"mhsm-{pool}-eu-20200101000000"):
        (container / other).mkdir(parents=True)  # other pools' backups are never pruned
    run = ok(
        mhsm("backup", "schedule", "--data-dir", str(dev_pool.data_dir), "--dir", str(container),
             "--every", "1s", "--keep", "2", "--count", "3")
    )  # fmt: skip
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["status"] for line in lines] == ["Succeeded"] * 3
    assert lines[0]["pruned"] == []
    mine = sorted(p.name for p in container.iterdir() if p.name.startswith(f"mhsm-{pool}-2"))
    assert len(mine) == 2
    assert mine == sorted(line["folderUrl"].rsplit("/", 1)[1] for line in lines[1:])
    assert all((container / name / "manifest.json").is_file() for name in mine)
    assert (container / f"mhsm-{pool}x-20200101000000").is_dir()
    assert (container / f"mhsm-{pool}-eu-20200101000000").is_dir()


def test_entry_point_runs_as_a_process(made: Backup) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    proc = subprocess.run(
        [sys.executable, "-m", "openmhsm.cli.main", "backup", "list", "--dir", str(made.container)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert made.folder.name in proc.stdout


def test_blob_container_with_a_sas_token(dev_pool: DevPool, azurite: Azurite) -> None:
    container = f"cli-{uuid.uuid4().hex[:8]}"
    url = make_container(azurite, container)
    sas = container_sas(azurite, container)
    auth = ("--sas-token", sas)
    data_dir = str(dev_pool.data_dir)
    runs = [
        ok(mhsm("backup", "start", "--data-dir", data_dir, "--storage-container-uri", url, *auth))
    ]
    folder_url = runs[0].json()["folderUrl"]
    assert folder_url.startswith(url + "/mhsm-")
    runs.append(ok(mhsm("backup", "list", "--storage-container-uri", url, *auth)))
    (row,) = runs[-1].json()
    assert row["complete"] is True
    assert row["url"] == folder_url
    runs.append(
        ok(mhsm("restore", "start", "--data-dir", data_dir, "--backup-folder", folder_url, *auth))
    )
    runs.append(
        ok(mhsm("backup", "schedule", "--data-dir", data_dir, "--storage-container-uri", url,
                *auth, "--every", "1s", "--keep", "1", "--count", "2"))
    )  # fmt: skip
    last = json.loads(runs[-1].stdout.splitlines()[-1])
    runs.append(ok(mhsm("backup", "list", "--storage-container-uri", url, *auth)))
    assert [r["url"] for r in runs[-1].json()] == [last["folderUrl"]]
    signature = sas.rsplit("sig=", 1)[1]
    assert all(signature not in r.stdout + r.stderr for r in runs)
