"""The agent's decisions about one run instruction, as plain functions over plain data."""

from __future__ import annotations

import math
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "RunKey",
    "Verdict",
    "cpu_count_for",
    "judge_run",
    "memory_limit_mib",
    "model_id_for",
    "pick_cpus",
    "pick_gpus",
    "run_key",
]

RunKey = tuple[str, int, int]  # job id, lease epoch, worker index

# Names model ids, so that the same job and lease always name the same model.
_MODEL_NAMESPACE = uuid.UUID("6f1c1a52-5d0e-4a59-9a53-2b3f6c7e0d11")


class Verdict(StrEnum):
    START = "start"
    DUPLICATE = "duplicate"  # this node already accepted (or stopped) this run: redelivery
    STALE = "stale"  # the node has seen a later lease of the job: the scheduler moved on


def run_key(assignment: Mapping[str, Any]) -> RunKey:
    return (
        str(assignment["job_id"]),
        int(assignment["lease_epoch"]),
        int(assignment["worker_index"]),
    )


def judge_run(key: RunKey, known: Iterable[RunKey]) -> Verdict:
    """What to do with a run instruction, given the runs of that job the node knows."""
    known = list(known)
    if key in known:
        return Verdict.DUPLICATE
    if any(epoch > key[1] for job, epoch, _ in known if job == key[0]):
        return Verdict.STALE
    return Verdict.START


def cpu_count_for(cpu_millicores: int, available: int) -> int:
    """Whole cores for a grant: a fraction of a core still needs one to run on."""
    return max(1, min(available, math.ceil(cpu_millicores / 1000)))


def pick_cpus(available: Sequence[int], busy: Counter[int], count: int) -> list[int]:
    """The ``count`` cores with the fewest runs pinned to them (lowest number first)."""
    ranked = sorted(available, key=lambda cpu: (busy[cpu], cpu))
    return sorted(ranked[:count])


def pick_gpus(offered: Sequence[int], in_use: Iterable[int], count: int) -> list[int]:
    """``count`` GPUs no other run holds. The scheduler granted them against this node's
    capacity, so they exist unless a run is still ending: then the job fails clearly
    rather than share a device it was promised alone."""
    taken = set(in_use)
    free = [gpu for gpu in offered if gpu not in taken]
    if count > len(free):
        raise RuntimeError(
            f"granted {count} GPU(s) but only {len(free)} of this node's {len(offered)} are free"
        )
    return free[:count]


def memory_limit_mib(granted_mib: int, floor_mib: int) -> int:
    return max(granted_mib, floor_mib)


def model_id_for(job_id: str, lease_epoch: int) -> str:
    return str(uuid.uuid5(_MODEL_NAMESPACE, f"{job_id}@{lease_epoch}"))
