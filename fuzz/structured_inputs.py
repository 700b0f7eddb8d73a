"""Inputs built from fuzzer bytes, shared by the targets: arbitrary JSON values, and valid
templates (JSON, DER) with a few parts changed, so that a fuzzer gets past a parser's first checks
and into the deep ones.

A target reads an input that starts with STRUCTURED (a byte no document starts with) as choices,
through `atheris.FuzzedDataProvider`, and any other input as the document itself. Once the bytes
run out, each choice reads 0, which here always means "keep the template as it is": a short input
gives a valid document, and the fuzzer spends its mutations on what to break.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

import atheris

MAX_DEPTH = 4  # nesting of generated lists and objects (deeper nesting comes from `Nested`)
MAX_NESTING = 3000  # deep enough for any recursion limit, short enough for any size limit
RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")  # DER of 1.2.840.113549.1.1.1
STRUCTURED = b"\xff"  # not UTF-8, and no JSON, token, header or record file starts with it
_ODD_TEXT = ("", "=", "+/", "A", "AA==", "\u00e9", "\ud800", " ", ".", "..", "\x00")


def choices(data: bytes) -> atheris.FuzzedDataProvider | None:
    """The choices an input starting with STRUCTURED holds; None for a document."""
    return atheris.FuzzedDataProvider(data[1:]) if data[:1] == STRUCTURED else None


@dataclass(frozen=True)
class Nested:
    """`depth` nested JSON arrays, written as text: json.dumps cannot write them itself."""

    depth: int


def b64u(data: bytes) -> str:
    """base64url without padding, as JWK and JWS fields are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def loaded(data: bytes) -> object:
    """The JSON value of `data`, or None when it is not JSON (the json module is not under test)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def to_json(value: object) -> str:
    """JSON text of a value from `json_value` or `perturbed` (ASCII: non-ASCII is escaped)."""
    if isinstance(value, Nested):
        return "[" * value.depth + "]" * value.depth
    if isinstance(value, dict):
        fields = (f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items())
        return "{" + ",".join(fields) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    return json.dumps(value)


def json_value(
    fdp: atheris.FuzzedDataProvider, names: Sequence[str] = (), depth: int = 0
) -> object:
    """Any JSON value: every type, huge and negative integers, NaN and infinities, lone
    surrogates, base64url text, deep nesting; object keys mostly taken from `names`."""
    kind = fdp.ConsumeIntInRange(0, 10)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeIntInRange(-2, 70_000)
    if kind == 3:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 600))
    if kind == 4:
        return fdp.ConsumeFloat()
    if kind == 5:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 64))
    if kind == 6:
        return b64u(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600)))
    if kind == 7:
        return Nested(fdp.ConsumeIntInRange(1, MAX_NESTING))
    if depth >= MAX_DEPTH:
        return fdp.PickValueInList(list(_ODD_TEXT))
    if kind == 8:
        return [json_value(fdp, names, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {
        _name(fdp, names): json_value(fdp, names, depth + 1)
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    }


def perturbed(
    template: object, fdp: atheris.FuzzedDataProvider, names: Sequence[str] = (), depth: int = 0
) -> object:
    """`template` with parts kept, dropped, added, nudged or replaced, as the input chooses."""
    choice = fdp.ConsumeIntInRange(0, 15)
    if choice == 15:
        return json_value(fdp, names, depth)
    if choice == 14:
        return _nudged(template, fdp)
    if isinstance(template, dict):
        out = {
            key: perturbed(value, fdp, names, depth + 1)
            for key, value in template.items()
            if fdp.ConsumeIntInRange(0, 15) != 15  # drop this field
        }
        if fdp.ConsumeIntInRange(0, 15) == 15:
            out[_name(fdp, names)] = json_value(fdp, names, depth + 1)
        return out
    if isinstance(template, list):
        items = [
            perturbed(item, fdp, names, depth + 1)
            for item in template
            if fdp.ConsumeIntInRange(0, 15) != 15  # drop this item
        ]
        if items and fdp.ConsumeIntInRange(0, 15) == 15:
            items.append(items[fdp.ConsumeIntInRange(0, len(items) - 1)])
        return items
    return template


def perturbed_bytes(data: bytes, fdp: atheris.FuzzedDataProvider) -> bytes:
    """`data` as it is, or with one byte changed, cut short, extended, or replaced entirely."""
    choice = fdp.ConsumeIntInRange(0, 7)
    if choice == 0 or not data:
        return data
    if choice <= 2:
        at = fdp.ConsumeIntInRange(0, len(data) - 1)
        return data[:at] + bytes([fdp.ConsumeIntInRange(0, 255)]) + data[at + 1 :]
    if choice <= 4:
        return data[: fdp.ConsumeIntInRange(0, len(data) - 1)]
    if choice == 5:
        return data + fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2 * len(data)))


def der_changed(der: bytes, fdp: atheris.FuzzedDataProvider) -> bytes:
    """A certificate's DER perturbed, or its RSA key algorithm renamed to a sibling OID of the same
    length (RSA-PSS, or one no library knows): a byte flip alone would take ages to hit one."""
    if fdp.ConsumeIntInRange(0, 3) == 3 and RSA_ENCRYPTION_OID in der:
        sibling = RSA_ENCRYPTION_OID[:-1] + bytes([fdp.ConsumeIntInRange(0, 0x7F)])
        return der.replace(RSA_ENCRYPTION_OID, sibling, 1)
    return perturbed_bytes(der, fdp)


def _name(fdp: atheris.FuzzedDataProvider, names: Sequence[str]) -> str:
    if names and fdp.ConsumeBool():
        return str(fdp.PickValueInList(list(names)))
    return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 12))


def _nudged(value: object, fdp: atheris.FuzzedDataProvider) -> object:
    """A value next to `value`: the edge cases of its own type, or its text."""
    if isinstance(value, bool):
        return fdp.PickValueInList([not value, int(value), None])
    if isinstance(value, int):
        edges = [0, 1, -1, 2, value - 1, value + 1, -value, 2**63, 10**400, str(value)]
        return fdp.PickValueInList([*edges, float(value), float("inf"), float("nan")])
    if isinstance(value, str):
        cut = fdp.ConsumeIntInRange(0, len(value))
        small = b64u(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3)))  # base64url of 0..3 bytes
        odd = fdp.PickValueInList(list(_ODD_TEXT))
        return fdp.PickValueInList([value[:cut], value + odd, odd + value, small, value.upper()])
    if isinstance(value, list):
        return fdp.PickValueInList([[], value * 2, value[::-1], {}])
    if isinstance(value, dict):
        return fdp.PickValueInList([{}, [], list(value.values())])
    return fdp.PickValueInList(list(_ODD_TEXT))
