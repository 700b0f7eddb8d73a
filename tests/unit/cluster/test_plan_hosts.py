"""`cluster.json` with and without hosts: files of one-host pools load as before, a plan across
hosts round-trips, and `mhsm partition` takes its endpoints from it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openmhsm.cli.partition import partition_settings
from openmhsm.cluster.plan import ClusterPlan, PartitionPorts
from openmhsm.config import PoolConfig

# A cluster.json as `mhsm up` wrote it before plans had hosts.
ONE_HOST: dict[str, Any] = {
    "v": 1,
    "partitions": [
        {"id": 0, "port": 40001, "join_port": 40002},
        {"id": 1, "port": 40003, "join_port": 40004},
        {"id": 2, "port": 40005, "join_port": 40006},
    ],
    "etcd": {"ports": [[41001, 41002], [41003, 41004], [41005, 41006]], "token": "openmhsm-t"},
}
HOSTS = ("10.1.0.1", "10.1.0.2", "10.1.0.3")


def across_hosts() -> ClusterPlan:
    return ClusterPlan(
        partitions=tuple(PartitionPorts(i, 8444, 8445, h) for i, h in enumerate(HOSTS)),
        etcd_ports=((2379, 2380),) * 3,
        etcd_token="openmhsm-t",
        etcd_hosts=HOSTS,
    )


def config(bind: str = "127.0.0.1") -> PoolConfig:
    return PoolConfig(name="p", tenant_id="t", port=8443, bind=bind, mode="pool")


def test_a_one_host_file_loads_as_before_and_writes_back_unchanged() -> None:
    plan = ClusterPlan.from_json(json.loads(json.dumps(ONE_HOST)))
    assert not plan.multi_host
    assert plan.to_json() == ONE_HOST
    assert plan.storage_url("127.0.0.1") == (
        "etcd://127.0.0.1:41001,127.0.0.1:41003,127.0.0.1:41005"
    )
    assert plan.peers(0, "127.0.0.1") == (("127.0.0.1", 40004), ("127.0.0.1", 40006))
    assert [p.id for p in plan.neighbours(1, "127.0.0.1")] == [0, 1, 2]


def test_a_plan_across_hosts_round_trips() -> None:
    plan = across_hosts()
    obj = json.loads(json.dumps(plan.to_json()))
    assert obj["etcd"]["hosts"] == list(HOSTS)
    assert [p["host"] for p in obj["partitions"]] == list(HOSTS)
    assert ClusterPlan.from_json(obj) == plan
    assert plan.multi_host


def test_hosts_decide_endpoints_whatever_the_local_address() -> None:
    plan = across_hosts()
    assert plan.etcd_endpoints("127.0.0.1") == [f"{h}:2379" for h in HOSTS]
    assert plan.peers(1, "127.0.0.1") == (("10.1.0.1", 8445), ("10.1.0.3", 8445))
    assert plan.neighbours(2, "127.0.0.1") == (plan.partition(2),)


def test_an_ipv6_host_is_bracketed_in_endpoints() -> None:
    plan = ClusterPlan(
        partitions=(PartitionPorts(0, 1, 2, "fd00::1"),),
        etcd_ports=((2379, 2380),),
        etcd_token="t",
        etcd_hosts=("fd00::1",),
    )
    assert plan.storage_url("::1") == "etcd://[fd00::1]:2379"


def test_etcd_hosts_must_match_the_members() -> None:
    obj = across_hosts().to_json()
    obj["etcd"]["hosts"] = obj["etcd"]["hosts"][:2]
    with pytest.raises(ValueError, match="2 etcd hosts for 3"):
        ClusterPlan.from_json(obj)


def test_a_partition_on_one_host_shares_the_pool_port() -> None:
    plan = ClusterPlan.from_json(ONE_HOST)
    settings = partition_settings(config(), plan, 1)
    assert settings.pool_port == 8443
    assert settings.own_port == 40003
    assert settings.storage == plan.storage_url("127.0.0.1")
    assert settings.pool_ports == (40001, 40003, 40005)
    assert not settings.bootstrap_admin


def test_a_partition_across_hosts_leaves_the_pool_port_to_the_front_door() -> None:
    plan = across_hosts()
    settings = partition_settings(config(bind="10.1.0.1"), plan, 0)
    assert settings.pool_port is None
    assert settings.own_port == 8444 and settings.join_port == 8445
    assert settings.storage == "etcd://10.1.0.1:2379,10.1.0.2:2379,10.1.0.3:2379"
    assert settings.peers == (("10.1.0.2", 8445), ("10.1.0.3", 8445))
    assert settings.pool_ports == (8444,)  # one partition on this host
    assert settings.bootstrap_admin
