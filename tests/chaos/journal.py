"""The journal of a chaos run: every operation the workload's clients ran and how it ended.

- `ack`: the pool answered success; for a write, the outcome keeps the state it acknowledged.
- `refused`: the pool answered the 4xx the worker expected (a write that must take no effect).
- `error`: anything else the client saw (an exception after the SDK's retries, or an unexpected
  status): a client-visible error. A write that ends so is in doubt: it may or may not have been
  applied.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The HTTP method of each operation's request: azure-core's default policy never sends a POST or
# PATCH again after a connection error (it may have reached the server).
METHOD = {
    "sign": "POST",
    "unwrap": "POST",
    "read": "GET",
    "create": "POST",
    "rotate": "POST",
    "update": "PATCH",
    "delete": "DELETE",
    "purge": "DELETE",
    "assign": "PUT",
    "unassign": "DELETE",
    "refused_create": "POST",
    "refused_update": "PATCH",
    "refused_assign": "PUT",
    "delete_wait": "GET",  # the delete poller's reads of the deleted key
}


@dataclass
class Outcome:
    """One operation as the client saw it. `detail` holds what the checker needs: for a key write
    the acknowledged `version`, `tags`, `enabled`; for an assignment its `role`; for a refusal
    or error the `status` and `error` text."""

    worker: int
    seq: int
    op: str
    target: str
    status: str  # "ack" | "refused" | "error"
    phase: str  # the fault under way when the operation began
    phase_end: str  # ... and when it ended
    started: float
    ended: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def write(self) -> bool:
        return self.op in WRITES

    @property
    def method(self) -> str:
        return METHOD[self.op]


@dataclass
class Journal:
    """Every outcome, in the order operations ended; `phase` names the fault under way."""

    outcomes: list[Outcome] = field(default_factory=list)
    phase: str = "setup"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "error"]

    def save(self, report: Path, figures: dict[str, Any]) -> None:
        """Write `figures` to `report` as JSON and every outcome next to it (`.journal.jsonl`),
        for a post-mortem."""
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(figures, indent=2) + "\n")
        with report.with_suffix(".journal.jsonl").open("w") as journal:
            for o in self.outcomes:
                journal.write(json.dumps(vars(o) | {"method": o.method}) + "\n")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


READS = frozenset({"sign", "unwrap", "read", "delete_wait"})
WRITES = frozenset(METHOD) - READS
