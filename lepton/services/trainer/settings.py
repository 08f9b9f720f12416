"""The trainer's settings: each reads ``LEPTON_<NAME>`` like every Lepton setting."""

from __future__ import annotations

from pydantic import Field

from lepton.data.artifacts import ArtifactSettings

__all__ = ["TrainerSettings"]


class TrainerSettings(ArtifactSettings):
    trainer_stop_grace_s: float = Field(
        default=2.0,
        gt=0,
        description="LEPTON_TRAINER_STOP_GRACE_S: how long a stopped job's worker gets to "
        "exit after SIGTERM before it is killed.",
    )
    trainer_lease_s: float = Field(
        default=10.0,
        gt=0,
        description="LEPTON_TRAINER_LEASE_S: an agent that could not get a heartbeat to the "
        "broker for this long (paused, cut off) may have been declared dead meanwhile: "
        "before reporting a run that overlapped the silence it reads its instructions to "
        "their end, and a stop for the run's lease (the scheduler's, when it requeued the "
        "job) voids the result. Keep it below the scheduler's LEPTON_NODE_DEAD_AFTER_S.",
    )
    trainer_memory_floor_mib: int = Field(
        # 768 until LightGBM joined the families: its OpenMP runtime beside scikit-learn's,
        # and their threads, left a 1 GiB worker unable to start a thread on a 569-row set.
        default=2048,
        ge=64,
        description="LEPTON_TRAINER_MEMORY_FLOOR_MIB: the smallest address-space limit "
        "given to a worker, whatever its grant: Python with NumPy, scikit-learn, LightGBM and "
        "their thread pools maps over a GiB of address space before it holds any data.",
    )
