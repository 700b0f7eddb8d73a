"""Issue 8: secrets never cross regions unsealed, checked on the wire.

An extended region of a three-partition pool and its primary reach each other only through
recording TCP proxies run by this test: the region's replicator on the primary's etcd (plain
gRPC, so what it carries is readable), its partitions' join (mutual TLS) and forwarded writes
(HTTPS) to the primary, and the primary's reads of the region's link in the region's etcd. Keys
with private material the test knows (RSA, EC and AES: imported into the primary before the
region exists, so copied by its resync; after, so followed through the watch; and through the
region, so forwarded) and a service principal with a role assignment reach the region. Then every
captured byte and the region's own etcd files are searched for that material, the principals'
client secrets and the domain secrets themselves, in every spelling a careless implementation
would use. The key names and the principal's client id must be found in the clear streams and
files, so the search is known to look at the records; and neither region may hold a connection
to the other's ports that bypasses the proxies."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.keyvault.keys import JsonWebKey, KeyClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dev_pool import free_port
from keys_support import ec_jwk, release_connections, rsa_jwk, sdk_key_client
from pool_support import PoolProcess
from principal_support import credential, grant_crypto_user, ok, principal_cli
from region_support import wait_for_key
from wire_capture import Connection, WireCapture, spellings, text_spellings

from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.plan import ClusterPlan, local_host
from openmhsm.cluster.region_setup import link_primary, peer_of, prepare_extended
from openmhsm.config import PoolConfig
from openmhsm.domain.sealing import unseal_from_file
from openmhsm.region.link import Peer, RegionLink, write_link
from openmhsm.storage.registry import open_storage

pytestmark = pytest.mark.integration

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # what a cleartext gRPC client sends first
TLS_HANDSHAKE = b"\x16\x03"  # a TLS record: content type handshake, protocol version 3.x


@dataclass
class Known:
    """What must never cross in clear, by label; and what must cross (names and ids)."""

    forbidden: dict[str, bytes]
    expected: dict[str, bytes]

    def add(self, label: str, raw: bytes | str) -> None:
        found = text_spellings(raw) if isinstance(raw, str) else spellings(raw)
        self.forbidden |= {f"{label} ({name})": value for name, value in found.items()}

    def leaks(self, data: bytes) -> list[str]:
        """The labels of the secrets (and their spellings) found in `data`."""
        return [label for label, value in self.forbidden.items() if value in data]


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolProcess]:
    started = PoolProcess(tmp_path_factory.mktemp("wire-primary") / "pool", free_port()).start()
    try:
        yield started
    finally:
        started.stop()


def import_keys(keys: KeyClient, tag: str, known: Known) -> list[str]:
    """Import an RSA-2048, an EC P-256 and an AES-256 key; remember their private parts."""
    rsa_key = rsa.generate_private_key(65537, 2048)
    numbers = rsa_key.private_numbers()
    for part, value in {"d": numbers.d, "p": numbers.p, "q": numbers.q, "dp": numbers.dmp1,
                        "dq": numbers.dmq1, "qi": numbers.iqmp}.items():  # fmt: skip
        known.add(f"{tag} rsa {part}", value.to_bytes((value.bit_length() + 7) // 8, "big"))
    for part, value in {"d": numbers.d, "p": numbers.p, "q": numbers.q}.items():
        known.forbidden[f"{tag} rsa {part} decimal"] = str(value).encode()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    known.add(f"{tag} ec d", ec_key.private_numbers().private_value.to_bytes(32, "big"))
    k = secrets.token_bytes(32)
    known.add(f"{tag} oct k", k)

    names = [f"wire-{tag}-rsa", f"wire-{tag}-ec", f"wire-{tag}-oct"]
    keys.import_key(names[0], rsa_jwk(rsa_key), hardware_protected=True)
    keys.import_key(names[1], ec_jwk(ec_key, "P-256"), hardware_protected=True)
    keys.import_key(names[2], JsonWebKey(kty="oct-HSM", k=k), hardware_protected=True)
    for name in names:
        known.expected[f"key name {name}"] = name.encode()  # lower-case, as storage keeps it
    return names


def add_domain_secrets(data: DataDir, known: Known) -> None:
    """The primary's domain root and what derives from it (unsealed here, from its files)."""
    domain = unseal_from_file(data.sealed(0), data.seal_key(0))
    known.add("domain root", domain.root)
    known.add("domain secrets", domain.to_bytes())
    for term in (1, 2, 3):
        known.add(f"barrier key {term}", domain.barrier_key(term))
    known.add("backup key", domain.backup_key())
    scalar = domain.token_signing_key().private_numbers().private_value
    known.add("token signing key", scalar.to_bytes(32, "big"))


