"""The scheduler's settings: each reads ``LEPTON_<NAME>`` like every Lepton setting."""

from __future__ import annotations

import json

from pydantic import Field, field_validator

from lepton.config import Settings
from lepton.scheduling.entities import Policy, Resources, SchedulerConfig, TenantQuota

__all__ = ["SchedulerSettings"]


class SchedulerSettings(Settings):
    placement_policy: Policy = Field(
        default=Policy.BINPACK,
        description="LEPTON_PLACEMENT_POLICY: binpack (most allocated node first), spread "
        "(least allocated) or drf (dominant-resource fair share across tenants). A job may "
        "ask for binpack or spread itself.",
    )
    tenant_quotas: str = Field(
        default="{}",
        description='LEPTON_TENANT_QUOTAS: JSON {"tenant": {"guaranteed": {...}, "limit": '
        '{...}}} with resources as {"cpu_millicores", "memory_mib", "gpus", "network_mbps"}. '
        "Tenants without a quota have no guarantee and no limit.",
    )
    node_suspect_after_s: float = Field(
        default=5.0,
        gt=0,
        description="LEPTON_NODE_SUSPECT_AFTER_S: a node this far behind the newest heartbeat "
        "gets no new work.",
    )
    node_dead_after_s: float = Field(
        default=15.0,
        gt=0,
        description="LEPTON_NODE_DEAD_AFTER_S: a node this far behind is dead; its jobs are "
        "requeued.",
    )
    node_headroom: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="LEPTON_NODE_HEADROOM: a node whose measured CPU or memory use passes this "
        "fraction of its capacity gets no new work until it is back under it.",
    )
    max_nodes: int = Field(
        default=200_000,
        gt=0,
        description="LEPTON_MAX_NODES: the most nodes the scheduler tracks; heartbeats from "
        "further unknown nodes are counted, not stored.",
    )

    @field_validator("tenant_quotas")
    @classmethod
    def _quotas_parse(cls, value: str) -> str:
        _parse_quotas(value)
        return value

    def core_config(self) -> SchedulerConfig:
        return SchedulerConfig(
            policy=self.placement_policy, quotas=_parse_quotas(self.tenant_quotas)
        )


def _parse_quotas(text: str) -> dict[str, TenantQuota]:
    try:
        raw = json.loads(text)
        return {
            tenant: TenantQuota(
                guaranteed=Resources(**quota.get("guaranteed", {})),
                limit=Resources(**quota["limit"]),
            )
            for tenant, quota in raw.items()
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"LEPTON_TENANT_QUOTAS is not valid: {exc}") from None
