"""The monitor service: metrics, alerts and the dashboard (built in issue #7).

For now it connects, consumes every Lepton topic and answers a health check.
"""

from __future__ import annotations

from lepton.config import Settings
from lepton.service import Service, run
from lepton.topics import ALL_TOPICS


def create_app(settings: Settings | None = None) -> Service:
    return Service(
        name="monitor",
        consumes=[topic.name for topic in ALL_TOPICS],
        settings=settings or Settings(),
    )


def main() -> None:
    run(create_app)