def proxied_primary(primary: DataDir, wire: WireCapture) -> Peer:
    """How the region is to reach the primary: its etcd, join ports and URL, each behind a
    recording proxy (made before the region picks its ports, so none can take one of them)."""
    config = PoolConfig.from_json(read_json(primary.config))
    peer = peer_of(config, ClusterPlan.from_json(read_json(primary.cluster)))
    url = urlsplit(peer.url)
    assert url.hostname is not None and url.port is not None, url
    https = wire.proxy("https", url.hostname, url.port)  # the certificate names no port
    return Peer(
        url=f"https://{url.hostname}:{https}",
        etcd=tuple(f"127.0.0.1:{wire.proxy('etcd', *host_port(e))}" for e in peer.etcd),
        join=tuple(("127.0.0.1", wire.proxy("join", host, port)) for host, port in peer.join),
    )


def reroute(region: DataDir, primary: Peer) -> None:
    """Point the prepared region's link to its primary at `primary`."""
    config = read_json(region.config)
    config["region"] |= {"primary_url": primary.url, "primary_etcd": list(primary.etcd),
                         "primary_join": [list(join) for join in primary.join]}  # fmt: skip
    write_json_atomic(region.config, config)


def start_region_through(wire: WireCapture, primary: DataDir, region: DataDir) -> PoolProcess:
    """Prepare and start an extended region of `primary` as `mhsm region add` does, with every
    link between the two regions behind the recording proxies of `wire`."""
    toward_primary = proxied_primary(primary, wire)
    prepare_extended(primary, region, free_port())
    reroute(region, toward_primary)
    link_primary_through(primary, region, wire)
    return PoolProcess(region.root, read_json(region.config)["port"]).start()


def link_primary_through(primary: DataDir, region: DataDir, wire: WireCapture) -> None:
    """Store the primary's region link as `mhsm region add` does (so the primary trusts the
    region's tokens on forwarded writes), naming the region's etcd behind recording proxies: the
    primary reads the region's link there."""
    link = asyncio.run(link_primary(primary, region))
    etcd = tuple(f"127.0.0.1:{wire.proxy('etcd back', *host_port(e))}" for e in link.peer.etcd)
    proxied = dataclasses.replace(link, peer=dataclasses.replace(link.peer, etcd=etcd))
    asyncio.run(store_link(primary, proxied))


async def store_link(data: DataDir, link: RegionLink) -> None:
    config = PoolConfig.from_json(read_json(data.config))
    plan = ClusterPlan.from_json(read_json(data.cluster))
    storage = open_storage(plan.storage_url(local_host(config.bind)))
    try:
        await write_link(storage, f"/{config.name}/", link)
    finally:
        await storage.close()


def host_port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


def write_through_region(keys: KeyClient, known: Known) -> str:
    """Import an EC key through the extended region, which forwards the write to the primary
    (the private key inside); its name."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    known.add("forwarded ec d", ec_key.private_numbers().private_value.to_bytes(32, "big"))
    name = "wire-forwarded-ec"
    keys.import_key(name, ec_jwk(ec_key, "P-256"), hardware_protected=True)
    known.expected[f"key name {name}"] = name.encode()
    return name


def listening_ports(pool: PoolProcess) -> set[int]:
    """Every port a pool's processes listen on (etcd client and peer, join, HTTPS)."""
    plan = ClusterPlan.from_json(read_json(DataDir(pool.data_dir).cluster))
    etcd = {port for pair in plan.etcd_ports for port in pair}
    partitions = {p.join_port for p in plan.partitions} | {p.port for p in plan.partitions}
    return etcd | partitions | {pool.port}


def peer_ports(pids: list[int]) -> set[int]:
    """The remote ports of the established TCP connections the processes `pids` hold."""
    inodes = set()
    for pid in pids:
        with os.scandir(f"/proc/{pid}/fd") as fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def pool_pids(pool: PoolProcess) -> list[int]:
    doc = pool.reload()
    listed = [p.get("pid") for p in doc["partitions"]] + [m.get("pid") for m in doc["etcd"]]
    return [pool.pid, *(pid for pid in listed if pid)]


def check_no_bypass(primary: PoolProcess, region: PoolProcess) -> None:
    """Neither region holds a connection to the other's ports but through the proxies."""
    for one, other in ((region, primary), (primary, region)):
        bypass = peer_ports(pool_pids(one)) & listening_ports(other)
        assert not bypass, f"{one.data_dir} reaches {other.data_dir} directly at {bypass}"


