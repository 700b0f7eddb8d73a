"""The link faults of `NetnsHosts` do what the chaos tests say they do: random loss drops about
the share asked, a slow link is slow, and `clear` gives back a clean link. Real namespaces,
real qdiscs, real packets."""

from __future__ import annotations

import socket
import sys
import time

import pytest
from link_shaping import Shape, random_drop_bytecode
from netns_hosts import NetnsHosts, available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]

DATAGRAMS = 2000
SO_RCVBUFFORCE = 33  # Linux; root may set a buffer above rmem_max: every datagram waits in it
SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    s.sendto(b"x" * 64, (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.0002)  # paced: no queue of ours fills up, only the random drop loses packets
"""
STREAM = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as s:
    s.sendall(b"x" * int(sys.argv[3]))
"""


def received_of(hosts: NetnsHosts, count: int) -> int:
    """Datagrams from host 0 that reach the bridge address, of `count` sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        sink.bind((hosts.bridge_ip, 0))
        port = sink.getsockname()[1]
        hosts.check(0, [sys.executable, "-c", SEND, hosts.bridge_ip, str(port), str(count)])
        sink.settimeout(1.0)
        received = 0
        try:
            while True:
                sink.recv(128)
                received += 1
        except TimeoutError:
            return received


def test_random_loss_drops_about_the_share_asked_and_clear_ends_it() -> None:
    with NetnsHosts(count=1) as hosts:
        assert received_of(hosts, 10) == 10  # ARP resolved first: a dropped ARP request would
        hosts.loss(0, 20)  # hold the datagrams in the neighbour queue for a second, and lose many
        received = received_of(hosts, DATAGRAMS)
        stats = hosts.shaped_stats(0)
        lost = DATAGRAMS - received
        # 20 % of 2000: mean 400, standard deviation 18; the bounds are over 5 of those away
        assert 300 <= lost <= 500, f"{lost} of {DATAGRAMS} lost with 20 % loss set"
        assert stats["packets_sent_dropped"] >= lost  # the qdisc dropped them, not a buffer
        hosts.clear(0)
        assert received_of(hosts, 500) == 500


def test_a_slow_link_is_slow_both_ways() -> None:
    with NetnsHosts(count=1) as hosts:
        hosts.slow(0, rate_kbit=256, latency_ms=200)
        size = 64 * 1024  # 512 kbit: at least 2 s at 256 kbit/s
        with socket.create_server((hosts.bridge_ip, 0)) as server:
            port = server.getsockname()[1]
            started = time.monotonic()
            proc = hosts.run(
                0, [sys.executable, "-c", STREAM, hosts.bridge_ip, str(port), str(size)]
            )
            server.settimeout(30)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(30)
                got = 0
                while chunk := conn.recv(65536):
                    got += len(chunk)
            took = time.monotonic() - started
            assert proc.wait(timeout=30) == 0
        assert got == size
        assert took >= 1.5, f"64 KiB crossed a 256 kbit/s link in {took:.2f} s"
        stats = hosts.shaped_stats(0)
        assert stats["packets_sent"] > 0 and stats["packets_received"] > 0  # both ends shaped


def test_the_random_drop_program_covers_the_range() -> None:
    assert random_drop_bytecode(0).split(",")[2] == "53 1 0 0"  # never below 0: nothing dropped
    assert random_drop_bytecode(100).split(",")[2] == f"53 1 0 {2**32 - 1}"
    with pytest.raises(ValueError):
        Shape(loss_percent=101)
