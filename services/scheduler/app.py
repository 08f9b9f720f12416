"""The scheduler service: the management node (placement is built in issue #3).

For now it connects, consumes its topics and answers a health check.
"""

from __future__ import annotations

from lepton.config import Settings
from lepton.service import Service, run

CONSUMES = (
    "lepton.node.heartbeats",
    "lepton.jobs.requested",
    "lepton.jobs.events",
    "lepton.data.ready",
)


def create_app(settings: Settings | None = None) -> Service:
    return Service(
        name="scheduler",
        consumes=CONSUMES,
        settings=settings or Settings(),
    )


def main() -> None:
    run(create_app)
