"""The replication lag as the extended region's supervisor publishes it, and as `/metrics`
shows it."""

from __future__ import annotations

from pathlib import Path

from openmhsm.api.metrics import RequestMetrics
from openmhsm.cluster.layout import write_json_atomic
from openmhsm.region.follower import STALE_AFTER, lag_document, read_lag
from openmhsm.region.replicator import Lag

LAG = Lag(applied_revision=40, source_revision=42, revisions=2, seconds=0.25)


def test_published_lag_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "region.json"
    write_json_atomic(path, lag_document(LAG, "https://p:1", now=1000.0))
    assert read_lag(path, now=1001.0) == LAG


def test_a_stale_missing_or_broken_report_is_no_lag(tmp_path: Path) -> None:
    path = tmp_path / "region.json"
    assert read_lag(path, now=0.0) is None
    write_json_atomic(path, lag_document(LAG, "https://p:1", now=1000.0))
    assert read_lag(path, now=1000.0 + STALE_AFTER + 1) is None
    path.write_text("{")
    assert read_lag(path, now=0.0) is None


def test_metrics_show_the_lag_gauges_only_when_known() -> None:
    lag: Lag | None = None
    metrics = RequestMetrics(replication_lag=lambda: lag)
    assert "replication_lag" not in metrics.exposition(0)
    lag = LAG
    text = metrics.exposition(0)
    assert "# TYPE openmhsm_replication_lag_seconds gauge" in text
    assert "openmhsm_replication_lag_seconds 0.25\n" in text
    assert "openmhsm_replication_lag_revisions 2\n" in text
    assert "replication_lag" not in RequestMetrics().exposition(0)
