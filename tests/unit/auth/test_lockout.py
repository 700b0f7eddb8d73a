"""Back-off on failed client authentication: the counters alone, then the token endpoints."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

from openmhsm.auth.identity import identity_routes
from openmhsm.auth.lockout import FIRST_DELAY, THRESHOLD, LockedOut, Lockout
from openmhsm.auth.tokens import TokenService
from openmhsm.services.principals import PrincipalStore, identity_header
from openmhsm.storage.memory import MemoryStorage

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
HOST = "hsm.example.test:8443"
RESOURCE = "https://example.test:8443"
CLIENT = "11111111-2222-4333-8444-555555555555"
ADDRESS = "192.0.2.7"


class Ticks:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fail(lockout: Lockout, client_id: str = CLIENT, address: str = ADDRESS) -> None:
    lockout.admit(client_id, address).settle(False)


def wait_of(lockout: Lockout, client_id: str = CLIENT, address: str = ADDRESS) -> int:
    with pytest.raises(LockedOut) as refused:
        lockout.admit(client_id, address)
    return refused.value.retry_after


def test_backs_off_after_threshold_then_doubles() -> None:
    ticks = Ticks()
    lockout = Lockout(ticks, threshold=3, address_threshold=10, first_delay=2, max_delay=16)
    for _ in range(2):
        fail(lockout)
    lockout.admit(CLIENT, ADDRESS).settle(False)  # the third failure starts the back-off
    assert wait_of(lockout) == 2
    ticks.t += 2
    fail(lockout)
    assert wait_of(lockout) == 4
    ticks.t += 4
    fail(lockout)
    assert wait_of(lockout) == 8
    for _ in range(4):
        ticks.t += 16
        fail(lockout)
    assert wait_of(lockout) == 16  # capped


def test_refused_attempts_are_not_counted_and_success_clears() -> None:
    ticks = Ticks()
    lockout = Lockout(ticks, threshold=2, address_threshold=10, first_delay=5)
    fail(lockout)
    fail(lockout)
    for _ in range(10):
        assert wait_of(lockout) == 5
    ticks.t += 5
    lockout.admit(CLIENT, ADDRESS).settle(True)
    fail(lockout)  # one failure after a success: no back-off yet
    lockout.admit(CLIENT, ADDRESS).settle(True)


def test_rounds_retry_after_up() -> None:
    ticks = Ticks()
    lockout = Lockout(ticks, threshold=1, address_threshold=10, first_delay=2)
    fail(lockout)
    ticks.t += 1.5
    assert wait_of(lockout) == 1
    ticks.t += 0.6
    lockout.admit(CLIENT, ADDRESS).settle(True)


def test_client_id_counter_is_per_address_and_case_folded() -> None:
    lockout = Lockout(Ticks(), threshold=2, address_threshold=10)
    fail(lockout, CLIENT.upper())
    fail(lockout, f" {CLIENT} ")
    wait_of(lockout)
    # The same client id from elsewhere is not locked out by a stranger's failures.
    lockout.admit(CLIENT, "198.51.100.1").settle(True)


def test_address_counter_covers_every_client_id() -> None:
    lockout = Lockout(Ticks(), threshold=2, address_threshold=4, first_delay=3)
    for n in range(4):
        fail(lockout, f"client-{n}")
    assert wait_of(lockout, "another-client") == 3
    # A success of one client does not clear the address's record.
    assert wait_of(lockout, CLIENT) == 3
    lockout.admit("x", "203.0.113.9").settle(True)


def test_unknown_and_known_client_ids_back_off_alike() -> None:
    """The lockout never looks a client id up: any string is counted the same way."""
    lockout = Lockout(Ticks(), threshold=2, address_threshold=10, first_delay=7)
    for client_id in (CLIENT, "not-a-client"):
        fail(lockout, client_id)
        fail(lockout, client_id)
        assert wait_of(lockout, client_id) == 7


def test_ipv6_addresses_count_by_slash_64() -> None:
    lockout = Lockout(Ticks(), threshold=2, address_threshold=3)
    fail(lockout, "a", "2001:db8::1")
    fail(lockout, "b", "2001:db8::2")
    fail(lockout, "c", "2001:db8::ffff:3")
    wait_of(lockout, "d", "2001:db8::4")
    lockout.admit("d", "2001:db8:0:1::4").settle(True)
    lockout.admit("d", "::ffff:192.0.2.1").settle(True)  # a v4-mapped address is its own


def test_counters_are_forgotten_after_quiet_period() -> None:
    ticks = Ticks()
    lockout = Lockout(ticks, threshold=2, address_threshold=10, forget_after=60)
    fail(lockout)
    ticks.t += 61
    fail(lockout)  # the first failure is forgotten: still under the threshold
    lockout.admit(CLIENT, ADDRESS).settle(True)


def test_concurrent_checks_are_capped() -> None:
    lockout = Lockout(Ticks())
    attempts = [lockout.admit(CLIENT, ADDRESS) for _ in range(4)]
    assert wait_of(lockout) == 1
    with attempts[0]:
        pass  # released without an outcome (the check itself failed): not a failure
    attempts[1].settle(True)
    lockout.admit(CLIENT, ADDRESS).settle(True)


def test_tracking_is_bounded() -> None:
    lockout = Lockout(Ticks(), threshold=1, address_threshold=2, max_tracked=10)
    for n in range(100):
        fail(lockout, f"c{n}", f"10.0.0.{n % 250}")
    assert len(lockout._counters) <= 10


def test_logs_the_back_off_but_never_what_is_not_a_client_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A secret sent in the client id field by mistake must not reach the log."""
    lockout = Lockout(Ticks(), threshold=1, address_threshold=10)
    with caplog.at_level(logging.WARNING, logger="openmhsm.auth.lockout"):
        fail(lockout, CLIENT.upper())
        fail(lockout, "a-secret-in-the-wrong-field\nsecond line")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert CLIENT in messages[0] and ADDRESS in messages[0]
    assert "a-secret" not in messages[1] and "not a client id" in messages[1]


