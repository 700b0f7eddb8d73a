"""Fuzz target: JWK import (crypto/jwk.py `from_jwk`, trusted or not), the key-import request
checks of services/validation.py, and the verification-key JWKs of auth/external.py.

Contract: `from_jwk`, `b64u_decode` and the validation checks raise only BadParameter;
`public_key_from_jwk` raises nothing (None for a JWK it cannot use). A JWK that `from_jwk`
accepts must survive `private_jwk` -> `from_jwk(trusted=True)`, as a sealed key record does.

    .venv/bin/python fuzz/jwk_target.py -max_total_time=600 /tmp/jwk-corpus fuzz/corpus/jwk
"""

from __future__ import annotations

import base64
import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["openmhsm"]):
    from openmhsm.auth.external import public_key_from_jwk
    from openmhsm.crypto import jwk
    from openmhsm.errors import BadParameter
    from openmhsm.services import validation

from structured_inputs import b64u, choices, der_changed, loaded, perturbed, to_json

SEEDS = Path(__file__).resolve().parent / "corpus" / "jwk"
NAMES = ("kty", "crv", "n", "e", "d", "p", "q", "dp", "dq", "qi", "x", "y", "k", "key_ops", "kid")
NAMES += ("x5c", "use", "alg")
# Every valid seed is also a template for the structured inputs.
TEMPLATES: list[dict[str, Any]] = [
    template
    for path in sorted(SEEDS.glob("*.json"))
    if isinstance(template := loaded(path.read_bytes()), dict)
]
REQUEST = {
    "key": {},
    "Hsm": True,
    "attributes": {"enabled": True, "exportable": False, "nbf": 1_700_000_000, "exp": 2**31},
    "tags": {"purpose": "fuzz"},
    "release_policy": {"contentType": "application/json; charset=utf-8", "data": b64u(b"{}")},
}


def check_jwk(value: Mapping[str, Any]) -> None:
    """Import `value` as a private JWK (trusted too, if the full check refuses it), and read it
    as a verification key."""
    for trusted in (False, True):
        try:
            material = jwk.from_jwk(value, trusted=trusted)
        except BadParameter:
            continue
        assert material.size > 0
        again = jwk.from_jwk(jwk.private_jwk(material), trusted=True)
        assert jwk.public_jwk(again) == jwk.public_jwk(material), "a round trip changed the key"
        break
    public_key_from_jwk(value)


def fields_changed(template: dict[str, Any], fdp: atheris.FuzzedDataProvider) -> dict[str, Any]:
    """Each field of a JWK kept, dropped, or made a tiny integer (0 to 3): the values that break
    RSA and EC arithmetic, which `perturbed` reaches only rarely."""
    out = {}
    for name, value in template.items():
        choice = fdp.ConsumeIntInRange(0, 7)
        if choice == 6:
            continue
        out[name] = b64u(bytes([fdp.ConsumeIntInRange(0, 3)])) if choice == 7 else value
    chain = out.get("x5c")
    if isinstance(chain, list) and chain and fdp.ConsumeBool():
        der = der_changed(base64.b64decode(chain[0]), fdp)
        out["x5c"] = [base64.b64encode(der).decode("ascii")]
    return out


def check_import_request(params: Mapping[str, Any]) -> None:
    """The checks `KeyService.import_key` makes on a request, in its order."""
    try:
        key = validation.check_object(params.get("key"), "key")
        base = validation.base_kty(key.get("kty"))
        validation.optional_bool(params.get("Hsm"), "Hsm")
        validation.check_key_ops(key.get("key_ops"), base)
        attributes = validation.check_object(params.get("attributes"), "attributes")
        validation.optional_bool(attributes.get("enabled"), "attributes.enabled")
        validation.optional_bool(attributes.get("exportable"), "attributes.exportable")
        validation.optional_int(attributes.get("nbf"), "nbf")
        validation.optional_int(attributes.get("exp"), "exp")
        validation.check_release_policy(params.get("release_policy"))
        validation.check_tags(params.get("tags"))
    except BadParameter:
        pass


def check_document(data: bytes) -> None:
    """The bytes as a client sends them: a JWK, or a whole import request (or a JWKS entry)."""
    with contextlib.suppress(BadParameter):
        jwk.b64u_decode(data.decode("utf-8", "replace"))
    value = loaded(data)
    public_key_from_jwk(value)  # a JWKS entry can be any JSON value
    if isinstance(value, dict):
        check_jwk(value)
        check_import_request(value if "key" in value else {"key": value})


def check_built(fdp: atheris.FuzzedDataProvider) -> None:
    """An import request around a valid JWK, both changed as the input chooses."""
    template = fields_changed(fdp.PickValueInList(TEMPLATES), fdp)
    request = loaded(to_json(perturbed({**REQUEST, "key": template}, fdp, NAMES)).encode())
    if isinstance(request, dict):
        if isinstance(request.get("key"), dict):
            check_jwk(request["key"])
        check_import_request(request)


def TestOneInput(data: bytes) -> None:
    fdp = choices(data)
    if fdp is None:
        check_document(data)
    elif TEMPLATES:
        check_built(fdp)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
