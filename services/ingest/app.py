"""The ingest service: the data node (loading, cleaning and sharing are built in issue #4).

For now it connects, consumes its topic and answers a health check.
"""

from __future__ import annotations

from lepton.config import Settings
from lepton.service import Service, run


def create_app(settings: Settings | None = None) -> Service:
    return Service(
        name="ingest",
        consumes=["lepton.data.requested"],
        settings=settings or Settings(),
    )


def main() -> None:
    run(create_app)
