"""The scheduler with the clock shifted (issue 7): a pool restarted 31 days later (`mhsm up
--clock-offset`) rotates the key whose policy says so, once, with the policy's expiry, and
purges the deleted key whose 7-day retention has ended, purge protection notwithstanding."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
import time
from pathlib import Path

import httpx
import pytest
from azure.keyvault.keys import (
    KeyClient,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
)
from dev_pool import DevPool, free_port
from pool_support import PoolProcess

pytestmark = pytest.mark.integration
DAY = 86400


def _wait_for(check: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("the scheduler did not act in time")


def test_rotation_and_purge_when_time_has_passed(tmp_path: Path) -> None:
    pool = DevPool(tmp_path / "pool", free_port(), ["--retention-days", "7", "--purge-protection"])
    pool.start()
    try:
        with pool.key_client() as client:
            key = client.create_ec_key("rotating")
            rotate = KeyRotationLifetimeAction(
                KeyRotationPolicyAction.rotate, time_after_create="P30D"
            )
            policy = KeyRotationPolicy(lifetime_actions=[rotate], expires_in="P90D")
            client.update_key_rotation_policy("rotating", policy)
            client.create_ec_key("kept")
            client.create_ec_key("gone")
            client.begin_delete_key("gone").wait()
            time.sleep(2.5)  # a few scheduler rounds: nothing is due yet
            assert len(list(client.list_properties_of_key_versions("rotating"))) == 1
    finally:
        pool.stop()

    later = DevPool(pool.data_dir, pool.port, ["--clock-offset", str(31 * DAY)])
    later.start()
    try:
        with later.key_client() as client:
            _wait_for(lambda: _versions(client, "rotating") == 2)
            _wait_for(lambda: [d.name for d in client.list_deleted_keys()] == [])
            current = client.get_key("rotating")
            assert current.properties.version != key.properties.version
            created, expires = current.properties.created_on, current.properties.expires_on
            assert created is not None and expires is not None
            assert (expires - created).total_seconds() == 90 * DAY
            time.sleep(2.5)  # more rounds: the new version is new, nothing more to do
            assert _versions(client, "rotating") == 2
            assert _versions(client, "kept") == 1
    finally:
        later.stop()


def _versions(client: KeyClient, name: str) -> int:
    return len(list(client.list_properties_of_key_versions(name)))


def _leaders(pool: PoolProcess) -> list[int]:
    """The pids of the partitions whose scheduler says it leads."""
    found = []
    tls = ssl.create_default_context(cafile=pool.ca)
    with httpx.Client(verify=tls, timeout=2) as http:
        for part in pool.reload()["partitions"]:
            try:
                text = http.get(f"{part['url']}/metrics").text
            except httpx.HTTPError:
                continue
            if re.search(r"^openmhsm_scheduler_leader 1$", text, re.MULTILINE):
                found.append(int(part["pid"]))
    return found


def test_the_scheduler_survives_the_loss_of_its_partition(tmp_path: Path) -> None:
    pool = PoolProcess(tmp_path / "pool", free_port()).start()
    try:
        _wait_for(lambda: len(_leaders(pool)) == 1)
        (leader,) = _leaders(pool)
        os.kill(leader, signal.SIGSTOP)  # hung: it holds the lease but renews it no more
        try:
            _wait_for(lambda: [p for p in _leaders(pool) if p != leader] != [], timeout=40)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leader, signal.SIGCONT)
        _wait_for(lambda: len(_leaders(pool)) == 1, timeout=30)  # one leader again
    finally:
        pool.stop()
