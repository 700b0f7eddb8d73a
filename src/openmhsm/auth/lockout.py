"""Back-off on repeated failed client authentication at the token endpoints (issue 10).

Two counters are kept for every attempt that checks a secret: one for the client id *as sent from
that source address*, and one for the address alone (an address that tries many client ids).
After `threshold` failures of a counter, further attempts are refused without a secret check
for a delay that doubles with every further failure (`first_delay`, then 2x, 4x... up to
`max_delay`). A success clears the client id's counter; a counter with no failure for
`forget_after` seconds starts again. Concurrent attempts per counter are capped too, so a burst
cannot get many scrypt checks in before its first failure is counted.

Keying the client-id counter by address as well is deliberate: a stranger who knows a client id
cannot lock its application out from elsewhere (Entra ID's "smart lockout" does the same). Secrets
are 256-bit random values, so guessing one is hopeless anyway: the back-off bounds the CPU that
scrypt checks of wrong secrets cost, and it makes a misbehaving client visible.

The same rules apply whether or not the client id exists, so a refusal reveals nothing about it.
State is in memory, per partition: a pool of three partitions allows up to three times the
threshold before every partition backs off, and a restart forgets. Behind a proxy (the HAProxy
front door) every client shares the proxy's address, and the address counter with it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

log = logging.getLogger(__name__)

THRESHOLD = 5  # failures of one client id from one address before it backs off
ADDRESS_THRESHOLD = 20  # failures from one address, over all client ids
FIRST_DELAY = 2.0
MAX_DELAY = 900.0
FORGET_AFTER = 900.0  # seconds without a failure after which a counter starts again
MAX_PENDING = 4  # concurrent secret checks per client id and address
MAX_PENDING_ADDRESS = 16
MAX_TRACKED = 10_000
_MAX_CLIENT_ID = 64  # longer ids are never valid; keep what is tracked small
_IPV6_PREFIX = 64  # one IPv6 host usually holds a whole /64
_CLIENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class LockedOut(Exception):
    """The attempt is refused without a check; the client may try again in `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(slots=True)
class _Counter:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0
    pending: int = 0


@dataclass(frozen=True, slots=True)
class _Rule:
    threshold: int
    max_pending: int
    cleared_by_success: bool


_Tracked = list[tuple[str, _Counter, _Rule]]


class Attempt:
    """One admitted secret check; `settle` it with the outcome (a context manager releases it
    uncounted if the check itself failed, for example on a storage error)."""

    def __init__(self, lockout: Lockout, counters: _Tracked) -> None:
        self._lockout = lockout
        self._counters = counters
        self._open = True

    def settle(self, succeeded: bool) -> None:
        """Count the outcome of the check (once; later calls do nothing)."""
        if self._open:
            self._open = False
            self._lockout._settle(self._counters, succeeded)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._open:
            self._open = False
            for _, counter, _ in self._counters:
                counter.pending -= 1


class Lockout:
    """The back-off state of one partition's token endpoints."""

    def __init__(
        self,
        now: Callable[[], float] = time.monotonic,
        *,
        threshold: int = THRESHOLD,
        address_threshold: int = ADDRESS_THRESHOLD,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        forget_after: float = FORGET_AFTER,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        if not 0 < threshold < address_threshold:
            raise ValueError("need 0 < threshold < address_threshold")
        self.now = now
        self._pair = _Rule(threshold, MAX_PENDING, cleared_by_success=True)
        self._address = _Rule(address_threshold, MAX_PENDING_ADDRESS, cleared_by_success=False)
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_tracked = max_tracked
        self._counters: OrderedDict[str, _Counter] = OrderedDict()

    def admit(self, client_id: str, address: str | None) -> Attempt:
        """Admit one secret check for `client_id` from `address`. Raises `LockedOut`."""
        source = _source(address)
        folded = client_id.strip().lower()[:_MAX_CLIENT_ID]
        # Only what has a client id's shape is logged: a secret sent as the id by mistake is not.
        shown = folded if _CLIENT_ID.fullmatch(folded) else "(not a client id)"
        keys = [
            (f"{source} {folded}", f"client id {shown} from {source}", self._pair),
            (source, f"address {source}", self._address),
        ]
        now = self.now()
        counters = [(label, self._counter(key, now), rule) for key, label, rule in keys]
        wait = max(counter.blocked_until - now for _, counter, _ in counters)
        if wait > 0:
            raise LockedOut(max(1, math.ceil(wait)))
        if any(counter.pending >= rule.max_pending for _, counter, rule in counters):
            raise LockedOut(1)
        for _, counter, _ in counters:
            counter.pending += 1
        return Attempt(self, counters)

    def _settle(self, counters: _Tracked, succeeded: bool) -> None:
        now = self.now()
        for label, counter, rule in counters:
            counter.pending -= 1
            if not succeeded:
                self._count_failure(label, counter, rule, now)
            elif rule.cleared_by_success:
                counter.failures, counter.blocked_until = 0, 0.0

    def _count_failure(self, label: str, counter: _Counter, rule: _Rule, now: float) -> None:
        counter.failures += 1
        counter.last_failure = now
        beyond = counter.failures - rule.threshold
        if beyond >= 0:
            delay = min(self.max_delay, self.first_delay * 2 ** min(beyond, 32))
            counter.blocked_until = now + delay
            log.warning(
                "client authentication backs off for %.0f s after %d failures: %s",
                delay,
                counter.failures,
                label,
            )

    def _counter(self, key: str, now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is None:
            self._make_room(now)
            counter = self._counters[key] = _Counter()
        elif self._stale(counter, now):
            counter.failures, counter.blocked_until = 0, 0.0
        self._counters.move_to_end(key)
        return counter

    def _stale(self, counter: _Counter, now: float) -> bool:
        return (
            counter.pending == 0
            and now >= counter.blocked_until
            and now - counter.last_failure > self.forget_after
        )

    def _make_room(self, now: float) -> None:
        if len(self._counters) < self.max_tracked:
            return
        for key in [k for k, c in self._counters.items() if self._stale(c, now)]:
            del self._counters[key]
        while len(self._counters) >= self.max_tracked:
            self._counters.popitem(last=False)  # least recently used


def _source(address: str | None) -> str:
    """The address as tracked: an IPv6 address by its /64; a socket path or the like as one."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "other"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{_IPV6_PREFIX}", strict=False))
    return str(ip)
