"""PoolConfig: what config.json holds, and the values it refuses."""

from __future__ import annotations

import pytest

from openmhsm.config import PoolConfig


def test_backup_dirs_survive_the_pool_configuration() -> None:
    config = PoolConfig(name="p", tenant_id="t", port=1, backup_dirs=("/srv/backups",))
    assert PoolConfig.from_json(config.to_json()).backup_dirs == ("/srv/backups",)
    assert PoolConfig.from_json({"name": "p", "tenant_id": "t", "port": 1}).backup_dirs == ()


@pytest.mark.parametrize("offset", ["nan", "inf", "-inf", str(200 * 365 * 86400)])
def test_a_clock_offset_must_be_finite_and_bounded(offset: str) -> None:
    with pytest.raises(ValueError, match="clock offset"):
        PoolConfig.from_json({"name": "p", "tenant_id": "t", "port": 1, "clock_offset": offset})
    shifted = {"name": "p", "tenant_id": "t", "port": 1, "clock_offset": -31 * 86400}
    assert PoolConfig.from_json(shifted).clock_offset == -31 * 86400
