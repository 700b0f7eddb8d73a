"""Every command in the docs runs (issue 11): each `bash` block of docs/*.md, in order, in one
`bash -euo pipefail` per page, with DATA_DIR, PORT and WORK set to a fresh data dir, a free port
and a scratch directory, and the project's virtualenv first on PATH. Pools a page leaves
running are stopped."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dev_pool import free_port

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
PAGES = sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))


def script_of(page: Path) -> str:
    return "\n".join(block.group(1) for block in BLOCK.finditer(page.read_text()))


def test_the_docs_have_runnable_pages() -> None:
    assert {p.name for p in PAGES} >= {"quickstart.md", "disaster-recovery.md", "hostnames.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_command_of_the_page_runs(page: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DATA_DIR": str(tmp_path / "pool"),
        "PORT": str(free_port()),
        "WORK": str(work),
        "HOME": str(tmp_path),
    }
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script_of(page)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    finally:
        for pool_json in tmp_path.rglob("pool.json"):
            subprocess.run(
                [sys.executable, "-m", "openmhsm.cli.main", "down", "--data-dir",
                 str(pool_json.parent)],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
    assert done.returncode == 0, f"{page.name}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
