"""The evaluator service: scores models and promotes the best (built in issue #6).

For now it connects, consumes its topic and answers a health check.
"""

from __future__ import annotations

from lepton.config import Settings
from lepton.service import Service, run


def create_app(settings: Settings | None = None) -> Service:
    return Service(
        name="evaluator",
        consumes=["lepton.models.ready"],
        settings=settings or Settings(),
    )


def main() -> None:
    run(create_app)
