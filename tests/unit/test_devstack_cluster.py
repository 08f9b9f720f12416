"""The local cluster's files, without starting a JVM: the ports it keeps (a single broker's
ports.json grows, never changes) and the size its storage was formatted with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lepton.config import Settings
from lepton.devstack import StackError, _kept_ports, _servers
from lepton.devstack._cluster import KafkaCluster, formatted_size


def test_a_single_brokers_ports_are_kept_and_a_cluster_adds_its_own(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    (tmp_path / "ports.json").write_text(
        json.dumps({"broker": 40001, "controller": 40002, "postgres": 40003})
    )
    kept = _kept_ports(settings, 3)
    assert {name: kept[name] for name in ("broker", "controller", "postgres")} == {
        "broker": 40001,
        "controller": 40002,
        "postgres": 40003,
    }
    assert len(set(kept.values())) == 7, kept
    assert _kept_ports(settings, 3) == kept, "chosen once, then kept"
    kafka, postgres = _servers(settings, None, 3)
    assert kafka.ports[0] == (40001, 40002)
    assert kafka.ports[1] == (kept["broker-2"], kept["controller-2"])
    assert postgres.port == 40003
    assert kafka.bootstrap.count(",") == 2
    nodes = kafka.nodes
    assert [node.home for node in nodes] == [
        tmp_path / "kafka",
        tmp_path / "kafka" / "node-2",
        tmp_path / "kafka" / "node-3",
    ]
    # Every node finds the others' controllers, and shares one set of credentials.
    assert {node.voters for node in nodes} == {tuple(port for _, port in kafka.ports)}
    assert {node.credentials_path for node in nodes} == {tmp_path / "kafka" / "credentials.json"}


def test_a_storage_is_never_started_at_another_size(tmp_path: Path) -> None:
    home = tmp_path / "kafka"
    assert formatted_size(home) is None
    (home / "data").mkdir(parents=True)
    (home / "data" / "meta.properties").write_text("node.id=1\n")
    assert formatted_size(home) == 1, "a single broker's storage from before clusters"
    (home / "brokers").write_text("3\n")
    assert formatted_size(home) == 3
    single = KafkaCluster(home, ((40001, 40002),))
    with pytest.raises(StackError, match="formatted with 3 broker"):
        single.start("java", tmp_path, "512m", [1])
