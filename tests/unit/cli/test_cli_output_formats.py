"""`--output json|table|tsv` and the `ERROR: (Code) message` line: the shared logic in
`cli/output.py`, and its use by the commands. No processes or sockets."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from openmhsm.cli import output
from openmhsm.cli.main import build_parser, main

ROWS = [
    {"name": "a", "value": "true", "type": "boolean", "nested": {"x": 1}},
    {"name": "longer-name", "value": "false", "type": "boolean", "nested": {"x": 22}},
]


def emitted(capsys: pytest.CaptureFixture[str], result: Any, fmt: str, **kw: Any) -> str:
    output.emit(result, fmt, **kw)
    return capsys.readouterr().out


def test_json_is_indented_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    out = emitted(capsys, ROWS, "json", columns=("name",))
    assert json.loads(out) == ROWS  # columns never trim JSON
    assert out.startswith("[\n  {")


def test_table_of_a_list_has_a_header_and_aligned_columns(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = emitted(capsys, ROWS, "table", columns=("name", "value")).splitlines()
    assert lines == ["name         value", "a            true", "longer-name  false"]


def test_table_without_columns_flattens_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    header = emitted(capsys, ROWS, "table").splitlines()[0].split()
    assert header == ["name", "value", "type", "nested.x"]


def test_table_of_an_object_is_field_value_rows(capsys: pytest.CaptureFixture[str]) -> None:
    rows = dict(line.split(None, 1) for line in emitted(capsys, ROWS[1], "table").splitlines())
    assert rows == {"name": "longer-name", "value": "false", "type": "boolean", "nested.x": "22"}


def test_tsv_is_values_only(capsys: pytest.CaptureFixture[str]) -> None:
    out = emitted(capsys, ROWS, "tsv", columns=("name", "type", "value"))
    assert out == "a\tboolean\ttrue\nlonger-name\tboolean\tfalse\n"
    assert emitted(capsys, ROWS[0], "tsv", columns=("value",)) == "true\n"


def test_nested_lists_of_objects_are_compact_json_cells(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = emitted(capsys, {"permissions": [{"dataActions": ["a"]}]}, "tsv")
    assert out == '{"dataActions":["a"]}\n'


class FakeResponse:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status_code = status
        self.reason = "Not Found"
        self.headers = {"content-type": "application/json"}
        self._body = json.dumps(body).encode()
        self.request = None

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode()

    def body(self) -> bytes:
        return self._body


def service_error(code: str, message: str, status: int = 404) -> HttpResponseError:
    body = {"error": {"code": code, "message": message}}
    return HttpResponseError(response=FakeResponse(status, body))  # type: ignore[arg-type]


def test_error_line_is_az_shaped() -> None:
    error = service_error("KeyNotFound", "A key with (name/id) k1 was not found in this HSM.")
    assert output.error_line(error) == (
        "ERROR: (KeyNotFound) A key with (name/id) k1 was not found in this HSM."
    )
    assert output.error_message(error).startswith("(KeyNotFound) ")


def test_error_lines_are_one_line() -> None:
    assert output.error_line(service_error("BadParameter", "first\nsecond", 400)) == (
        "ERROR: (BadParameter) first"
    )
    assert output.error_line(ValueError("bad flag\nmore")) == "ERROR: bad flag"
    assert output.error_line(ServiceRequestError("connection refused\ndetail")) == (
        "ERROR: connection refused"
    )


def test_a_command_prints_error_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from openmhsm.cli import settings

    def refuse(_: object) -> object:
        raise service_error("Forbidden", "Operation get is not allowed.", 403)

    monkeypatch.setattr(settings, "connect", refuse)
    code = main(["setting", "list", "--data-dir", "d"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == "ERROR: (Forbidden) Operation get is not allowed.\n"
    assert "Traceback" not in err


def test_main_reports_service_errors_of_any_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(_: argparse.Namespace) -> int:
        raise service_error("Conflict", "busy", 409)

    parser = build_parser()
    args = parser.parse_args(["status", "--data-dir", "d"])
    args.run = run
    monkeypatch.setattr("openmhsm.cli.main.build_parser", lambda: _FixedParser(args))
    assert main([]) == 1
    assert capsys.readouterr().err == "ERROR: (Conflict) busy\n"


class _FixedParser:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def parse_args(self, argv: object) -> argparse.Namespace:
        return self.args


@pytest.mark.parametrize(
    "argv",
    [
        ["key", "list", "--data-dir", "d"],
        ["key", "show", "--data-dir", "d", "-n", "k"],
        ["principal", "list", "--data-dir", "d"],
        ["setting", "list", "--data-dir", "d"],
        ["role", "assignment", "list", "--data-dir", "d"],
        ["role", "definition", "list", "--data-dir", "d"],
        ["backup", "list", "--data-dir", "d"],
        ["pool", "list-deleted"],
        ["security-domain", "wait", "--data-dir", "d"],
    ],
)
@pytest.mark.parametrize("fmt", ["json", "table", "tsv"])
def test_every_result_command_takes_the_three_formats(argv: list[str], fmt: str) -> None:
    for flag in ("--output", "-o"):
        assert build_parser().parse_args([*argv, flag, fmt]).output == fmt
    assert build_parser().parse_args([*argv, "--only-show-errors"]).only_show_errors


def test_defaults_are_kept() -> None:
    assert build_parser().parse_args(["key", "list", "--data-dir", "d"]).output == "json"
    assert build_parser().parse_args(["status", "--data-dir", "d"]).output == "table"
    assert build_parser().parse_args(["status", "--data-dir", "d", "-o", "json"]).output == "json"
