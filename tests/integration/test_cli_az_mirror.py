"""The `mhsm` commands and flags that mirror `az keyvault` (issue 11), run as real processes
against a dev pool: role assignments and definitions, settings, az's key flags, `--id` with the
environment `mhsm env` prints, `-o table|tsv`, az-shaped errors, progress, and bash and zsh
completion. What the CLI did is checked through the Azure SDK, not through the CLI again."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.administration import KeyVaultRoleScope, KeyVaultSettingsClient
from dev_pool import DevPool
from principal_support import CLI, CRYPTO_USER, Run

pytestmark = pytest.mark.integration
ARM = "AllowKeyManagementOperationsThroughARM"


def run(argv: list[str], env: dict[str, str] | None = None) -> Run:
    environ = {**os.environ, "PYTHONWARNINGS": "error", **(env or {})}
    proc = subprocess.run(
        [*CLI, *argv], capture_output=True, text=True, env=environ, timeout=60, check=False
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def ok(result: Run) -> Any:
    assert (result.code, result.stderr) == (0, ""), result.stderr
    return result.json if result.stdout.startswith(("[", "{")) else result.stdout


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def mhsm(dev_pool: DevPool) -> Any:
    """`mhsm("role assignment list ...")` with `--data-dir` of the module's pool appended."""

    def call(command: str) -> Run:
        return run([*shlex.split(command), "--data-dir", str(dev_pool.data_dir)])

    return call


def test_role_assignment_round_trip_seen_by_the_sdk(mhsm: Any, dev_pool: DevPool) -> None:
    app = ok(mhsm(f"principal create --name {unique('app')}"))
    made = ok(
        mhsm(
            f"role assignment create --role 'Managed HSM Crypto User' --assignee "
            f"{app['client_id']} --scope /"
        )
    )
    assert (made["principalId"], made["roleName"]) == (app["object_id"], "Managed HSM Crypto User")
    with dev_pool.access_client() as access:
        seen = {a.name: a for a in access.list_role_assignments(KeyVaultRoleScope.GLOBAL)}
        assert seen[made["name"]].properties.principal_id == app["object_id"]
        assert seen[made["name"]].properties.role_definition_id.endswith(CRYPTO_USER)

    listed = ok(mhsm(f"role assignment list --assignee {app['client_id']}"))
    assert [a["name"] for a in listed] == [made["name"]]
    table = mhsm(f"role assignment list --assignee {app['object_id']} -o table")
    assert table.code == 0
    header, row = table.stdout.splitlines()
    assert header.split() == ["name", "roleName", "principalId", "principalName", "scope"]
    assert row.startswith(made["name"]) and app["object_id"] in row

    gone = ok(mhsm(f"role assignment delete --role {CRYPTO_USER} --assignee {app['name']}"))
    assert [a["name"] for a in gone] == [made["name"]]
    with dev_pool.access_client() as access:
        names = {a.name for a in access.list_role_assignments(KeyVaultRoleScope.GLOBAL)}
    assert made["name"] not in names


def test_custom_role_definition(mhsm: Any, dev_pool: DevPool, tmp_path: Path) -> None:
    role_name = unique("auditors")
    body = {
        "roleName": role_name,
        "description": "made by the CLI test",
        "dataActions": ["Microsoft.KeyVault/managedHsm/keys/read/action"],
    }
    (tmp_path / "role.json").write_text(json.dumps(body))
    made = ok(mhsm(f"role definition create --role-definition @{tmp_path / 'role.json'}"))
    assert (made["roleName"], made["roleType"]) == (role_name, "CustomRole")
    with dev_pool.access_client() as access:
        seen = access.get_role_definition(KeyVaultRoleScope.GLOBAL, made["name"])
    assert seen.permissions[0].data_actions == body["dataActions"]
    shown = ok(mhsm(f"role definition show --role-name {role_name}"))
    assert shown["name"] == made["name"]
    custom = ok(mhsm("role definition list --custom-role-only"))
    assert role_name in {r["roleName"] for r in custom}
    ok(mhsm(f"role definition delete --name {made['name']}"))
    assert role_name not in {r["roleName"] for r in ok(mhsm("role definition list"))}


def test_setting_update_and_show(mhsm: Any, dev_pool: DevPool) -> None:
    updated = ok(mhsm(f"setting update --name {ARM} --value TRUE"))
    assert updated == {"name": ARM, "value": "true", "type": "boolean"}
    with KeyVaultSettingsClient(
        dev_pool.url, dev_pool.credential(), connection_verify=dev_pool.ca
    ) as client:
        assert client.get_setting(ARM).getboolean() is True
    assert ok(mhsm(f"setting show -n {ARM} -o tsv")) == f"{ARM}\ttrue\tboolean\n"
    ok(mhsm(f"setting update --name {ARM} --value false"))
    assert [s["value"] for s in ok(mhsm("setting list"))] == ["false"]


