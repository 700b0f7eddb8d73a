"""RS256 and ES256 sign throughput through the API of a dev pool against raw `cryptography`
on the same machine, measured in one run. Prints a table of ratios."""

from __future__ import annotations

import hashlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from benchmarks.load import measure
from benchmarks.pool_process import start_pool
from openmhsm.crypto.jwk import b64u_encode

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
DIGEST = hashlib.sha256(b"benchmark").digest()


def raw_rate(sign: Callable[[], object], threads: int, seconds: float) -> float:
    """Signatures per second from `threads` threads calling `sign` (the GIL is released)."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            sign()
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def main() -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    raw = {
        "RS256": lambda: rsa_key.sign(DIGEST, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())),
        "ES256": lambda: ec_key.sign(DIGEST, ec.ECDSA(utils.Prehashed(hashes.SHA256()))),
    }
    with tempfile.TemporaryDirectory() as tmp:
        proc, _, doc = start_pool(Path(tmp), "--dev")
        try:
            admin = doc["admin"]
            assert isinstance(admin, dict)
            ca = str(doc["ca_cert"])
            cred = ClientSecretCredential(
                str(doc["tenant_id"]),
                admin["client_id"],
                admin["client_secret"],
                authority=str(doc["authority"]),
                disable_instance_discovery=True,
                connection_verify=ca,
            )
            client = KeyClient(str(doc["url"]), cred, connection_verify=ca)
            client.create_rsa_key("bench-rsa", size=2048, hardware_protected=True)
            client.create_ec_key("bench-ec", curve="P-256", hardware_protected=True)
            token = cred.get_token(f"{doc['resource']}/.default").token
            rows = []
            for alg, key in (("RS256", "bench-rsa"), ("ES256", "bench-ec")):
                one = raw_rate(raw[alg], 1, SECONDS)
                two = raw_rate(raw[alg], 2, SECONDS)
                body = {"alg": alg, "value": b64u_encode(DIGEST)}
                path = f"/keys/{key}//sign?api-version=7.6"
                load = measure(str(doc["url"]), ca, token, path, body, SECONDS)
                rows.append((alg, one, two, load))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    print(
        f"\nSign throughput, dev pool (1 partition), {SECONDS:.0f} s per measurement, "
        f"{os.cpu_count()} cores; load from {rows[0][3].generator}, which shares the cores."
    )
    print(
        f"{'alg':6} {'raw 1 thr/s':>12} {'raw 2 thr/s':>12} {'API/s':>9} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6} {'API/raw2':>9} {'client CPU s':>12}"
    )
    for alg, one, two, load in rows:
        print(
            f"{alg:6} {one:12.0f} {two:12.0f} {load.rate:9.0f} "
            f"{load.p50_ms:7.1f} {load.p99_ms:7.1f} "
            f"{load.errors:6d} {load.rate / two:9.2f} {load.client_cpu_seconds:12.1f}"
        )
