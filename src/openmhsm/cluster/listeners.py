"""A partition's listening sockets and the TLS settings they are served with."""

from __future__ import annotations

import socket
import ssl

# TLS 1.2 needs ECDHE and an AEAD cipher (TLS 1.3's suites are all AEAD and not affected).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def harden_tls(context: ssl.SSLContext) -> None:
    """Hold the partitions' TLS context to TLS 1.2 or later with forward-secret AEAD ciphers,
    whatever the Python, OpenSSL or uvicorn defaults."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every response waits out the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock
