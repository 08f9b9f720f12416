"""A cluster's brokers each log their refusals to a file of their own: the monitor is given
them all (``LEPTON_MONITOR_BROKER_LOG``, separated as in PATH) and follows each."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton.services.monitor.broker_denials import broker_relays
from lepton.services.monitor.settings import MonitorSettings


def test_every_brokers_log_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_MONITOR_BROKER_LOG", "/s/kafka/denials.log:/s/kafka/node-2/d.log")
    settings = MonitorSettings()
    assert settings.monitor_broker_log == [
        Path("/s/kafka/denials.log"),
        Path("/s/kafka/node-2/d.log"),
    ]
    relays = broker_relays(settings)
    assert [relay.__self__.path for relay in relays] == settings.monitor_broker_log  # type: ignore[attr-defined]


def test_one_log_or_none() -> None:
    assert MonitorSettings(monitor_broker_log=Path("/a.log")).monitor_broker_log == [Path("/a.log")]
    assert broker_relays(MonitorSettings(monitor_broker_log=[])) == []
