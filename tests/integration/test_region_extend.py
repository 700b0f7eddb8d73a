"""Issue 8: `mhsm region add` extends a running three-partition pool to a second region on this
machine (its own etcd, the pool's CA, the primary's security domain over the join protocol),
which serves reads and crypto from its replica, forwards writes to the primary and shows them
at once, accepts the primary's tokens, reports its lag in `/metrics`, and leaves nothing behind
on `region remove`."""

from __future__ import annotations

import hashlib
import os
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dev_pool import DevPool, free_port
from keys_support import raw_to_der, release_connections, sdk_key_client
from pool_support import PoolProcess, child_pids, kill_leftovers, mhsm, runs
from region_support import extended_view, wait_for_key

pytestmark = pytest.mark.integration

DIGEST = hashlib.sha256(b"regions").digest()


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolProcess]:
    started = PoolProcess(tmp_path_factory.mktemp("primary") / "pool", free_port()).start()
    try:
        yield started
    finally:
        started.stop()


def verify_with_primary(primary_keys: KeyClient, name: str, signature: bytes) -> None:
    jwk = primary_keys.get_key(name).key
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), ec.SECP256R1()
    ).public_key()
    public.verify(raw_to_der(signature), DIGEST, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_extended_region_serves_replicates_refuses_writes_and_goes_away(
    primary: PoolProcess, tmp_path: Path
) -> None:
    region_dir = tmp_path / "region"
    with sdk_key_client(primary) as primary_keys:
        primary_keys.create_ec_key("before-region", curve="P-256")
        added = mhsm("region", "add", "--primary", str(primary.data_dir),
                     "--data-dir", str(region_dir), "--port", str(free_port()))  # fmt: skip
        assert added.code == 0, added.stdout + added.stderr + _log(region_dir)
        region = extended_view(region_dir)
        pids = [pid for pid in [region.doc["pid"], *child_pids(region.doc)] if pid]
        try:
            exercise(primary, primary_keys, region, region_dir, pids)
        finally:
            removed = mhsm("region", "remove", "--data-dir", str(region_dir))
            leftovers = kill_leftovers(pids, str(region_dir.resolve()))
        assert removed.code == 0, removed.stdout + removed.stderr
        assert not leftovers, f"processes outlived the region: {leftovers}"
        assert not region_dir.exists()
        assert not any(runs(pid, str(region_dir.resolve())) for pid in pids)
        primary_keys.get_key("before-region")  # the primary is untouched


def exercise(
    primary: PoolProcess, primary_keys: KeyClient, region: DevPool, region_dir: Path,
    pids: list[int],
) -> None:  # fmt: skip
    assert region.url != primary.url
    assert Path(region.ca).read_bytes() == Path(primary.ca).read_bytes()  # one pool, one CA
    assert region.doc["regions"] == [region.url, primary.url]
    # The domain secrets came over the join protocol and were sealed at once: no security-domain
    # files here, and each partition holds its own sealed copy.
    assert not (region_dir / "security-domain").exists()
    assert all((region_dir / "partitions" / str(n) / "sealed").exists() for n in range(3))
    with sdk_key_client(region) as keys, region.credential() as credential:
        # Keys written before the region existed are there, and sign with the primary's key.
        key = keys.get_key("before-region")
        with CryptographyClient(key, credential, connection_verify=region.ca) as crypto:
            signed = crypto.sign(SignatureAlgorithm.es256, DIGEST)
        verify_with_primary(primary_keys, "before-region", signed.signature)

        # A key created on the primary afterwards appears within seconds.
        primary_keys.create_ec_key("after-region", curve="P-256")
        wait_for_key(keys, "after-region")

        # A write through the region goes to the primary, and the region shows it at once.
        written = keys.create_ec_key("written-to-region", curve="P-256", tags={"via": "region"})
        assert written.id.startswith(region.url + "/keys/written-to-region/")
        assert keys.get_key("written-to-region").properties.tags == {"via": "region"}
        assert primary_keys.get_key("written-to-region").id.endswith(written.properties.version)
        updated = keys.update_key_properties("written-to-region", tags={"via": "both"})
        assert keys.get_key("written-to-region").properties.tags == updated.properties.tags
        with pytest.raises(HttpResponseError) as refused:  # the primary's errors come back whole
            keys.create_key("written-to-region", "nonsense")
        assert refused.value.status_code == 400
        assert refused.value.response.json()["error"]["code"] == "BadParameter"
        del refused

        # A token of the primary is good in the region (one pool: a client keeps it across a
        # failover), and the other way round.
        with (
            primary.credential() as primary_credential,
            KeyClient(region.url, primary_credential, connection_verify=region.ca) as crossing,
        ):
            assert crossing.get_key("after-region").name == "after-region"
            crossing.create_ec_key("crossing", curve="P-256")
        assert primary_keys.get_key("crossing").name == "crossing"

        metrics = _metrics(region)
        assert "openmhsm_replication_lag_seconds " in metrics
        assert "openmhsm_replication_lag_revisions " in metrics
        status = mhsm("status", "--data-dir", str(region_dir), "--output", "json")
        assert status.code == 0, status.stdout + status.stderr
        assert status.json()["region"]["primary_url"] == primary.url
        assert status.json()["region"]["role"] == "extended"

        # Replication lives in the supervisor: a killed partition changes nothing.
        killed = region.doc["partitions"][0]["pid"]
        os.kill(killed, signal.SIGKILL)
        primary_keys.create_ec_key("after-kill", curve="P-256")
        wait_for_key(keys, "after-kill")
        pids.append(_wait_healed(region_dir, killed))

        # A stopped region resumes from its checkpoint and catches up when started again.
        assert mhsm("down", "--data-dir", str(region_dir)).code == 0
        primary_keys.create_ec_key("while-down", curve="P-256")
        restarted = mhsm("up", "--data-dir", str(region_dir), "--detach")
        assert restarted.code == 0, restarted.stdout + restarted.stderr + _log(region_dir)
        doc = extended_view(region_dir).doc
        pids.extend(pid for pid in [doc["pid"], *child_pids(doc)] if pid)
        wait_for_key(keys, "while-down")
    release_connections()


def _wait_healed(data_dir: Path, killed: int) -> int:
    """The pid of the partition that replaced `killed`, once the supervisor lists it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = extended_view(data_dir).doc["partitions"][0]["pid"]
        if pid and pid != killed:
            return int(pid)
        time.sleep(0.1)
    raise AssertionError("the killed partition was not replaced")


def _metrics(pool: DevPool) -> str:
    with httpx.Client(verify=ssl.create_default_context(cafile=pool.ca), timeout=5) as http:
        response = http.get(f"{pool.url}/metrics")
    assert response.status_code == 200, response.text
    return response.text


def _log(data_dir: Path) -> str:
    log = data_dir / "logs" / "mhsm.log"
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""
