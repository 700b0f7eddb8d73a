"""The etcd transaction of one `Storage.txn` call, and the rule that makes a retried write
idempotent: each Txn's failure branch reads back every key it touches, and a retry whose compare
fails is still a success when every Put's key holds exactly our bytes at one mod_revision and
every Delete's key is gone (sealed records have random nonces, so equal bytes are our write)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aetcd import rpc  # type: ignore[import-untyped]

from openmhsm.storage.base import Entry, Put, TxnOp


def entry_of(kv: Any) -> Entry:
    return Entry(kv.key.decode(), bytes(kv.value), int(kv.mod_revision))


def txn_request(ops: Sequence[TxnOp]) -> Any:
    compares = []
    success = []
    for op in ops:
        key = op.key.encode()
        if op.expected_revision == 0:
            compares.append(_compare(key, "VERSION", version=0))
        elif op.expected_revision is not None:
            compares.append(_compare(key, "MOD", mod_revision=op.expected_revision))
        if isinstance(op, Put):
            success.append(rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=op.value)))
        else:
            success.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key)))
    failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=op.key.encode())) for op in ops]
    return rpc.TxnRequest(compare=compares, success=success, failure=failure)


def _compare(key: bytes, target: str, **value: int) -> Any:
    return rpc.Compare(
        key=key,
        target=rpc.Compare.CompareTarget.Value(target),
        result=rpc.Compare.CompareResult.Value("EQUAL"),
        **value,
    )


def failure_state(ops: Sequence[TxnOp], response: Any) -> dict[str, Entry | None]:
    """Each op's key -> its entry, from the failure branch's ranges (same order as `ops`)."""
    found: dict[str, Entry | None] = {}
    for op, result in zip(ops, response.responses, strict=True):
        kvs = result.response_range.kvs
        found[op.key] = entry_of(kvs[0]) if kvs else None
    return found


def committed_revision(
    ops: Sequence[TxnOp], found: dict[str, Entry | None], header_revision: int
) -> int | None:
    """The revision at which an earlier attempt of `ops` committed, judged from the keys' state,
    or None when that state is not exactly what `ops` wrote."""
    revisions = set()
    for op in ops:
        entry = found[op.key]
        if isinstance(op, Put):
            if entry is None or entry.value != op.value:
                return None
            revisions.add(entry.mod_revision)
        elif entry is not None:
            return None
    if len(revisions) > 1:
        return None
    return revisions.pop() if revisions else header_revision


def conflict_message(ops: Sequence[TxnOp], found: dict[str, Entry | None]) -> str:
    lost = []
    for op in ops:
        entry = found[op.key]
        actual = entry.mod_revision if entry is not None else 0
        if op.expected_revision is not None and op.expected_revision != actual:
            lost.append(f"{op.key}: expected revision {op.expected_revision}, found {actual}")
    return "; ".join(lost) or "a compare failed"
