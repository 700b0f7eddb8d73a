"""The ceiling: the same cryptographic work done by raw `cryptography` in N threads, in a process
of its own so that it shares the GIL with nothing else."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, keywrap
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks.cpu import machine_busy_seconds, machine_steal_seconds
from benchmarks.operations import DIGEST_256, DIGEST_384, KEY_32, PLAINTEXT_4K
from benchmarks.report import percentile

Work = Callable[[], object]


def _oaep() -> padding.OAEP:
    return padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)


def _rsa_sign(bits: int) -> Work:
    key = rsa.generate_private_key(65537, bits)
    pkcs1, prehashed = padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    return lambda: key.sign(DIGEST_256, pkcs1, prehashed)


def _rsa_decrypt() -> Work:
    key = rsa.generate_private_key(65537, 2048)
    ciphertext = key.public_key().encrypt(KEY_32, _oaep())
    oaep = _oaep()
    return lambda: key.decrypt(ciphertext, oaep)


def _ec_sign(curve: ec.EllipticCurve, digest: bytes, hash_alg: hashes.HashAlgorithm) -> Work:
    key = ec.generate_private_key(curve)
    ecdsa = ec.ECDSA(utils.Prehashed(hash_alg))
    return lambda: key.sign(digest, ecdsa)


def _gcm_encrypt() -> Work:
    aead = AESGCM(AESGCM.generate_key(256))
    return lambda: aead.encrypt(os.urandom(12), PLAINTEXT_4K, None)


def _kw_wrap() -> Work:
    kek = os.urandom(32)
    return lambda: keywrap.aes_key_wrap(kek, KEY_32)


WORK: dict[str, Callable[[], Work]] = {
    "rsa2048-sign": lambda: _rsa_sign(2048),
    "rsa2048-decrypt": _rsa_decrypt,
    "rsa2048-unwrap": _rsa_decrypt,  # RSA-OAEP-256 of a 32-byte key: the same work
    "rsa3072-sign": lambda: _rsa_sign(3072),
    "p256-sign": lambda: _ec_sign(ec.SECP256R1(), DIGEST_256, hashes.SHA256()),
    "p384-sign": lambda: _ec_sign(ec.SECP384R1(), DIGEST_384, hashes.SHA384()),
    "aes256gcm-encrypt": _gcm_encrypt,
    "a256kw-wrap": _kw_wrap,
}


def _run_here(
    operation: str, threads: int, seconds: float
) -> tuple[int, float, float, float, float, float]:
    """(operations done, p50 ms, p99 ms, this process's CPU seconds, the machine's busy and
    stolen CPU seconds), over the timed part, in this process."""
    work = WORK[operation]()
    work()  # warm
    latencies: list[list[float]] = [[] for _ in range(threads)]
    ready = threading.Barrier(threads + 1)
    stop = [0.0]

    def loop(mine: list[float]) -> None:
        ready.wait()
        clock = time.perf_counter
        while (start := clock()) < stop[0]:
            work()
            if (end := clock()) <= stop[0]:
                mine.append(end - start)

    workers = [threading.Thread(target=loop, args=(lat,)) for lat in latencies]
    for w in workers:
        w.start()
    cpu, busy, steal = time.process_time(), machine_busy_seconds(), machine_steal_seconds()
    stop[0] = time.perf_counter() + seconds
    ready.wait()
    for w in workers:
        w.join()
    every = [x for lat in latencies for x in lat]
    return (
        len(every),
        percentile(every, 50) * 1000,
        percentile(every, 99) * 1000,
        time.process_time() - cpu,
        machine_busy_seconds() - busy,
        machine_steal_seconds() - steal,
    )


@dataclass(frozen=True)
class CeilingResult:
    rate: float
    p50_ms: float
    p99_ms: float
    cores: float  # the ceiling process's CPU
    machine_cores: float  # the whole machine's, over the same time
    steal_cores: float  # taken by the hypervisor for others, over the same time


def measure(operation: str, threads: int, seconds: float) -> CeilingResult:
    """`operation` in `threads` threads for `seconds`, in a fresh process."""
    with mp.get_context("spawn").Pool(1) as pool:
        done, p50, p99, cpu, busy, steal = pool.apply(_run_here, (operation, threads, seconds))
    return CeilingResult(done / seconds, p50, p99, cpu / seconds, busy / seconds, steal / seconds)
