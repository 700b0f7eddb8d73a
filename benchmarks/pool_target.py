"""The pool under test: its keys, one REST request per operation, and one `wrk` run of an
operation at a given concurrency with the CPU each group of pool processes used meanwhile."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import wrk_load, wrk_scripts
from benchmarks.cpu import CpuMeter
from benchmarks.operations import (
    API_VERSION,
    CREATE_BODY,
    DIGEST_256,
    DIGEST_384,
    KEY_32,
    KEYS,
    PLAINTEXT_4K,
)
from benchmarks.report import POOL, Measurement
from openmhsm.client import connect
from openmhsm.crypto.jwk import b64u_encode

API = f"api-version={API_VERSION}"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any] | None = None


class PoolTarget:
    """A running pool (its data dir and pool.json document) and an administrator's token."""

    def __init__(self, data: Path, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.url = str(doc["url"]).rstrip("/")
        clients = connect(data)
        self.token = clients.credential.get_token(f"{doc['resource']}/.default").token
        self.http = httpx.Client(
            base_url=self.url,
            verify=str(doc["ca_cert"]),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        self.versions: dict[str, str] = {}
        self.requests: dict[str, Request] = {}
        self.create_prefix = f"/keys/c{secrets.token_hex(4)}-"

    def close(self) -> None:
        self.http.close()

    def process_groups(self) -> dict[str, list[int]]:
        return {
            "partitions": [int(p["pid"]) for p in self.doc["partitions"] if p.get("pid")],
            "etcd": [int(m["pid"]) for m in self.doc.get("etcd", []) if m.get("pid")],
            "supervisor": [int(self.doc["pid"])],
        }

    def _call(self, request: Request) -> dict[str, Any]:
        sep = "&" if "?" in request.path else "?"
        response = self.http.request(request.method, request.path + sep + API, json=request.body)
        if response.status_code != 200:
            raise RuntimeError(f"{request.method} {request.path}: {response.text[:500]}")
        out: dict[str, Any] = response.json()
        return out

    def _op(self, key: str, operation: str, alg: str, value: bytes | str) -> Request:
        data = value if isinstance(value, str) else b64u_encode(value)
        path = f"/keys/{key}/{self.versions[key]}/{operation}"
        return Request("POST", path, {"alg": alg, "value": data})

    def prepare(self) -> None:
        """Create the keys and build (and try once) each operation's request."""
        for name, params in KEYS.items():
            bundle = self._call(Request("POST", f"/keys/{name}/create", dict(params)))
            self.versions[name] = str(bundle["key"]["kid"]).rsplit("/", 1)[1]
        rsa = "bench-rsa2048"
        ciphertext = self._call(self._op(rsa, "encrypt", "RSA-OAEP-256", KEY_32))["value"]
        wrapped = self._call(self._op(rsa, "wrapkey", "RSA-OAEP-256", KEY_32))["value"]
        self.requests = {
            "rsa2048-sign": self._op(rsa, "sign", "RS256", DIGEST_256),
            "rsa2048-decrypt": self._op(rsa, "decrypt", "RSA-OAEP-256", ciphertext),
            "rsa2048-unwrap": self._op(rsa, "unwrapkey", "RSA-OAEP-256", wrapped),
            "rsa3072-sign": self._op("bench-rsa3072", "sign", "RS256", DIGEST_256),
            "p256-sign": self._op("bench-p256", "sign", "ES256", DIGEST_256),
            "p384-sign": self._op("bench-p384", "sign", "ES384", DIGEST_384),
            "aes256gcm-encrypt": self._op("bench-aes256", "encrypt", "A256GCM", PLAINTEXT_4K),
            "a256kw-wrap": self._op("bench-aes256", "wrapkey", "A256KW", KEY_32),
            "get-key": Request("GET", "/keys/bench-p256/"),
            # Authenticated and authorized like a key operation, and nothing else.
            "noop": Request("GET", "/openmhsm/ping"),
        }
        for request in self.requests.values():
            self._call(request)
        self._call(Request("POST", f"{self.create_prefix}probe/create", dict(CREATE_BODY)))

    def script(self, operation: str) -> tuple[str, str]:
        """(URL, wrk Lua script) for `operation`."""
        if operation == "create-key":
            script = wrk_scripts.unique_create(
                self.create_prefix, f"/create?{API}", self.token, dict(CREATE_BODY)
            )
            return self.url + "/", script
        request = self.requests[operation]
        script = wrk_scripts.fixed_request(request.method, self.token, request.body)
        return f"{self.url}{request.path}?{API}", script

    def measure(
        self, operation: str, concurrency: int, seconds: float, threads: int
    ) -> Measurement:
        url, script = self.script(operation)
        meter = CpuMeter(self.process_groups())
        meter.start()
        result = wrk_load.run_script(
            url, script, connections=concurrency, threads=threads, seconds=seconds
        )
        use = meter.stop()
        return Measurement(
            operation=operation,
            source=POOL,
            concurrency=concurrency,
            rate=result.rate,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            errors=result.errors,
            workers=concurrency,
            client_cores=result.client_cpu_seconds / use.seconds,
            client_cpu_seconds=result.client_cpu_seconds,
            cpu=use.as_json(),
            failures=result.first_failures,
        )
