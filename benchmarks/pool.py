"""The three-partition pool, measured in one run: sign throughput through the pool endpoint
against one partition's own endpoint, create-key latency, how long the other partitions take to
see a write (watch lag), and time to heal a SIGKILLed partition."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.load import measure
from benchmarks.pool_process import start_pool
from benchmarks.sign_throughput import DIGEST, SECONDS
from openmhsm.client import connect
from openmhsm.crypto.jwk import b64u_encode

API = "api-version=7.6"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def cache_revision(http: httpx.Client, url: str) -> int:
    text = http.get(f"{url}/metrics").text
    match = re.search(r"^openmhsm_cache_revision\s+(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else -1


def ready_count(http: httpx.Client, doc: dict[str, Any]) -> int:
    count = 0
    for part in doc["partitions"]:
        with contextlib.suppress(httpx.HTTPError):
            count += http.get(f"{part['url']}/readyz", timeout=0.5).status_code == 200
    return count


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, data, _ = start_pool(Path(tmp))
        try:
            run(data)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def run(data: Path) -> None:
    clients = connect(data)
    doc = json.loads((data / "pool.json").read_text())
    ca = doc["ca_cert"]
    clients.key_client.create_ec_key("bench-ec", curve="P-256")
    clients.key_client.create_rsa_key("bench-rsa", size=2048)
    token = clients.credential.get_token(doc["resource"] + "/.default").token
    tls = ssl.create_default_context(cafile=ca)
    headers = {"Authorization": f"Bearer {token}"}
    one = doc["partitions"][0]["url"]
    print(
        f"\nPool benchmark: 3 partitions + 3 etcd members on {os.cpu_count()} cores, "
        f"{SECONDS:.0f} s per load; the load generator shares the cores."
    )
    print(
        f"{'operation':22} {'pool/s':>8} {'1 part/s':>9} {'pool/1':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'errors':>6}"
    )
    for alg, key in (("ES256", "bench-ec"), ("RS256", "bench-rsa")):
        body = {"alg": alg, "value": b64u_encode(DIGEST)}
        path = f"/keys/{key}//sign?{API}"
        pool = measure(doc["url"], ca, token, path, body, SECONDS)
        single = measure(one, ca, token, path, body, SECONDS)
        print(
            f"{'sign ' + alg:22} {pool.rate:8.0f} {single.rate:9.0f} "
            f"{pool.rate / single.rate:7.2f} {pool.p50_ms:7.1f} "
            f"{pool.p99_ms:7.1f} {pool.errors + single.errors:6d} {pool.generator}"
        )
    with httpx.Client(base_url=doc["url"], verify=tls, headers=headers, timeout=30) as http:
        latencies = []
        for i in range(200):
            start = time.perf_counter()
            made = http.post(
                f"/keys/bench-create-{i}/create?{API}", json={"kty": "EC-HSM", "crv": "P-256"}
            )
            latencies.append(time.perf_counter() - start)
            assert made.status_code == 200, made.text
        print(
            f"create EC key, sequential: {len(latencies) / sum(latencies):.0f}/s, "
            f"p50 {percentile(latencies, 50) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 99) * 1000:.1f} ms"
        )
        lags = []
        writer, reader = doc["partitions"][0]["url"], doc["partitions"][1]["url"]
        for i in range(50):
            made = http.post(
                f"{writer}/keys/bench-lag-{i}/create?{API}",
                json={"kty": "oct-HSM", "key_size": 128},
            )
            assert made.status_code == 200
            written = cache_revision(http, writer)
            start = time.perf_counter()
            while cache_revision(http, reader) < written:
                pass
            lags.append(time.perf_counter() - start)
        print(
            f"watch lag to another partition: p50 {percentile(lags, 50) * 1000:.1f} ms, "
            f"p99 {percentile(lags, 99) * 1000:.1f} ms (polling /metrics, ~1 ms resolution)"
        )
        heals = []
        for n in range(3):
            victim = json.loads((data / "pool.json").read_text())["partitions"][n]
            os.kill(victim["pid"], signal.SIGKILL)
            killed = time.monotonic()
            time.sleep(0.3)
            while ready_count(http, doc) < 3:
                time.sleep(0.05)
            heals.append(time.monotonic() - killed)
        print(
            "time to heal a SIGKILLed partition (kill → 3 ready): "
            + ", ".join(f"{h:.2f} s" for h in heals)
        )


if __name__ == "__main__":
    main()
