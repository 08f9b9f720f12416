"""The monitor's settings: the shared Lepton settings plus its own, each from ``LEPTON_<NAME>``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from lepton.config import Settings
from lepton.services.monitor.rules import LEPTON_GROUPS

__all__ = ["MonitorSettings"]


class MonitorSettings(Settings):
    """Settings of the monitor service; the shared ones are inherited unchanged."""

    monitor_host: str = Field(
        default="127.0.0.1",
        description="LEPTON_MONITOR_HOST: address the dashboard, JSON API and SSE stream "
        "listen on. Every request needs a token (or the session cookie from one); the "
        "monitor speaks plain HTTP, so loopback by default: expose it through a proxy that "
        "terminates TLS.",
    )
    monitor_port: int = Field(
        default=8765,
        ge=0,
        le=65535,
        description="LEPTON_MONITOR_PORT: port of the dashboard, JSON API and SSE stream; 0 "
        "picks a free one (written to the service log as `dashboard`).",
    )
    monitor_metrics_host: str = Field(
        default="127.0.0.1",
        description="LEPTON_MONITOR_METRICS_HOST: address of the monitor's /metrics (for "
        "Prometheus) and /healthz, which need no credential and name no tenant's job, "
        "dataset or model; apart from the API's so that a scraper can reach them alone.",
    )
    monitor_metrics_port: int = Field(
        default=8766,
        ge=0,
        le=65535,
        description="LEPTON_MONITOR_METRICS_PORT: port of /metrics and /healthz; 0 picks a "
        "free one (written to the service log with `dashboard`).",
    )
    monitor_sample_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="LEPTON_MONITOR_SAMPLE_INTERVAL_S: how often the monitor evaluates its "
        "alert rules and records a point of every time series.",
    )
    monitor_lag_interval_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="LEPTON_MONITOR_LAG_INTERVAL_S: how often consumer lag and dead-letter "
        "counts are read from the broker's offsets.",
    )
    monitor_lag_alert_groups: list[str] = Field(
        default_factory=lambda: list(LEPTON_GROUPS),
        max_length=100,
        description="LEPTON_MONITOR_LAG_ALERT_GROUPS: the consumer groups whose lag can "
        "raise consumer_lag_high and consumer_lag_seconds_high, as a JSON list of "
        "shell-style patterns over the group's name without LEPTON_TOPIC_PREFIX (default: "
        "Lepton's services' own groups, e.g. lepton-trainer-*). The lag of every other group "
        "reading Lepton's topics (a console consumer, a Kafka Connect worker) is shown on "
        "the dashboard and /metrics but never alerted on.",
    )
    monitor_snapshot_interval_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="LEPTON_MONITOR_SNAPSHOT_INTERVAL_S: how often the in-memory view "
        "(nodes, jobs, datasets, models, alerts) is saved to PostgreSQL; it is also saved "
        "on a graceful stop and restored at start.",
    )
    monitor_retention_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="LEPTON_MONITOR_RETENTION_DAYS: how long hourly time-series points and "
        "alert history are kept; 10-second points are kept a day, 5-minute points 30 days.",
    )
    monitor_node_dead_after_s: float = Field(
        default=15.0,
        gt=0,
        description="LEPTON_MONITOR_NODE_DEAD_AFTER_S: a node whose newest heartbeat was "
        "sent longer ago than this is dead (judged from the heartbeat's own sent_at).",
    )
    monitor_max_jobs: int = Field(
        default=50_000,
        ge=100,
        description="LEPTON_MONITOR_MAX_JOBS: jobs kept in the live view; the oldest are "
        "forgotten beyond it (their history stays in the time series).",
    )
    monitor_broker_log: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="LEPTON_MONITOR_BROKER_LOG: files where the Kafka brokers log their "
        "refusals, one per broker, separated by `:` (ACL denials from "
        "`kafka.authorizer.logger`, failed authentications from "
        "`org.apache.kafka.common.network.Selector`, in the log4j2 layout the local stack "
        "writes): the monitor follows each, across rotations, and publishes each kind of "
        "denial on lepton.audit. `lepton up` sets it to the local brokers' files; unset, "
        "the brokers' refusals stay in their own logs.",
    )

    @field_validator("monitor_broker_log", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        """One path, or several separated as in PATH (one file per broker of a cluster)."""
        if isinstance(value, Path):
            return [value]
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

    monitor_broker_denial_window_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="LEPTON_MONITOR_BROKER_DENIAL_WINDOW_S: a broker denial of one kind "
        "(principal or address, operation, resource) is audited at once, and its repeats "
        "within this window in one event at the window's end, so a client retrying in a "
        "loop cannot flood the audit trail.",
    )
    monitor_max_nodes: int = Field(
        default=200_000,
        ge=1,
        description="LEPTON_MONITOR_MAX_NODES: the most nodes the monitor tracks; heartbeats "
        "from further unknown nodes are counted, not stored (as LEPTON_MAX_NODES for the "
        "scheduler).",
    )
    monitor_forget_nodes_after_s: float = Field(
        default=600.0,
        gt=0,
        description="LEPTON_MONITOR_FORGET_NODES_AFTER_S: a node silent this long leaves the "
        "monitor's view (and its node_dead alert resolves); its history stays in the time "
        "series.",
    )
