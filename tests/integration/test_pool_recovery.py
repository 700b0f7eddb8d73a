"""Disaster recovery into a three-partition pool: the upload lands on one partition, every
partition takes on the uploaded domain, and a healed partition comes back with it."""

from __future__ import annotations

import hashlib
import os
import signal
import ssl
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from dev_pool import free_port, start_pool
from pool_support import PoolProcess
from recovery_support import upload_security_domain

from openmhsm.crypto.jwk import b64u_decode, b64u_encode

DIGEST = hashlib.sha256(b"recovered pool").digest()


def _states(pool: PoolProcess) -> list[str]:
    doc = pool.reload()
    states = []
    with httpx.Client(verify=ssl.create_default_context(cafile=pool.ca), timeout=2) as http:
        for part in doc["partitions"]:
            try:
                states.append(str(http.get(f"{part['url']}/readyz").json()["state"]))
            except (httpx.HTTPError, ValueError):
                states.append("down")
    return states


def _wait_states(pool: PoolProcess, wanted: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _states(pool) == [wanted] * 3:
            return
        time.sleep(0.2)
    raise AssertionError(f"partitions never all {wanted}: {_states(pool)}")


def test_upload_reaches_every_partition_and_survives_a_heal(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    a = start_pool(tmp_path / "a")
    b = PoolProcess(tmp_path / "b", free_port(), ["--recovery"]).start()
    try:
        key = a.key_client().create_ec_key("dr-key", curve="P-256")
        backup = a.key_client().backup_key("dr-key")
        _wait_states(b, "Recovery")

        upload_security_domain(a, b)
        _wait_states(b, "Active")
        b.grant_key_roles()  # --recovery: the admin holds Managed HSM Administrator only

        restored = b.key_client().restore_key_backup(backup)
        assert restored.properties.version == key.properties.version
        victim = b.reload()["partitions"][2]
        os.kill(victim["pid"], signal.SIGKILL)
        b.wait_for(lambda d: d["partitions"][2]["pid"] != victim["pid"], 15)
        _wait_states(b, "Active")

        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(key.key.x or b"", "big"),
            int.from_bytes(key.key.y or b"", "big"),
            ec.SECP256R1(),
        ).public_key()
        token = b.token()
        tls = ssl.create_default_context(cafile=b.ca)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(verify=tls, headers=headers, timeout=30) as http:
            for part in b.reload()["partitions"]:
                signed = http.post(
                    f"{part['url']}/keys/dr-key//sign?api-version=7.6",
                    json={"alg": "ES256", "value": b64u_encode(DIGEST)},
                )
                assert signed.status_code == 200, (part, signed.text)
                raw = b64u_decode(signed.json()["value"])
                signature = utils.encode_dss_signature(
                    int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
                )
                public.verify(signature, DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    finally:
        b.stop()
        a.stop()
