"""az's flag names on `mhsm` (aliases: the existing names keep working), `mhsm role` against a
scripted access-control client, the completion tree and the progress line. No processes."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import select
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

import pytest

from openmhsm.cli import backup, completion, keys, principals, progress, role_definitions, roles
from openmhsm.cli.main import build_parser, main
from openmhsm.cli.pool_location import pool_of


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


# --- where the pool is -------------------------------------------------------------------


def test_data_dir_still_names_the_pool() -> None:
    assert pool_of(parse("key", "list", "--data-dir", "d")) == Path("d")


@pytest.mark.parametrize("flag", ["--id", "--hsm-name"])
def test_az_flags_name_the_pool_by_url(flag: str) -> None:
    args = parse("key", "show", flag, "https://127.0.0.1:8443/keys/k1/abc", "--name", "k1")
    assert pool_of(args) == "https://127.0.0.1:8443"


def test_hsm_name_may_be_a_data_dir() -> None:
    assert pool_of(parse("setting", "list", "--hsm-name", "/srv/pool")) == Path("/srv/pool")


@pytest.mark.parametrize(
    "argv",
    [
        ["key", "list"],  # no pool
        ["key", "list", "--data-dir", "d", "--id", "https://h:1"],  # two pools
        ["key", "list", "--id", "ftp://h"],
        ["setting", "show", "--data-dir", "d"],  # no --name
        ["role", "assignment", "create", "--data-dir", "d", "--role", "r"],  # no assignee
        ["restore", "start", "--data-dir", "d", "--backup-folder", "u", "--folder-to-restore", "f"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(*argv)
    assert exit_.value.code == 2


# --- keys --------------------------------------------------------------------------------


def test_key_create_takes_az_flags() -> None:
    args = parse(
        "key", "create", "--hsm-name", "https://h:1", "-n", "k", "--kty", "RSA", "-p", "hsm",
        "--size", "3072", "--ops", "sign", "verify", "--tags", "a=1", "b=2", "-o", "table",
    )  # fmt: skip
    assert keys.key_type(args.kty, args.protection) == "RSA-HSM"
    assert (args.size, args.ops, dict(args.tags)) == (
        3072,
        ["sign", "verify"],
        {"a": "1", "b": "2"},
    )
    assert keys.key_type("EC-HSM", "hsm") == "EC-HSM"
    assert keys.key_type("oct", "software") == "oct"


def test_key_crypto_takes_algorithm_and_version_aliases() -> None:
    for alg in ("--alg", "--algorithm", "-a"):
        args = parse("key", "sign", "--data-dir", "d", "-n", "k", alg, "ES256", "-v", "v1",
                     "--data", "x")  # fmt: skip
        assert (args.alg, args.version) == ("ES256", "v1")


def test_release_policy_needs_json(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text('{"version": "1.0.0", "anyOf": []}')
    args = parse("key", "create", "--data-dir", "d", "-n", "k", "--exportable",
                 "--policy", str(policy), "--immutable")  # fmt: skip
    made = keys.release_policy(args)
    assert made is not None and made.immutable and json.loads(made.encoded_policy)
    policy.write_text("not json")
    with pytest.raises(ValueError, match="not a JSON release policy"):
        keys.release_policy(args)
    with pytest.raises(ValueError, match="--policy"):
        keys.release_policy(parse("key", "create", "--data-dir", "d", "-n", "k", "--immutable"))


# --- backup and restore ------------------------------------------------------------------


def test_backup_takes_az_storage_flags() -> None:
    for uri in ("--storage-container-uri", "--storage-resource-uri", "-u"):
        for token in ("--sas-token", "--storage-container-SAS-token", "-t"):
            args = parse("backup", "start", "--hsm-name", "d", uri, "https://a/c", token, "s")
            assert (args.storage_container_uri, args.sas_token) == ("https://a/c", "s")


def test_restore_takes_az_folder_flags() -> None:
    args = parse("restore", "start", "--data-dir", "d", "--folder-to-restore", "mhsm-p-1",
                 "--storage-resource-uri", "https://a/c/", "--key-name", "k1")  # fmt: skip
    assert backup.folder_to_restore(args) == ("https://a/c/mhsm-p-1", "--storage-resource-uri")
    assert args.key == "k1"
    args = parse("restore", "start", "--data-dir", "d", "--backup-folder", "file:///b/f")
    assert backup.folder_to_restore(args) == ("file:///b/f", "--backup-folder")
    with pytest.raises(ValueError, match="--storage-resource-uri"):
        backup.folder_to_restore(
            parse("restore", "start", "--data-dir", "d", "--folder-to-restore", "f")
        )


# --- roles -------------------------------------------------------------------------------

ROLE_ID = "Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/"
USER = "21dbd100-6940-42c2-9190-5d6cb909625b"
OFFICER = "515eb02d-2335-4d2d-92f2-b1cbdf9c3778"


def role(name: str, role_name: str, role_type: str = "AKVBuiltInRole") -> SimpleNamespace:
    return SimpleNamespace(
        name=name, id=ROLE_ID + name, role_name=role_name, role_type=role_type,
        description="", type="Microsoft.Authorization/roleDefinitions",
        assignable_scopes=["/"], permissions=[],
    )  # fmt: skip


def assignment(name: str, principal: str, role_name: str, scope: str = "/") -> SimpleNamespace:
    prefix = "" if scope == "/" else scope
    return SimpleNamespace(
        name=name,
        role_assignment_id=f"{prefix}/providers/Microsoft.Authorization/roleAssignments/{name}",
        type="Microsoft.Authorization/roleAssignments",
        properties=SimpleNamespace(
            principal_id=principal, role_definition_id=ROLE_ID + role_name, scope=scope
        ),
    )


class FakeAccess:
    def __init__(self) -> None:
        self.roles = [
            role(USER, "Managed HSM Crypto User"),
            role(OFFICER, "Managed HSM Crypto Officer"),
        ]
        self.assignments: dict[str, SimpleNamespace] = {}

    def list_role_definitions(self, scope: str) -> list[SimpleNamespace]:
        return self.roles

    def create_role_assignment(
        self, scope: str, definition_id: str, principal_id: str, *, name: str | None = None
    ) -> SimpleNamespace:
        made = assignment(name or f"a{len(self.assignments)}", principal_id,
                          role_definitions.guid_of(definition_id), scope)  # fmt: skip
        self.assignments[made.name] = made
        return made

    def list_role_assignments(self, scope: str) -> list[SimpleNamespace]:
        return list(self.assignments.values())

    def get_role_assignment(self, scope: str, name: str) -> SimpleNamespace:
        return self.assignments[name]

    def delete_role_assignment(self, scope: str, name: str) -> None:
        del self.assignments[name]


class FakeClients:
    def __init__(self) -> None:
        self.access_control = FakeAccess()

    def __enter__(self) -> FakeClients:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        pass


PRINCIPALS = [
    {"client_id": "app-1", "object_id": "obj-1", "name": "billing", "kind": "service"},
    {"client_id": "app-2", "object_id": "obj-2", "name": "twin", "kind": "service"},
    {"client_id": "app-3", "object_id": "obj-3", "name": "twin", "kind": "service"},
]


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> FakeClients:
    clients = FakeClients()
    for module in (roles, role_definitions):
        monkeypatch.setattr(module, "connect", lambda _: clients)
    monkeypatch.setattr(principals, "call", lambda *a: {"value": PRINCIPALS})
    return clients


def mhsm(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main([*argv, "--data-dir", "d"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.startswith(("[", "{")) else out, err


def test_role_assignment_round_trip(pool: FakeClients, capsys: pytest.CaptureFixture[str]) -> None:
    code, made, _ = mhsm(capsys, "role", "assignment", "create", "--role",
                         "managed hsm crypto user", "--assignee", "app-1")  # fmt: skip
    assert code == 0
    assert (made["principalId"], made["principalName"]) == ("obj-1", "billing")
    assert (made["roleName"], made["scope"]) == ("Managed HSM Crypto User", "/")
    mhsm(capsys, "role", "assignment", "create", "--role", OFFICER, "--assignee", "billing")
    mhsm(capsys, "role", "assignment", "create", "--role", ROLE_ID + USER,
         "--assignee-object-id", "obj-9")  # fmt: skip

    _, listed, _ = mhsm(capsys, "role", "assignment", "list", "--assignee", "billing")
    assert sorted(a["roleName"] for a in listed) == [
        "Managed HSM Crypto Officer",
        "Managed HSM Crypto User",
    ]
    _, listed, _ = mhsm(capsys, "role", "assignment", "list", "--role", "Managed HSM Crypto User")
    assert sorted(a["principalId"] for a in listed) == ["obj-1", "obj-9"]

    _, deleted, _ = mhsm(capsys, "role", "assignment", "delete", "--ids", made["id"])
    assert [d["name"] for d in deleted] == [made["name"]]
    _, deleted, _ = mhsm(capsys, "role", "assignment", "delete", "--assignee", "obj-9")
    assert [d["principalId"] for d in deleted] == ["obj-9"]
    assert [a.properties.principal_id for a in pool.access_control.assignments.values()] == [
        "obj-1"
    ]


def test_role_errors_are_one_line(pool: FakeClients, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = mhsm(capsys, "role", "assignment", "create", "--role", "nope", "--assignee", "x")
    assert (code, err) == (1, "ERROR: no role named 'nope': see `mhsm role definition list`\n")
    code, _, err = mhsm(
        capsys, "role", "assignment", "create", "--role", USER, "--assignee", "twin"
    )
    assert code == 1 and "2 principals are named 'twin'" in err
    code, _, err = mhsm(capsys, "role", "assignment", "delete")
    assert code == 1 and err.startswith("ERROR: say which assignments")


def test_role_table_has_the_main_columns(
    pool: FakeClients, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = mhsm(capsys, "role", "definition", "list", "-o", "table")
    lines = out.splitlines()
    assert lines[0].split() == ["roleName", "name", "roleType", "description"]
    assert lines[1].split("  ")[0] == "Managed HSM Crypto User"  # aligned on the longest
    assert lines[1].index(USER) == lines[0].index("name") == lines[2].index(OFFICER)


def test_assignment_ids_split_into_scope_and_name() -> None:
    base = "/providers/Microsoft.Authorization/roleAssignments/"
    assert roles.split_assignment_id(base + "n1") == ("/", "n1")
    assert roles.split_assignment_id("/keys/k1" + base + "n2") == ("/keys/k1", "n2")
    with pytest.raises(ValueError, match="not a role assignment id"):
        roles.split_assignment_id("/keys/k1/n2")


def test_role_definition_body_as_az_takes_it(tmp_path: Path) -> None:
    body = {"roleName": "r", "dataActions": ["Microsoft.KeyVault/managedHsm/keys/read/action"],
            "notDataActions": []}  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps(body))
    assert role_definitions.read_role_definition(f"@{tmp_path / 'r.json'}") == body
    [permission] = role_definitions.permissions_of(body)
    assert permission.data_actions == body["dataActions"] and permission.actions == []
    listed = {"permissions": [{"dataActions": ["a"]}, {"notDataActions": ["b"]}]}
    assert len(role_definitions.permissions_of(listed)) == 2
    with pytest.raises(ValueError, match="not JSON"):
        role_definitions.read_role_definition("{")
    with pytest.raises(ValueError, match="lists of strings"):
        role_definitions.permissions_of({"dataActions": "a"})


# --- completion --------------------------------------------------------------------------


def test_completion_tree_follows_the_parser() -> None:
    nodes = {n.path: n for n in completion.walk(build_parser())}
    assert {"role", "setting", "key", "completion"} <= set(nodes[""].commands)
    assert "partition" not in nodes[""].commands  # hidden: no help
    assert nodes["role"].commands == ["assignment", "definition"]
    assert {"--kty", "--hsm-name", "--id", "--data-dir", "-o"} <= set(nodes["key create"].flags)
    assert nodes["key create"].choices["-o"] == ["json", "table", "tsv"]
    assert "--disabled" not in nodes["key create"].valued and "--size" in nodes["key create"].valued


def test_completion_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    bash = capsys.readouterr().out
    assert "complete -F _mhsm mhsm" in bash and "'role assignment'" in bash
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("# zsh")


# --- progress ----------------------------------------------------------------------------


def test_progress_modes() -> None:
    assert (
        progress.progress_mode(parse("backup", "start", "--data-dir", "d", "--dir", "x")) == "auto"
    )
    on = parse("backup", "start", "--data-dir", "d", "--dir", "x", "--progress")
    off = parse("backup", "start", "--data-dir", "d", "--dir", "x", "--no-progress")
    quiet = parse("backup", "start", "--data-dir", "d", "--dir", "x", "--only-show-errors")
    assert [progress.progress_mode(a) for a in (on, off, quiet)] == ["on", "off", "off"]
    assert (
        progress.progress_mode(parse("maintain", "--data-dir", "d", "--only-show-errors")) == "off"
    )


def _read_all(fd: int) -> str:
    """Everything written to the pty so far (the bar's thread may have drawn several frames,
    more than one read returns)."""
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks).decode()


def test_progress_draws_on_a_terminal_only() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as terminal:
            with progress.Progress("backup", progress.AUTO, terminal, unit="records") as bar:
                bar.update("running", done=5, total=10)
            drawn = _read_all(master)
    finally:
        os.close(master)
        os.close(slave)
    assert "\rbackup [###############...............] 5/10 records running" in drawn
    assert drawn.endswith("\r\n")  # the terminal's newline; the bar keeps its line
    log = io.StringIO()
    with progress.Progress("backup", progress.AUTO, log) as bar:
        bar.update("running", done=5, total=10)
    assert log.getvalue() == ""  # not a terminal


def test_forced_progress_and_say(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    with progress.Progress("wait", progress.ON, stream) as bar:
        bar.update("Pending")
        bar.say("a step")
    assert "\rwait " in stream.getvalue() and " Pending " in stream.getvalue()
    assert "\r\x1b[K" in stream.getvalue()  # cleared before the step was printed
    assert capsys.readouterr().out == "a step\n"
    quiet = io.StringIO()
    with progress.Progress("wait", progress.OFF, quiet) as bar:
        bar.update("Pending")
    assert quiet.getvalue() == ""