def streams(connections: list[Connection]) -> Iterator[tuple[str, bytes]]:
    for n, c in enumerate(connections):
        yield f"{c.link} #{n} sent", bytes(c.sent)
        yield f"{c.link} #{n} received", bytes(c.received)


def etcd_files(data: DataDir) -> Iterator[tuple[str, bytes]]:
    """The region's etcd member files, long runs of zeros (preallocated WAL) squeezed out."""
    for path in sorted(p for p in data.etcd.rglob("*") if p.is_file()):
        yield str(path), re.sub(rb"\x00{64,}", b"\x00" * 32, path.read_bytes())


def test_no_secret_crosses_regions_in_clear(primary: PoolProcess, tmp_path: Path) -> None:
    known = Known({}, {})
    known.add("admin client secret", primary.doc["admin"]["client_secret"])
    app = ok(principal_cli(primary.data_dir, "create", "--name", "wire-app"))
    grant_crypto_user(primary.doc, app["object_id"])
    known.add("app client secret", app["client_secret"])
    known.expected["app client id"] = app["client_id"].encode()
    with sdk_key_client(primary) as keys:
        names = import_keys(keys, "before", known)  # copied by the region's first resync

    primary_data = DataDir(primary.data_dir.resolve())
    region_data = DataDir((tmp_path / "region").resolve())
    with WireCapture() as wire:
        region = start_region_through(wire, primary_data, region_data)
        try:
            with sdk_key_client(primary) as keys:
                names += import_keys(keys, "after", known)  # followed through the watch
            with sdk_key_client(region) as keys:
                names.append(write_through_region(keys, known))  # forwarded, then replicated
                for name in names:
                    wait_for_key(keys, name)
            # The principal and its role assignment crossed too: the app reads a key there.
            app_login = credential(region.doc, app["client_id"], app["client_secret"])
            with app_login, KeyClient(region.url, app_login, connection_verify=region.ca) as kc:
                assert kc.get_key(names[0]).name == names[0]
            release_connections()
            check_no_bypass(primary, region)
        finally:
            region.stop()
        add_domain_secrets(primary_data, known)
        captured = {link: wire.connections(link) for link in ("etcd", "etcd back", "join", "https")}

    check_etcd_capture(captured["etcd"], known)
    check_plain_capture(captured["etcd back"], known)
    check_tls_capture(captured["join"], known)
    check_tls_capture(captured["https"], known)
    check_region_files(region_data, known)


def check_region_files(region: DataDir, known: Known) -> None:
    """The region's etcd members hold the records (their names), none of the secrets."""
    stored = dict(etcd_files(region))
    assert stored, "the region has no etcd files"
    everything = b"".join(stored.values())
    missing = [label for label, value in known.expected.items() if value not in everything]
    assert not missing, f"the region's etcd files lack {missing}"
    for path, content in stored.items():
        leaked = known.leaks(content)
        assert not leaked, f"{path} holds in clear: {leaked}"


def check_plain_capture(connections: list[Connection], known: Known) -> None:
    for where, stream in streams(connections):
        leaked = known.leaks(stream)
        assert not leaked, f"{where} carries in clear: {leaked}"


def check_etcd_capture(connections: list[Connection], known: Known) -> None:
    """The replicator's etcd traffic crossed the proxy in clear (so the search below reads
    it), carried the records (their names), and none of the secrets."""
    summary = _summary(connections)
    assert connections and all(c.connected for c in connections), summary
    assert any(c.sent.startswith(HTTP2_PREFACE) for c in connections), summary
    received = b"".join(bytes(c.received) for c in connections)
    missing = [label for label, value in known.expected.items() if value not in received]
    assert not missing, f"the records did not cross the etcd proxy: {missing} are not there"
    check_plain_capture(connections, known)


def check_tls_capture(connections: list[Connection], known: Known) -> None:
    """A link that carries secrets inside TLS (join: the domain secrets; https: forwarded
    writes) was used, and every connection was TLS from its first byte, both ways, and showed
    no secret."""
    relayed = [c for c in connections if c.connected and c.sent and c.received]
    assert relayed, f"nothing crossed the proxy: {_summary(connections)}"
    check_plain_capture(connections, known)
    for where, stream in streams(connections):
        if stream:
            assert stream.startswith(TLS_HANDSHAKE), f"{where} is not TLS: {stream[:16]!r}"
            assert b"JOIN1 " not in stream, f"{where} shows a join request in clear"


def _summary(connections: list[Connection]) -> list[dict[str, Any]]:
    return [{"upstream": c.upstream, "connected": c.connected, "sent": len(c.sent),
             "received": len(c.received)} for c in connections]  # fmt: skip
