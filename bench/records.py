"""Synthetic records the benchmarks send, built in one place."""

from __future__ import annotations

from typing import Any


def heartbeat(
    index: int,
    *,
    node_id: str,
    sent_at: int,
    agent_started_at: int,
    region: str = "eu-west",
    labels: dict[str, str] | None = None,
    running_job_ids: list[str] | None = None,
) -> dict[str, Any]:
    """A ``lepton.NodeHeartbeat`` of a 32-core node whose usage varies with ``index``."""
    return {
        "node_id": node_id,
        "region": region,
        "labels": labels if labels is not None else {"pool": "cpu"},
        "gpu_type": None,
        "capacity": {
            "cpu_millicores": 32000,
            "memory_mib": 131072,
            "gpus": 0,
            "network_mbps": 10000,
        },
        "usage": {
            "cpu_millicores": 1000 + index % 30000,
            "memory_mib": 4096 + index % 60000,
            "gpus": 0,
            "network_mbps": index % 900,
        },
        "running_job_ids": running_job_ids or [],
        "sent_at": sent_at,
        "sequence": index,
        "agent_started_at": agent_started_at,
        "interval_ms": 1000,
    }
