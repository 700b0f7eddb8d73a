"""The peer: PyKMIP's server (`kmip.services.server`, the reference open-source KMIP server) on
this machine, over mutual TLS 1.2, driven by PyKMIP's own client from separate processes.

It has the operations of ours that KMIP 1.2 defines and PyKMIP implements: RSA sign, AES-GCM
encrypt, Get, Create (symmetric keys only) and DiscoverVersions (its no-op). PyKMIP's server
does RSA decrypt/unwrap, EC keys and AES key wrap not at all. It runs with its defaults except
logging at WARNING (its default INFO logs every request), which only favours it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

from benchmarks.cpu import CpuMeter
from benchmarks.operations import DIGEST_256, PLAINTEXT_4K
from benchmarks.pki import make_pki
from benchmarks.pool_process import free_port
from benchmarks.report import percentile

MAX_CLIENT_PROCESSES = 4


@dataclass(frozen=True)
class PeerResult:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    connections: int
    client_cpu_seconds: float
    failures: tuple[str, ...]
    cpu: dict[str, float]  # the server's and the machine's, in cores, over the timed part


def _server_conf(folder: Path, port: int) -> tuple[Path, Path]:
    pki = make_pki(folder / "pki")
    server = folder / "server.conf"
    server.write_text(
        "[server]\nhostname=127.0.0.1\n"
        f"port={port}\ncertificate_path={pki.server_cert}\nkey_path={pki.server_key}\n"
        f"ca_path={pki.ca}\nauth_suite=TLS1.2\nenable_tls_client_auth=True\n"
        f"logging_level=WARNING\ndatabase_path={folder / 'pykmip.sqlite'}\n"
    )
    client = folder / "client.conf"
    client.write_text(
        "[client]\nhost=127.0.0.1\n"
        f"port={port}\ncertfile={pki.client_cert}\nkeyfile={pki.client_key}\n"
        f"ca_certs={pki.ca}\nssl_version=PROTOCOL_TLSv1_2\ncert_reqs=CERT_REQUIRED\n"
        "do_handshake_on_connect=True\nsuppress_ragged_eofs=True\n"
    )
    return server, client


def _client(conf: str) -> Any:
    warnings.filterwarnings("ignore")  # PyKMIP imports ciphers cryptography has deprecated
    from kmip.pie.client import ProxyKmipClient

    client = ProxyKmipClient(config_file=conf)
    client.open()
    return client


def _operation(client: Any, name: str, uids: dict[str, str]) -> Callable[[], object]:
    from kmip.core import enums

    if name == "rsa2048-sign":
        params = {
            "cryptographic_algorithm": enums.CryptographicAlgorithm.RSA,
            "hashing_algorithm": enums.HashingAlgorithm.SHA_256,
            "padding_method": enums.PaddingMethod.PKCS1v15,
        }
        return lambda: client.sign(DIGEST_256, uid=uids["rsa"], cryptographic_parameters=params)
    if name == "aes256gcm-encrypt":
        gcm = {
            "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
            "block_cipher_mode": enums.BlockCipherMode.GCM,
            "tag_length": 16,
        }
        return lambda: client.encrypt(
            PLAINTEXT_4K,
            uid=uids["aes"],
            cryptographic_parameters=gcm,
            iv_counter_nonce=os.urandom(12),
        )
    if name == "get-key":
        return lambda: client.get(uids["aes"])
    if name == "create-key":
        masks = [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT]
        alg = enums.CryptographicAlgorithm.AES
        return lambda: client.create(alg, 256, cryptographic_usage_mask=masks)
    if name == "noop":

        def discover() -> object:
            result = client.proxy.discover_versions()
            if result.result_status.value != enums.ResultStatus.SUCCESS:
                raise RuntimeError(str(result.result_reason))
            return result

        return discover
    raise ValueError(f"PyKMIP has no {name}")


def _client_process(
    conf: str,
    name: str,
    uids: dict[str, str],
    threads: int,
    seconds: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """Open `threads` connections, say ready, wait for `go`, run `name` on each for `seconds`."""
    clients = [_client(conf) for _ in range(threads)]
    latencies: list[list[float]] = [[] for _ in clients]
    failures: list[str] = []
    start = threading.Event()
    stop = [0.0]

    def loop(client: Any, mine: list[float]) -> None:
        work = _operation(client, name, uids)
        start.wait()
        while (began := time.perf_counter()) < stop[0]:
            try:
                work()
            except Exception as e:  # a failed request is counted, not fatal
                failures.append(f"{type(e).__name__}: {e}"[:300])
                continue
            ended = time.perf_counter()
            if ended <= stop[0]:  # as wrk does: what finishes after the window is not counted
                mine.append(ended - began)

    workers = [
        threading.Thread(target=loop, args=pair) for pair in zip(clients, latencies, strict=True)
    ]
    for w in workers:
        w.start()
    ready.put(os.getpid())
    go.wait()
    cpu = time.process_time()
    stop[0] = time.perf_counter() + seconds
    start.set()
    for w in workers:
        w.join()
    for client in clients:
        with contextlib.suppress(Exception):
            client.close()
    every = [x for lat in latencies for x in lat]
    results.put((every, failures[:3], len(failures), time.process_time() - cpu))


class KmipPeer:
    """`with KmipPeer(folder) as peer: peer.measure(...)`: a PyKMIP server with an RSA-2048 key
    pair and an AES-256 key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.uids: dict[str, str] = {}
        self.client_conf = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> KmipPeer:
        self.folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        server_conf, client_conf = _server_conf(self.folder, port)
        self.client_conf = str(client_conf)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-W",
                "ignore",
                "-c",
                "from kmip.services.server.server import main; main()",
                "-f",
                str(server_conf),
                "-l",
                str(self.folder / "server.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_listening(port)
        self._create_keys()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"PyKMIP's server exited; see {self.folder / 'server.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.1)
        raise RuntimeError("PyKMIP's server did not start listening")

    def _create_keys(self) -> None:
        from kmip.core import enums

        client = _client(self.client_conf)
        try:
            usage = enums.CryptographicUsageMask
            _, private = client.create_key_pair(
                enums.CryptographicAlgorithm.RSA,
                2048,
                public_usage_mask=[usage.VERIFY],
                private_usage_mask=[usage.SIGN],
            )
            aes = client.create(
                enums.CryptographicAlgorithm.AES,
                256,
                cryptographic_usage_mask=[usage.ENCRYPT, usage.DECRYPT],
            )
            client.activate(private)
            client.activate(aes)
            self.uids = {"rsa": private, "aes": aes}
        finally:
            client.close()

    def measure(self, name: str, connections: int, seconds: float) -> PeerResult:
        """`name` over `connections` connections (threads spread over up to four client
        processes) for `seconds`."""
        ctx = mp.get_context("spawn")
        processes = min(connections, MAX_CLIENT_PROCESSES)
        share = [connections // processes + (i < connections % processes) for i in range(processes)]
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        clients = [
            ctx.Process(
                target=_client_process,
                args=(self.client_conf, name, self.uids, n, seconds, ready, go, results),
            )
            for n in share
        ]
        for p in clients:
            p.start()
        try:
            for _ in clients:
                ready.get(timeout=120)
            meter = CpuMeter({"kmip_server": [self.pid]})
            meter.start()
            go.set()
            outs = [results.get(timeout=seconds + 120) for _ in clients]
            use = meter.stop()
        except Empty as e:
            raise RuntimeError(f"PyKMIP clients did not finish {name}") from e
        finally:
            for p in clients:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        every = [x for out in outs for x in out[0]]
        return PeerResult(
            rate=len(every) / seconds,
            p50_ms=percentile(every, 50) * 1000,
            p99_ms=percentile(every, 99) * 1000,
            errors=sum(out[2] for out in outs),
            connections=connections,
            client_cpu_seconds=sum(out[3] for out in outs),
            failures=tuple(f for out in outs for f in out[1])[:3],
            cpu=use.as_json(),
        )
