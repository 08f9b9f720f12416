"""A Lepton service whose one background task always fails, run as a process of its own
(``python -m tests.deploy.failing_service``, configured from the environment like any
service): what tests/deploy/test_prometheus_alerting.py has Prometheus alert on."""

from __future__ import annotations

from lepton.runtime.service import Context, Service, run

NAME = "sampling"


async def sample(context: Context) -> None:
    raise RuntimeError("the source this task samples is gone")


def create() -> Service:
    return Service(
        name=NAME,
        actor="evaluator",
        consumes=["lepton.models.promoted"],
        background=[sample],
    )


if __name__ == "__main__":
    run(create)
