"""The scheduler's pure decision core (see ``scheduler`` for the algorithm).

``scheduler`` holds ``Scheduler``, the cluster state and the plan; ``indexes`` the
per-node and per-job bookkeeping it plans over; ``feasibility`` the submit-time check
of whether any node could ever hold a job.
"""

from lepton.scheduling.placement.feasibility import feasibility
from lepton.scheduling.placement.scheduler import Scheduler

__all__ = ["Scheduler", "feasibility"]