# --- through the token endpoints ---------------------------------------------------------------


class Pool:
    def __init__(self) -> None:
        self.ticks = Ticks()
        self.tokens = TokenService(
            ec.generate_private_key(ec.SECP256R1()), f"https://x/{TENANT}/v2.0", ClockAt(self)
        )
        self.principals = PrincipalStore(MemoryStorage(), ClockAt(self), scrypt_n=2**4)
        self.lockout = Lockout(self.ticks)
        routes = identity_routes(
            self.tokens, self.principals, TENANT, lambda a: a == RESOURCE, self.lockout
        )
        self.app = Starlette(routes=routes)
        self.sp, self.secret = asyncio.run(self.principals.create("app"))


class ClockAt:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def now(self) -> float:
        return 1_700_000_000.0 + self.pool.ticks.t


@pytest.fixture
def pool() -> Pool:
    return Pool()


@pytest.fixture
def client(pool: Pool) -> Iterator[TestClient]:
    with TestClient(pool.app, base_url=f"https://{HOST}") as c:
        yield c


def token(client: TestClient, client_id: str, secret: str) -> tuple[int, dict[str, str], str]:
    form = {
        "client_id": client_id,
        "client_secret": secret,
        "grant_type": "client_credentials",
        "scope": RESOURCE + "/.default",
    }
    r = client.post(f"/{TENANT}/oauth2/v2.0/token", data=form)
    return r.status_code, dict(r.headers), r.text


@pytest.mark.parametrize("known", [True, False])
def test_token_endpoint_backs_off(client: TestClient, pool: Pool, known: bool) -> None:
    client_id = pool.sp.client_id if known else "00000000-0000-4000-8000-000000000000"
    for _ in range(THRESHOLD):
        assert token(client, client_id, "wrong-secret")[0] == 401
    status, headers, text = token(client, client_id, "wrong-secret")
    assert status == 429 and headers["retry-after"] == str(int(FIRST_DELAY))
    assert "invalid_client" in text and "AADSTS50053" in text
    assert "wrong-secret" not in text
    if known:  # even the right secret waits out the back-off, then works
        assert token(client, client_id, pool.secret)[0] == 429
        pool.ticks.t += FIRST_DELAY
        assert token(client, client_id, pool.secret)[0] == 200
        assert token(client, client_id, "wrong-secret")[0] == 401  # the count starts again


def test_token_lockout_is_the_same_for_known_and_unknown_ids(pool: Pool) -> None:
    """Status, headers (but the date) and body of a refusal do not depend on existence."""
    answers = []
    for client_id in (pool.sp.client_id, "00000000-0000-4000-8000-000000000000"):
        with TestClient(pool.app, base_url=f"https://{HOST}") as c:
            for _ in range(THRESHOLD):
                token(c, client_id, "wrong-secret")
            status, headers, text = token(c, client_id, "wrong-secret")
        headers.pop("date", None)
        answers.append((status, headers, text))
    assert answers[0] == answers[1]


def test_msi_endpoint_backs_off(client: TestClient, pool: Pool) -> None:
    params = {"api-version": "2019-08-01", "resource": RESOURCE}
    wrong = identity_header(pool.sp.client_id, "wrong-secret")
    for _ in range(THRESHOLD):
        r = client.get("/msi/token", params=params, headers={"X-IDENTITY-HEADER": wrong})
        assert r.status_code == 401
    right = identity_header(pool.sp.client_id, pool.secret)
    r = client.get("/msi/token", params=params, headers={"X-IDENTITY-HEADER": right})
    assert r.status_code == 429 and r.headers["retry-after"] == str(int(FIRST_DELAY))
    assert r.json()["statusCode"] == 429  # App Service's shape, which MSAL shows
