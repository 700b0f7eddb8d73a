"""release_policy: Azure's secure key release policy grammar against attestation claims."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openmhsm.crypto.jwk import b64u_encode
from openmhsm.services.release_policy import PolicyError, allows, find_claim, load_policy

MAA = "https://sharedweu.weu.attest.azure.net"
OTHER = "https://other.attest.test"
SNP_CLAIMS = {
    "iss": MAA,
    "x-ms-attestation-type": "sevsnpvm",
    "x-ms-isolation-tee": {
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-cvm",
        "x-ms-sevsnpvm-is-debuggable": False,
        "x-ms-sevsnpvm-guestsvn": 7,
    },
    "sdk-test": True,
    "x-ms-ver": "1.0",
}
# The confidential-VM policy of Azure's secure key release documentation.
CVM_POLICY = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": MAA,
            "allOf": [
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                {
                    "claim": "x-ms-isolation-tee.x-ms-compliance-status",
                    "equals": "azure-compliant-cvm",
                },
            ],
        }
    ],
}


def policy(*conditions: dict[str, Any], authority: str = MAA, combinator: str = "allOf") -> Any:
    return {"version": "1.0.0", "anyOf": [{"authority": authority, combinator: list(conditions)}]}


def stored(document: Any, **fields: Any) -> dict[str, Any]:
    data = b64u_encode(json.dumps(document).encode())
    return {
        "contentType": "application/json; charset=utf-8",
        "immutable": False,
        "data": data,
        **fields,
    }


def test_the_confidential_vm_policy() -> None:
    assert allows(CVM_POLICY, MAA, SNP_CLAIMS)
    assert allows(CVM_POLICY, MAA + "/", SNP_CLAIMS)
    tampered = {**SNP_CLAIMS, "x-ms-isolation-tee": {"x-ms-attestation-type": "sevsnpvm"}}
    assert not allows(CVM_POLICY, MAA, tampered)


def test_only_authorities_of_the_tokens_issuer_count() -> None:
    assert not allows(CVM_POLICY, OTHER, SNP_CLAIMS)
    other = policy({"claim": "sdk-test", "equals": True}, authority=OTHER)
    two = {"version": "1.0.0", "anyOf": [*CVM_POLICY["anyOf"], *other["anyOf"]]}
    assert allows(two, OTHER, SNP_CLAIMS)
    assert allows(two, MAA, SNP_CLAIMS)
    assert allows(
        policy({"claim": "sdk-test", "equals": True}, authority=MAA.upper()), MAA, SNP_CLAIMS
    )  # scheme and host compare case-insensitively...
    shouting_path = policy({"claim": "sdk-test", "equals": True}, authority=MAA + "/TENANT")
    assert not allows(shouting_path, MAA + "/tenant", SNP_CLAIMS)  # ...the path exactly


def test_numbers_that_are_no_numbers_do_not_compare() -> None:
    for value in ("1_0", " ", 10**400, "1e999"):
        assert not allows(policy({"claim": "n", "greater": 5}), MAA, {"n": value})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"claim": "x-ms-attestation-type", "equals": "sevsnpvm"}, True),
        ({"claim": "x-ms-attestation-type", "equals": "SEVSNPVM"}, False),
        ({"claim": "sdk-test", "equals": "true"}, True),  # Azure's SDK tests compare so
        ({"claim": "sdk-test", "equals": "TRUE"}, True),
        ({"claim": "sdk-test", "equals": "false"}, False),
        ({"claim": "sdk-test", "equals": 1}, False),
        ({"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-guestsvn", "equals": "7"}, True),
        ({"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-guestsvn", "equals": 7.0}, True),
        ({"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable", "equals": False}, True),
        ({"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable", "notEquals": True}, True),
        ({"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-guestsvn", "greaterOrEquals": 7}, True),
        ({"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-guestsvn", "greater": 7}, False),
        ({"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-guestsvn", "less": "8"}, True),
        ({"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-guestsvn", "lessOrEquals": 6}, False),
        ({"claim": "x-ms-ver", "greater": "0.9"}, True),
        ({"claim": "x-ms-attestation-type", "greater": 1}, False),
        ({"claim": "x-ms-isolation-tee", "exists": True}, True),
        ({"claim": "x-ms-missing", "exists": True}, False),
        ({"claim": "x-ms-missing", "exists": False}, True),
        ({"claim": "x-ms-missing", "equals": None}, False),
        ({"claim": "x-ms-missing", "notEquals": "x"}, False),
        ({"claim": "sdk-test", "condition": "equals", "value": "true"}, True),  # version 0.2
        (
            {
                "anyOf": [
                    {"claim": "x-ms-missing", "exists": True},
                    {"claim": "sdk-test", "equals": True},
                ]
            },
            True,
        ),
        (
            {
                "allOf": [
                    {"claim": "x-ms-missing", "exists": True},
                    {"claim": "sdk-test", "equals": True},
                ]
            },
            False,
        ),
    ],
)
def test_conditions(condition: dict[str, Any], expected: bool) -> None:
    assert allows(policy(condition), MAA, SNP_CLAIMS) is expected


def test_any_of_at_the_authority() -> None:
    either = policy(
        {"claim": "x-ms-missing", "exists": True},
        {"claim": "sdk-test", "equals": True},
        combinator="anyOf",
    )
    assert allows(either, MAA, SNP_CLAIMS)
    assert not allows(either, MAA, {"sdk-test": False})


def test_dotted_names_prefer_literal_keys() -> None:
    claims = {"a.b": {"c": 1}, "a": {"b": {"c": 2}, "b.c": 3}, "x": {"y": [1]}}
    assert find_claim(claims, "a.b.c") == 1
    assert find_claim({"a": {"b": {"c": 2}, "b.c": 3}}, "a.b.c") == 3
    assert find_claim({"a": {"b": {"c": 2}}}, "a.b.c") == 2
    assert find_claim(claims, "x.y") == [1]
    assert find_claim(claims, "x.y.z") is find_claim(claims, "nothing")


@pytest.mark.parametrize(
    "document",
    [
        {"version": "1.0.0"},
        {"version": "1.0.0", "anyOf": []},
        {"version": "1.0.0", "anyOf": [{"allOf": []}]},
        {"version": "1.0.0", "anyOf": [{"authority": MAA}]},
        {"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": []}]},
        {"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": [], "anyOf": []}]},
        policy({"claim": "sdk-test", "matches": "t.*"}),
        policy({"claim": "sdk-test", "equals": True, "notEquals": False}),
        policy({"claim": "", "equals": True}),
        policy({"claim": "sdk-test", "exists": "yes"}),
        policy({"allOf": "not a list"}),
        policy({"claim": "sdk-test", "equals": True}, "not a condition"),  # type: ignore[arg-type]
        # another authority's malformed conditions fail the whole policy
        {"version": "1.0.0", "anyOf": [CVM_POLICY["anyOf"][0], {"authority": OTHER, "allOf": []}]},
    ],
)
def test_malformed_policies_raise(document: Any) -> None:
    with pytest.raises(PolicyError):
        allows(document, MAA, SNP_CLAIMS)


def test_deep_nesting_is_refused() -> None:
    condition: dict[str, Any] = {"claim": "sdk-test", "equals": True}
    for _ in range(40):
        condition = {"allOf": [condition]}
    with pytest.raises(PolicyError):
        allows(policy(condition), MAA, SNP_CLAIMS)


def test_load_policy() -> None:
    assert load_policy(stored(CVM_POLICY)) == CVM_POLICY
    assert load_policy(stored({"anyOf": []}, contentType="application/json")) == {"anyOf": []}
    for version in ("1.0", "0.2"):
        assert load_policy(stored({**CVM_POLICY, "version": version}))["version"] == version


@pytest.mark.parametrize(
    "release_policy",
    [
        None,
        {"contentType": "application/json", "data": None},
        stored(CVM_POLICY, contentType="text/plain"),
        stored({**CVM_POLICY, "version": "2.0.0"}),
        stored([CVM_POLICY]),
        {"contentType": "application/json", "data": b64u_encode(b"{not json")},
        {"contentType": "application/json", "data": b64u_encode(b"[" * 100_000)},
        {"contentType": "application/json", "data": "not*base64"},
    ],
)
def test_load_policy_refuses(release_policy: Any) -> None:
    with pytest.raises(PolicyError):
        load_policy(release_policy)
