"""The chaos checker: after the faults have healed, read the pool back and compare it with the
workload's journal (`workload.py`).

For every key the journal's operations are replayed in order (one worker owns a key, so they are
sequential); only the last one can be in doubt. The pool must show
- every acknowledged version (a key's version list holds them all, and at most one version more,
  only if a create or rotate was in doubt);
- an acknowledged delete as deleted (and an acknowledged purge as gone);
- the last acknowledged tags and enabled flag on the current version, unless a later write of the
  key was in doubt, which may have set its own;
- no effect of a write it refused (a deleted key stays deleted with its tags; an assignment keeps
  its role);
and every acknowledged role assignment (present with its role, or gone once its delete was
acknowledged). Reads are checked against the last acknowledged state too: a `read` that returns
an older version or tags is a stale read, and how long before the read began the first write it
missed was acknowledged is its age (a state never acknowledged has no bound). Partitions serve
reads from their caches (DESIGN §2), as fresh as their etcd watch: a read that reaches another
partition a moment before the watch event of a write just acknowledged is stale by that moment,
and one whose etcd member hangs lags until its watch leaves the member. `unbounded_stale_reads`
accepts a stale read younger than STEADY_STALE_BOUND, or younger than STALE_READ_BOUND under a
fault.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.administration import KeyVaultAccessControlClient
from azure.keyvault.keys import KeyClient
from journal import Outcome
from workload import ASSIGN_SCOPE

from openmhsm.auth.roles import CRYPTO_USER
from openmhsm.client import credential_from_pool

KEY_OPS = frozenset({"create", "rotate", "update", "delete", "purge", "read"}) | {
    "refused_create",
    "refused_update",
}
ASSIGNMENT_OPS = frozenset({"assign", "unassign", "refused_assign"})
REFUSED_OPS = frozenset({"refused_create", "refused_update", "refused_assign"})
# IncompleteReadError: the answer's head came, its body was cut off by the crash.
CONNECTION_ERRORS = frozenset(
    {"ServiceResponseError", "ServiceRequestError", "IncompleteReadError"}
)
NOT_RESENT = frozenset({"POST", "PATCH"})  # by azure-core's default policy, after such errors


def in_flight_on_crash(o: Outcome, crash_phases: set[str]) -> bool:
    """Whether a client-visible error is one DESIGN §2 leaves to the caller: a POST or PATCH
    whose connection broke while a partition crashed, which azure-core's default policy does not
    send again because it may have been applied."""
    kind = str(o.detail.get("error", "")).split(":", 1)[0]
    crashed = bool({o.phase, o.phase_end} & crash_phases)
    if retried_delete_found_done(o):
        return crashed  # `_check_key` checks that the key is indeed deleted
    return (
        o.method in NOT_RESENT
        and o.detail.get("status") is None
        and kind in CONNECTION_ERRORS
        and crashed
    )


# How far behind a partition's cache may be under a fault: the watch asks a quiet member for
# progress after 0.25 s and leaves it after 1 s more (storage/etcd.py), then resumes elsewhere;
# a slowed link adds its queueing delay.
STALE_READ_BOUND = 2.0
# Without a fault: the race between a watch event and a client's next request to another
# partition, which the watch normally wins by milliseconds.
STEADY_STALE_BOUND = 0.1


def retried_delete_found_done(o: Outcome) -> bool:
    """A key DELETE answered 404: azure-core sends a DELETE again after its connection broke,
    and when the first attempt was applied before its partition died, the second finds the key
    already deleted. Key Vault's DELETE is not idempotent; the caller sees the 404."""
    return o.op == "delete" and o.status == "error" and o.detail.get("status") == 404


