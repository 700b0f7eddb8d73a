"""`mhsm deploy init`: every file a host, the front door and the administrator get, with its
mode, and what etcd, systemd, HAProxy and the certificates say."""

from __future__ import annotations

import ipaddress
import json
import shlex
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from openmhsm.cli.main import main
from openmhsm.cluster.plan import ClusterPlan
from openmhsm.config import PoolConfig

HOSTS = ("10.20.30.1", "10.20.30.2", "10.20.30.3")
NAME = "hsm.example.test"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _init(out: Path, *extra: str) -> int:
    argv = ["deploy", "init", "--out", str(out), "--hostname", NAME, "--name", "prod"]
    for host in HOSTS:
        argv += ["--host", host]
    return main([*argv, *extra])


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("deploy") / "out"
    assert _init(folder, "--install-dir", "/srv/mhsm-{i}") == 0
    return folder


def _sans(cert: Path) -> set[str]:
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    ext = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return ips | set(ext.get_values_for_type(x509.DNSName))


def _exec_start(unit: Path) -> list[str]:
    [line] = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_every_host_gets_its_files_and_only_its_secrets(out: Path) -> None:
    for i in range(3):
        host = out / f"host-{i}"
        for name in ("config.json", "cluster.json", "tls/ca.pem", "tls/server.pem",
                     f"partitions/{i}/partition.pem", "etcd.conf.yml",
                     "openmhsm-etcd.service", "openmhsm-partition.service"):  # fmt: skip
            assert (host / name).is_file(), name
        for secret in ("tls/server.key", f"partitions/{i}/partition.key", "config.json"):
            assert _mode(host / secret) == 0o600, secret
        for folder in (host, host / "tls", host / "partitions", host / "partitions" / str(i)):
            assert _mode(folder) == 0o700, folder
        assert not (host / "tls" / "ca.key").exists()  # the CA key stays on the admin's machine
        assert (host / "admin.json").exists() == (i == 0)
    assert _mode(out / "tls" / "ca.key") == 0o600
    assert _mode(out) == 0o700


def test_each_host_runs_its_partition_against_the_plan(out: Path) -> None:
    for i, ip in enumerate(HOSTS):
        config = PoolConfig.from_json(json.loads((out / f"host-{i}" / "config.json").read_text()))
        assert config.bind == ip and config.mode == "pool"
        assert config.activation == "manual"  # NotActivated until a security-domain download
        assert config.url == f"https://{NAME}:8443"
        plan = ClusterPlan.from_json(json.loads((out / f"host-{i}" / "cluster.json").read_text()))
        assert plan.etcd_hosts == HOSTS
        assert [p.host for p in plan.partitions] == list(HOSTS)


def test_the_certificates_name_the_pool_and_the_host(out: Path) -> None:
    ca = x509.load_pem_x509_certificate((out / "tls" / "ca.pem").read_bytes())
    for i, ip in enumerate(HOSTS):
        server = out / f"host-{i}" / "tls" / "server.pem"
        assert {NAME, ip, "localhost"} <= _sans(server)
        assert not set(HOSTS) - {ip} & _sans(server)  # not the other hosts' addresses
        partition = x509.load_pem_x509_certificate(
            (out / f"host-{i}" / "partitions" / str(i) / "partition.pem").read_bytes()
        )
        cn = partition.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert cn == f"openmhsm-partition-prod-{i}"
        assert partition.issuer == ca.subject
        ipaddress.ip_address(ip)  # listed as an IP SAN, not a DNS name
        assert ip in _sans(out / f"host-{i}" / "partitions" / str(i) / "partition.pem")


