"""The chaos checker on made-up journals and a fake pool (no processes): it must find a lost
write, a refused write that took effect and a stale read, and accept what an in-doubt write may
have left either way. Without this, a checker that finds nothing would pass the chaos test."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from checker import check, in_flight_on_crash
from journal import Outcome

from openmhsm.auth.roles import CRYPTO_AUDITOR, CRYPTO_USER


@dataclass
class FakeKey:
    versions: list[str]
    tags: dict[str, str]
    enabled: bool = True
    deleted: bool = False


@dataclass
class FakePool:
    """Just enough of KeyClient and KeyVaultAccessControlClient for the checker."""

    keys: dict[str, FakeKey] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)

    def _key(self, name: str, deleted: bool) -> Any:
        key = self.keys.get(name)
        if key is None or key.deleted != deleted:
            raise ResourceNotFoundError(f"{name} not found")
        props = SimpleNamespace(version=key.versions[-1], tags=key.tags, enabled=key.enabled)
        return SimpleNamespace(properties=props)

    def get_key(self, name: str) -> Any:
        return self._key(name, deleted=False)

    def get_deleted_key(self, name: str) -> Any:
        return self._key(name, deleted=True)

    def list_properties_of_key_versions(self, name: str) -> list[Any]:
        return [SimpleNamespace(version=v) for v in self.keys[name].versions]

    def get_role_assignment(self, scope: str, name: str) -> Any:
        if name not in self.roles:
            raise ResourceNotFoundError(name)
        definition = f"Microsoft.KeyVault/providers/roleDefinitions/{self.roles[name]}"
        return SimpleNamespace(properties=SimpleNamespace(role_definition_id=definition))


def journal(*ops: tuple[str, str, str, dict[str, Any]]) -> list[Outcome]:
    return [
        Outcome(0, seq, op, target, status, "steady", "steady", 0.0, 0.0, detail)
        for seq, (op, target, status, detail) in enumerate(ops, 1)
    ]


def made(version: str, op: str, enabled: bool = True) -> dict[str, Any]:
    return {"version": version, "tags": {"op": op}, "enabled": enabled}


HISTORY = journal(
    ("create", "k", "ack", made("v1", "1")),
    ("update", "k", "ack", {"version": "v1", "tags": {"op": "2"}, "enabled": False}),
    ("rotate", "k", "ack", made("v2", "2")),
    ("read", "k", "ack", {"version": "v2", "tags": {"op": "2"}}),
    ("create", "gone", "ack", made("g1", "5")),
    ("delete", "gone", "ack", {}),
    ("refused_create", "gone", "refused", {"status": 409}),
    ("assign", "a1", "ack", {"role": CRYPTO_USER}),
    ("refused_assign", "a1", "refused", {"status": 409}),
)


def healthy_pool() -> FakePool:
    live = FakeKey(["v1", "v2"], {"op": "2"})
    gone = FakeKey(["g1"], {"op": "5"}, deleted=True)
    return FakePool(keys={"k": live, "gone": gone}, roles={"a1": CRYPTO_USER})


def test_a_pool_that_kept_everything_passes() -> None:
    report = check(HISTORY, healthy_pool(), healthy_pool())
    assert (report.lost, report.refused_applied, report.stale_reads) == ([], [], [])
    assert report.acknowledged_writes == 6 and report.refused_writes == 2
    assert report.keys_checked == 2 and report.assignments_checked == 1


def test_a_lost_version_is_found() -> None:
    pool = healthy_pool()
    pool.keys["k"].versions = ["v2"]
    assert "acknowledged versions missing: ['v1']" in check(HISTORY, pool, pool).lost[0]


def test_lost_tags_and_an_undone_delete_are_found() -> None:
    pool = healthy_pool()
    pool.keys["k"].tags = {"op": "1"}
    pool.keys["gone"].deleted = False
    lost = check(HISTORY, pool, pool).lost
    assert len(lost) == 2 and "delete acknowledged, key live again" in lost[0]


def test_refused_writes_that_took_effect_are_found() -> None:
    pool = healthy_pool()
    pool.keys["k"].versions.append("v3")  # a version nobody was told of
    pool.roles["a1"] = CRYPTO_AUDITOR
    report = check(HISTORY, pool, pool)
    assert len(report.refused_applied) == 2


def test_a_lost_assignment_is_found() -> None:
    pool = healthy_pool()
    del pool.roles["a1"]
    assert check(HISTORY, pool, pool).lost == ["assignment a1: acknowledged assignment missing"]


def test_a_stale_read_is_found() -> None:
    history = [*HISTORY]
    history[3] = journal(("read", "k", "ack", {"version": "v1", "tags": {"op": "1"}}))[0]
    history[3].seq = 4
    assert len(check(history, healthy_pool(), healthy_pool()).stale_reads) == 1


def test_a_stale_read_is_bounded_only_under_a_fault_and_when_young() -> None:
    history = [*HISTORY]
    history[2] = replace(HISTORY[2], ended=10.0)  # the rotate to v2 was acknowledged at 10 s
    stale = journal(("read", "k", "ack", {"version": "v1", "tags": {"op": "2"}}))[0]
    stale.seq = 4
    for phase, started, unbounded in [
        ("etcd leader SIGSTOP", 10.5, 0),  # half a second behind, under a hung member
        ("etcd leader SIGSTOP", 13.0, 1),  # three seconds behind: beyond the bound
        ("steady", 10.05, 0),  # the watch event a moment late
        ("steady", 10.5, 1),  # no fault: no more than that
    ]:
        stale.phase, stale.started = phase, started
        history[3] = stale
        report = check(history, healthy_pool(), healthy_pool())
        assert report.stale_read_ages == [(phase, pytest.approx(started - 10.0))]
        assert len(report.unbounded_stale_reads(2.0)) == unbounded


def test_a_stale_read_is_aged_from_the_first_write_it_missed() -> None:
    history = [*HISTORY]
    history[0] = replace(HISTORY[0], ended=1.0)  # v1 {"op": "1"}
    history[1] = replace(HISTORY[1], ended=4.0)  # v1 {"op": "2"}: the first write it missed
    history[2] = replace(HISTORY[2], ended=10.0)  # v2
    for detail, age in [
        ({"version": "v1", "tags": {"op": "1"}}, 6.5),
        ({"version": "v9", "tags": {}}, math.inf),  # a state no acknowledged write left
    ]:
        read = replace(HISTORY[3], detail=detail, phase="etcd leader SIGSTOP", started=10.5)
        report = check([*history[:3], read, *history[4:]], healthy_pool(), healthy_pool())
        assert report.stale_read_ages == [("etcd leader SIGSTOP", age)]
        assert len(report.unbounded_stale_reads(2.0)) == 1


def test_an_in_doubt_write_may_have_happened_or_not() -> None:
    error = {"status": None, "error": "ServiceResponseError: connection aborted"}
    history = [*HISTORY, *journal(*[("x", "x", "x", {})] * 9, ("rotate", "k", "error", error))[9:]]
    pool = healthy_pool()
    assert check(history, pool, pool).lost == []
    pool.keys["k"].versions.append("v3")  # the rotate did happen
    report = check(history, pool, pool)
    assert (report.lost, report.refused_applied, report.in_doubt_writes) == ([], [], 1)
    pool.keys["k"].versions.append("v4")  # but only once
    assert check(history, pool, pool).refused_applied != []


def test_only_connection_errors_of_posts_and_patches_in_a_crash_are_explained() -> None:
    error = {"status": None, "error": "ServiceResponseError: connection aborted"}
    (post,) = journal(("sign", "s", "error", error))
    post.phase = "partition SIGKILL"
    assert in_flight_on_crash(post, {"partition SIGKILL"})
    assert not in_flight_on_crash(post, {"mhsm maintain"})
    cut = {"status": None, "error": "IncompleteReadError: ('Connection broken: IncompleteRead"}
    (patch,) = journal(("update", "k", "error", cut))
    patch.phase = "partition SIGKILL"
    assert in_flight_on_crash(patch, {"partition SIGKILL"})  # its body cut off by the crash
    (get,) = journal(("read", "k", "error", error))
    get.phase = "partition SIGKILL"
    assert not in_flight_on_crash(get, {"partition SIGKILL"})
    (status,) = journal(("sign", "s", "error", {"status": 500, "error": "HttpResponseError: 500"}))
    status.phase = "partition SIGKILL"
    assert not in_flight_on_crash(status, {"partition SIGKILL"})


def test_a_retried_delete_told_404_must_have_deleted_the_key() -> None:
    made = {"version": "v1", "tags": {}, "enabled": True}
    told_404 = {"status": 404, "error": "ResourceNotFoundError: (KeyNotFound) not found"}
    ops = journal(("create", "k", "ack", made), ("delete", "k", "error", told_404))
    ops[1].phase = "partition SIGKILL"
    assert in_flight_on_crash(ops[1], {"partition SIGKILL"})
    assert not in_flight_on_crash(ops[1], {"mhsm maintain"})
    deleted = FakePool(keys={"k": FakeKey(["v1"], {}, deleted=True)})
    assert check(ops, deleted, deleted).lost == []
    live = FakePool(keys={"k": FakeKey(["v1"], {})})
    assert check(ops, live, live).lost == [
        "k: a retried delete was told 404, but the key is not deleted"
    ]