@dataclass
class Report:
    operations: int = 0
    acknowledged_writes: int = 0
    refused_writes: int = 0
    in_doubt_writes: int = 0
    errors: list[Outcome] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    refused_applied: list[str] = field(default_factory=list)
    stale_reads: list[str] = field(default_factory=list)
    stale_read_ages: list[tuple[str, float]] = field(default_factory=list)  # (phase, seconds)
    by_op: dict[str, Counter[str]] = field(default_factory=dict)
    keys_checked: int = 0
    assignments_checked: int = 0

    def unexplained_errors(self, crash_phases: set[str]) -> list[Outcome]:
        """The client-visible errors that are not `in_flight_on_crash`."""
        return [o for o in self.errors if not in_flight_on_crash(o, crash_phases)]

    def unbounded_stale_reads(self, bound: float) -> list[str]:
        """The stale reads not explained: one that missed a write acknowledged more than `bound`
        seconds before it began (STEADY_STALE_BOUND in steady traffic)."""
        return [
            text
            for text, (phase, age) in zip(self.stale_reads, self.stale_read_ages, strict=True)
            if age > (STEADY_STALE_BOUND if phase == "steady" else bound)
        ]

    def error_summary(self) -> dict[str, int]:
        """Client-visible errors by `phase | op | error`, the error text cut at its first line."""
        return dict(
            Counter(
                f"{o.phase} | {o.method} {o.op} | {str(o.detail.get('error', o.detail))[:160]}"
                for o in self.errors
            )
        )

    def figures(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "acknowledged_writes": self.acknowledged_writes,
            "refused_writes": self.refused_writes,
            "in_doubt_writes": self.in_doubt_writes,
            "client_visible_errors": len(self.errors),
            "acknowledged_writes_lost": len(self.lost),
            "refused_writes_applied": len(self.refused_applied),
            "stale_reads": len(self.stale_reads),
            "stale_read_max_age_seconds": round(
                max((a for _, a in self.stale_read_ages), default=0), 3
            ),
            "keys_checked": self.keys_checked,
            "assignments_checked": self.assignments_checked,
            "by_op": {op: dict(c) for op, c in sorted(self.by_op.items())},
        }


@dataclass
class KeyModel:
    """What the acknowledged operations say a key must look like now."""

    name: str
    versions: list[str] = field(default_factory=list)
    current: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = True
    deleted: bool = False
    purged: bool = False
    in_doubt: Outcome | None = None
    # (version, tags, when acknowledged) of each state the acknowledged writes left, in order
    history: list[tuple[str | None, dict[str, str], float]] = field(default_factory=list)

    def age_of(self, version: str, tags: dict[str, str], started: float) -> float:
        """How long before `started` the first write after the state (version, tags) was
        acknowledged; infinite for a state no acknowledged write left."""
        seen = [i for i, (v, t, _) in enumerate(self.history) if (v, t) == (version, tags)]
        if not seen or seen[-1] + 1 >= len(self.history):
            return math.inf
        return started - self.history[seen[-1] + 1][2]


def check(
    outcomes: Iterable[Outcome], keys: KeyClient, access: KeyVaultAccessControlClient
) -> Report:
    """Compare the pool with the journal; reads through `keys` and `access`."""
    outcomes = sorted(outcomes, key=lambda o: (o.worker, o.seq))
    report = Report(operations=len(outcomes))
    for o in outcomes:
        report.by_op.setdefault(o.op, Counter())[o.status] += 1
        if o.status == "error":
            report.errors.append(o)
        if o.write:
            report.acknowledged_writes += o.status == "ack" and o.op not in REFUSED_OPS
            report.refused_writes += o.status == "refused"
            report.in_doubt_writes += o.status == "error"
        if o.op in REFUSED_OPS and o.status == "ack":
            report.refused_applied.append(f"{o.op} {o.target} was acknowledged: {o.detail}")
    by_key: dict[str, list[Outcome]] = defaultdict(list)
    by_assignment: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.op in KEY_OPS:
            by_key[o.target].append(o)
        elif o.op in ASSIGNMENT_OPS:
            by_assignment[o.target].append(o)
    for name, ops in sorted(by_key.items()):
        _check_key(_replay(name, ops, report), keys, report)
        report.keys_checked += 1
    for name, ops in sorted(by_assignment.items()):
        _check_assignment(name, ops, access, report)
        report.assignments_checked += 1
    return report


def _replay(name: str, ops: list[Outcome], report: Report) -> KeyModel:
    model = KeyModel(name)
    for o in ops:
        if model.in_doubt is not None:
            report.lost.append(f"{name}: workload bug, {o.op} after an in-doubt write")
        if o.status == "error":
            if o.write:
                model.in_doubt = o
            continue
        if o.status == "refused":
            continue
        d = o.detail
        if o.op in ("create", "rotate"):
            model.versions.append(d["version"])
            model.current = d["version"]
            model.tags, model.enabled = d["tags"], d["enabled"]
            model.history.append((model.current, model.tags, o.ended))
        elif o.op == "update":
            model.tags, model.enabled = d["tags"], d["enabled"]
            model.history.append((model.current, model.tags, o.ended))
        elif o.op == "delete":
            model.deleted = True
        elif o.op == "purge":
            model.purged = True
        elif o.op == "read" and (d["version"], d["tags"]) != (model.current, model.tags):
            age = model.age_of(d["version"], d["tags"], o.started)
            report.stale_reads.append(
                f"{name} (worker {o.worker} op {o.seq}, {o.phase}): read {d['version']} "
                f"{d['tags']}, last acknowledged {model.current} {model.tags} {age:.3f} s before"
            )
            report.stale_read_ages.append((o.phase, age))
    return model