def test_key_create_with_az_flag_names_and_table(
    dev_pool: DevPool, key_client: Any, tmp_path: Path
) -> None:
    name = unique("azflags")
    result = run([
        "key", "create", "--hsm-name", str(dev_pool.data_dir), "--name", name, "--kty", "EC",
        "--protection", "hsm", "--curve", "P-384", "--ops", "sign", "verify",
        "--tags", "env=dev", "-o", "table",
    ])  # fmt: skip
    assert (result.code, result.stderr) == (0, ""), result.stderr
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert (rows["name"], rows["kty"], rows["tags.env"]) == (name, "EC-HSM", "dev")
    key = key_client.get_key(name)
    assert (key.key_type, key.key.crv, key.key_operations) == (
        "EC-HSM",
        "P-384",
        ["sign", "verify"],
    )


def test_id_uses_the_environment_of_mhsm_env(dev_pool: DevPool, key_client: Any) -> None:
    exports = ok(run(["env", "--data-dir", str(dev_pool.data_dir)]))
    env = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in exports.splitlines()
    )
    name = unique("byurl")
    made = ok(run(["key", "create", "--id", dev_pool.url, "-n", name, "--kty", "RSA-HSM"], env))
    assert key_client.get_key(name).id == made["kid"]


def test_errors_are_az_shaped(mhsm: Any) -> None:
    result = mhsm(f"key show --name {unique('missing')}")
    assert result.code == 1 and result.stdout == ""
    assert result.stderr.startswith("ERROR: (KeyNotFound) "), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    bad = mhsm(f"setting update --name {ARM} --value maybe")
    assert bad.code == 1 and bad.stderr.startswith("ERROR: (BadParameter) ")


def test_forced_progress_goes_to_stderr(mhsm: Any) -> None:
    name = unique("prog")
    ok(mhsm(f"key create --name {name} --kty EC-HSM"))
    result = mhsm(f"key delete --name {name} --progress")
    assert result.code == 0 and result.json["name"] == name
    assert f"deleting {name} " in result.stderr  # text mode reads its "\r" as a newline
    quiet = mhsm(f"key recover --name {name} --progress --only-show-errors")
    assert (quiet.code, quiet.stderr) == (0, "")


# What typing these words and pressing Tab must offer, in either shell.
COMPLETIONS: list[tuple[tuple[str, ...], list[str]]] = [
    (("mhsm", "ro"), ["role"]),
    (("mhsm", "key", "cr"), ["create"]),
    (("mhsm", "role", "assignment", ""), ["create", "list", "delete"]),
    (("mhsm", "key", "create", "--kt"), ["--kty"]),
    (("mhsm", "setting", "list", "-o", "t"), ["table", "tsv"]),
]
ZSH_PROBE = r"""
source "$1"; shift
# compadd works only inside a completion widget: here it prints what it is given, keeping the
# words that start with what was typed, as zsh's default matcher does.
compadd() {
    local -a given
    if [[ ${argv[-2]} == -a ]]; then given=(${(P)argv[-1]})
    else given=(${argv[${argv[(i)-]}+1,-1]}); fi
    print -l -- ${(M)given:#${PREFIX}*}
}
words=("$@"); CURRENT=$#; PREFIX=${words[CURRENT]}
${=_comps[mhsm]}  # the completer the script registered for mhsm, called as zsh would
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (make system-deps)")
def test_zsh_completion(tmp_path: Path) -> None:
    """The zsh script registers a completer for mhsm (bash's function through bashcompinit) that
    gives the same completions as bash's, nested command paths included."""
    script = tmp_path / "mhsm.zsh"
    script.write_text(ok(run(["completion", "zsh"])))

    def complete(*words: str) -> list[str]:
        done = subprocess.run(
            ["zsh", "-f", "-c", ZSH_PROBE, "probe", str(script), *words],
            capture_output=True, text=True, timeout=30, check=True,
            env={**os.environ, "HOME": str(tmp_path)},  # compinit may write a .zcompdump
        )  # fmt: skip
        return done.stdout.split()

    for words, expected in COMPLETIONS:
        assert complete(*words) == expected, words


def test_bash_completion(tmp_path: Path) -> None:
    script = tmp_path / "mhsm.bash"
    script.write_text(ok(run(["completion", "bash"])))

    def complete(*words: str) -> list[str]:
        probe = (
            f"source {shlex.quote(str(script))}; COMP_WORDS=({shlex.join(words)}); "
            f"COMP_CWORD={len(words) - 1}; _mhsm; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        done = subprocess.run(
            ["bash", "-c", probe], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.split()

    for words, expected in COMPLETIONS:
        assert complete(*words) == expected, words
