"""The parser fuzz targets of fuzz/ (README there): each seed input through its target in-process,
each input a fuzzing run once found through its standalone target, then each target under atheris
for a few seconds. A crash fails the test with its reproducer.

The four fuzzing runs take about 50 s together; OPENMHSM_FUZZ_SECONDS sets the time per target.
"""

from __future__ import annotations

import base64
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

# The modules the targets instrument, imported here first so that loading a target in this
# process leaves them as they are (atheris instruments only modules imported under its hook).
import openmhsm.auth.challenge
import openmhsm.auth.external
import openmhsm.auth.tokens
import openmhsm.backup.format
import openmhsm.crypto.jwk
import openmhsm.domain.blob
import openmhsm.services.validation  # noqa: F401

REPO = Path(__file__).resolve().parents[3]
FUZZ = REPO / "fuzz"
TARGETS = ("jwk", "security_domain", "backup_manifest", "token")
SECONDS = int(os.environ.get("OPENMHSM_FUZZ_SECONDS", "10"))
MAX_RUNS = 1_000_000  # the time bound is the one that counts; this only caps a very fast machine
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, ModuleType]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(FUZZ))
        yield {name: importlib.import_module(f"{name}_target") for name in TARGETS}


def _seeds() -> list[tuple[str, Path]]:
    return [
        (target, seed)
        for target in TARGETS
        for seed in sorted((FUZZ / "corpus" / target).iterdir())
    ]


@pytest.mark.parametrize(("target", "seed"), _seeds(), ids=[f"{t}/{s.name}" for t, s in _seeds()])
def test_each_seed_passes_its_target(
    targets: dict[str, ModuleType], target: str, seed: Path
) -> None:
    targets[target].TestOneInput(seed.read_bytes())


def test_every_target_has_seeds() -> None:
    for target in TARGETS:
        assert any((FUZZ / "corpus" / target).iterdir()), target


def _regressions() -> list[str]:
    return [t for t in TARGETS if (FUZZ / "regressions" / t).is_dir()]


@pytest.mark.parametrize("target", _regressions())
def test_inputs_the_fuzzer_found_replay_clean_under_the_harness(target: str) -> None:
    """Each input of fuzz/regressions/<target>/ once through the standalone, instrumented target,
    as the reproducer line of a failed run replays it. Some findings depend on the harness's own
    stack (a RecursionError only a few frames deeper) and do not show in-process."""
    inputs = sorted(str(p) for p in (FUZZ / "regressions" / target).iterdir())
    done = subprocess.run(
        [sys.executable, str(FUZZ / f"{target}_target.py"), *inputs],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.parametrize("target", TARGETS)
def test_a_bounded_fuzzing_run_finds_nothing(target: str, tmp_path: Path) -> None:
    corpus, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    script = FUZZ / f"{target}_target.py"
    command = [
        sys.executable,
        str(script),
        f"-atheris_runs={MAX_RUNS}",
        f"-max_total_time={SECONDS}",
        "-timeout=30",  # one input this slow is a finding too (a denial of service)
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),  # new inputs go here, not into the committed seeds
        str(FUZZ / "corpus" / target),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=SECONDS + 120, cwd=REPO, check=False
    )
    executed = _EXECUTED.search(done.stderr)
    print(f"{target}: {executed[1] if executed else '?'} executions in {SECONDS} s")
    found = sorted(artifacts.iterdir())
    if done.returncode != 0 or found:
        pytest.fail(_report(script, done, found), pytrace=False)


def _report(script: Path, done: subprocess.CompletedProcess[str], found: list[Path]) -> str:
    """What a developer needs: the traceback, and each input to replay."""
    lines = [line for line in done.stderr.splitlines() if not line.startswith("INFO: Instr")]
    report = [f"{script.name} exited with {done.returncode}:", *lines[-60:]]
    for artifact in found:
        encoded = base64.b64encode(artifact.read_bytes()).decode("ascii")
        report += [
            f"reproducer {artifact.name} (base64): {encoded}",
            f"replay: echo {encoded} | base64 -d > /tmp/{artifact.name} && "
            f".venv/bin/python fuzz/{script.name} /tmp/{artifact.name}",
        ]
    return "\n".join(report)