def _check_key(model: KeyModel, keys: KeyClient, report: Report) -> None:
    doubt = model.in_doubt.op if model.in_doubt is not None else None
    name = model.name
    live = _get(lambda: keys.get_key(name))
    deleted = _get(lambda: keys.get_deleted_key(name))
    if model.purged:
        if live is not None or deleted is not None:
            report.lost.append(f"{name}: purge acknowledged, key still there")
        return
    if model.deleted:
        if live is not None:
            report.lost.append(f"{name}: delete acknowledged, key live again ({doubt=})")
        elif deleted is None:
            if doubt != "purge":
                report.lost.append(f"{name}: delete acknowledged, deleted key missing")
        elif (deleted.properties.version, dict(deleted.properties.tags or {})) != (
            model.current,
            model.tags,
        ):
            report.lost.append(
                f"{name}: deleted key is {deleted.properties.version} {deleted.properties.tags}, "
                f"expected {model.current} {model.tags}"
            )
        return
    if model.in_doubt is not None and retried_delete_found_done(model.in_doubt):
        if live is not None or deleted is None:
            report.lost.append(f"{name}: a retried delete was told 404, but the key is not deleted")
        return
    if live is None:
        if doubt == "delete" and deleted is not None:
            return
        if model.current is None and doubt == "create":
            return  # the first create was in doubt and did not happen
        report.lost.append(f"{name}: acknowledged key missing ({doubt=})")
        return
    listed = {v.version for v in keys.list_properties_of_key_versions(name)}
    missing = [v for v in model.versions if v not in listed]
    if missing:
        report.lost.append(f"{name}: acknowledged versions missing: {missing}")
    extra = listed - set(model.versions)
    new_version = doubt in ("create", "rotate") and len(extra) == 1
    if len(extra) > (1 if doubt in ("create", "rotate") else 0):
        report.refused_applied.append(f"{name}: versions nobody was told of: {sorted(extra)}")
    allowed = [(model.current, model.tags, model.enabled)]
    if doubt == "update":
        assert model.in_doubt is not None
        d = model.in_doubt.detail
        allowed.append((model.current, d["tags"], d["enabled"]))
    if new_version:
        assert model.in_doubt is not None
        tags = model.in_doubt.detail.get("tags") if doubt == "create" else model.tags
        allowed.append((next(iter(extra)), tags, True))
    seen = (live.properties.version, dict(live.properties.tags or {}), live.properties.enabled)
    if seen not in allowed:
        report.lost.append(f"{name}: current is {seen}, expected one of {allowed}")


def _check_assignment(
    name: str, ops: list[Outcome], access: KeyVaultAccessControlClient, report: Report
) -> None:
    present = False
    may_be_either = False
    for o in ops:
        if o.status == "ack" and o.op == "assign":
            present, may_be_either = True, False
        elif o.status == "ack" and o.op == "unassign":
            present, may_be_either = False, False
        elif o.status == "error" and o.op in ("assign", "unassign"):
            may_be_either = True
    found = _get(lambda: access.get_role_assignment(ASSIGN_SCOPE, name))
    if found is not None and not found.properties.role_definition_id.endswith(CRYPTO_USER):
        report.refused_applied.append(
            f"assignment {name}: role is {found.properties.role_definition_id}"
        )
    if may_be_either or (found is not None) == present:
        return
    what = "acknowledged assignment missing" if present else "acknowledged unassign undone"
    report.lost.append(f"assignment {name}: {what}")


def _get(call: Any) -> Any:
    try:
        return call()
    except ResourceNotFoundError:
        return None


def check_pool(doc: dict[str, Any], outcomes: Iterable[Outcome]) -> Report:
    """`check` through SDK clients of the pool that `doc` (pool.json) describes."""
    with (
        credential_from_pool(doc) as credential,
        KeyClient(doc["url"], credential, connection_verify=doc["ca_cert"]) as keys,
        KeyVaultAccessControlClient(
            doc["url"], credential, connection_verify=doc["ca_cert"]
        ) as access,
    ):
        return check(outcomes, keys, access)


def summary(errors: list[Outcome]) -> list[str]:
    """One line per client-visible error, for an assertion's message."""
    return [f"{o.phase} | {o.method} {o.op} | {o.detail}" for o in errors]