def test_the_etcd_config_is_a_static_three_member_cluster(out: Path) -> None:
    yaml = pytest.importorskip("yaml")
    initial = ",".join(f"etcd{n}=http://{ip}:2380" for n, ip in enumerate(HOSTS))
    tokens = set()
    for i, ip in enumerate(HOSTS):
        conf: dict[str, Any] = yaml.safe_load((out / f"host-{i}" / "etcd.conf.yml").read_text())
        assert conf["name"] == f"etcd{i}"
        assert conf["data-dir"] == f"/srv/mhsm-{i}/etcd"
        assert conf["listen-client-urls"] == conf["advertise-client-urls"] == f"http://{ip}:2379"
        assert conf["listen-peer-urls"] == conf["initial-advertise-peer-urls"]
        assert conf["initial-advertise-peer-urls"] == f"http://{ip}:2380"
        assert conf["initial-cluster"] == initial
        assert conf["initial-cluster-state"] == "new"
        assert conf["pre-vote"] is True
        assert conf["log-outputs"] == ["stderr"]
        tokens.add(conf["initial-cluster-token"])
    assert len(tokens) == 1


def test_the_units_run_etcd_and_the_partition_and_restart_them(out: Path) -> None:
    for i in range(3):
        host = out / f"host-{i}"
        etcd, partition = host / "openmhsm-etcd.service", host / "openmhsm-partition.service"
        assert _exec_start(etcd) == [
            "/usr/bin/etcd", "--config-file", f"/srv/mhsm-{i}/etcd.conf.yml",
        ]  # fmt: skip
        assert _exec_start(partition) == [
            "/opt/openmhsm/bin/mhsm", "partition", "--data-dir", f"/srv/mhsm-{i}", "--id", str(i),
        ]  # fmt: skip
        for unit in (etcd, partition):
            assert "Restart=always" in unit.read_text().splitlines()
        assert "After=network-online.target openmhsm-etcd.service" in partition.read_text()


def test_pool_json_is_the_clients_contract(out: Path) -> None:
    doc = json.loads((out / "pool.json").read_text())
    assert _mode(out / "pool.json") == 0o600
    assert doc["url"] == f"https://{NAME}:8443"
    assert doc["ca_cert"] == str((out / "tls" / "ca.pem").resolve())
    admin = json.loads((out / "host-0" / "admin.json").read_text())
    assert doc["admin"] == {k: admin[k] for k in ("client_id", "client_secret")}
    assert admin["preset"] is True
    assert [p["url"] for p in doc["partitions"]] == [f"https://{ip}:8444" for ip in HOSTS]
    assert [m["client_url"] for m in doc["etcd"]] == [f"http://{ip}:2379" for ip in HOSTS]
    assert doc["supervisor"] == "systemd"
    tenants = {json.loads((out / f"host-{i}" / "config.json").read_text())["tenant_id"]
               for i in range(3)}  # fmt: skip
    assert tenants == {doc["tenant_id"]}


def test_haproxy_fronts_the_three_partitions(out: Path) -> None:
    text = (out / "haproxy.cfg").read_text()
    servers = [line.split() for line in text.splitlines() if line.strip().startswith("server ")]
    assert [s[2] for s in servers] == [f"{ip}:8444" for ip in HOSTS]
    assert not any("backup" in s for s in servers)
    assert "bind 0.0.0.0:8443 ssl crt /etc/haproxy/openmhsm/frontdoor.pem" in text
    assert "http-check send meth GET uri /readyz" in text
    assert _mode(out / "haproxy" / "frontdoor.pem") == 0o600
    pem = (out / "haproxy" / "frontdoor.pem").read_bytes()
    assert b"PRIVATE KEY" in pem and NAME in _sans(out / "haproxy" / "frontdoor.pem")


@pytest.mark.parametrize(
    "extra",
    [
        ["--host", "10.20.30.4"],  # four hosts
        ["--install-dir", "/srv/my data"],  # systemd would split it
        ["--install-dir", "relative"],
        ["--partition-port", "2379"],  # the same as etcd's
        ["--name", "Bad Name"],
    ],
)
def test_what_cannot_make_a_pool_is_refused(tmp_path: Path, extra: list[str]) -> None:
    assert _init(tmp_path / "out", *extra) == 2
    assert not (tmp_path / "out" / "pool.json").exists()


def test_a_folder_with_files_is_not_overwritten(out: Path) -> None:
    assert _init(out) == 2
