"""Preparing an extended region's data dir from its primary's: the config it gets, and
partition certificates issued by the primary's CA (no processes, no sockets)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from openmhsm.cluster.join import partition_common_name
from openmhsm.cluster.layout import DataDir, read_json, write_json_atomic
from openmhsm.cluster.plan import ClusterPlan, PartitionPorts
from openmhsm.cluster.region_setup import RegionSetupError, prepare_extended
from openmhsm.cluster.tls import ensure_pool_ca
from openmhsm.config import PoolConfig, RegionConfig

PLAN = ClusterPlan(
    partitions=tuple(PartitionPorts(n, 9000 + n, 9100 + n) for n in range(3)),
    etcd_ports=((9200, 9300), (9201, 9301), (9202, 9302)),
    etcd_token="t",
)
PRIMARY = PoolConfig(name="p1", tenant_id="tenant", port=8443, storage="etcd", mode="pool")


def primary_dir(root: Path, config: PoolConfig = PRIMARY) -> DataDir:
    data = DataDir(root / "a")
    data.root.mkdir()
    write_json_atomic(data.config, config.to_json())
    write_json_atomic(data.cluster, PLAN.to_json())
    write_json_atomic(data.admin, {"client_id": "c", "client_secret": "s", "object_id": "o"})
    ensure_pool_ca(data.tls)
    return data


def test_the_extended_region_gets_the_primary_identity_on_its_own_port(tmp_path: Path) -> None:
    primary, extended = primary_dir(tmp_path), DataDir(tmp_path / "b")
    config = prepare_extended(primary, extended, 9443)
    assert (config.name, config.tenant_id, config.port) == ("p1", "tenant", 9443)
    assert config.region == RegionConfig(
        primary_url="https://127.0.0.1:8443",
        primary_etcd=("127.0.0.1:9200", "127.0.0.1:9201", "127.0.0.1:9202"),
        primary_join=(("127.0.0.1", 9100), ("127.0.0.1", 9101), ("127.0.0.1", 9102)),
        failover_after=30.0,
    )
    assert PoolConfig.from_json(read_json(extended.config)) == config
    assert read_json(extended.admin) == read_json(primary.admin)
    assert stat.S_IMODE(extended.admin.stat().st_mode) == 0o600


def test_one_pool_one_ca_and_partition_certificates_from_it(tmp_path: Path) -> None:
    primary, extended = primary_dir(tmp_path), DataDir(tmp_path / "b")
    prepare_extended(primary, extended, 9443)
    primary_ca = x509.load_pem_x509_certificate(primary.ca_cert.read_bytes())
    # A client of the pool trusts both regions with one CA; each verifies the other.
    assert extended.ca_cert.read_bytes() == primary.ca_cert.read_bytes()
    assert extended.join_ca.read_bytes() == primary.ca_cert.read_bytes()
    assert extended.ca_key.read_bytes() == primary.ca_key.read_bytes()
    assert stat.S_IMODE(extended.ca_key.stat().st_mode) == 0o600
    assert extended.cluster.exists()  # its ports are known before it starts
    for n in range(3):
        cert = x509.load_pem_x509_certificate(extended.partition_cert(n).read_bytes())
        cert.verify_directly_issued_by(primary_ca)
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert names[0].value == partition_common_name("p1", n)


def test_an_existing_pool_is_not_overwritten(tmp_path: Path) -> None:
    primary, extended = primary_dir(tmp_path), DataDir(tmp_path / "b")
    prepare_extended(primary, extended, 9443)
    with pytest.raises(RegionSetupError, match="already holds a pool"):
        prepare_extended(primary, extended, 9444)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PoolConfig(name="d", tenant_id="t", port=1, mode="dev"), "not --dev"),
        (
            PoolConfig(
                name="e",
                tenant_id="t",
                port=1,
                mode="pool",
                region=RegionConfig("https://x:1", ("h:1",), ()),
            ),
            "itself an extended region",
        ),
    ],
)
def test_only_a_primary_pool_can_be_extended(
    tmp_path: Path, config: PoolConfig, message: str
) -> None:
    with pytest.raises(RegionSetupError, match=message):
        prepare_extended(primary_dir(tmp_path, config), DataDir(tmp_path / "b"), 9443)
    assert not (tmp_path / "b" / "config.json").exists()


def test_region_config_round_trips_and_rejects_nonsense() -> None:
    region = RegionConfig("https://x:1", ("h:1", "h:2"), (("h", 3),))
    assert RegionConfig.from_json(region.to_json()) == region
    assert region.primary_storage == "etcd://h:1,h:2"
    with pytest.raises(ValueError, match="role"):
        RegionConfig.from_json({**region.to_json(), "role": "primary"})
    with pytest.raises(ValueError, match="etcd"):
        RegionConfig.from_json({**region.to_json(), "primary_etcd": []})
    with pytest.raises(ValueError, match="object"):
        RegionConfig.from_json(["nope"])
    assert "region" not in PRIMARY.to_json()
