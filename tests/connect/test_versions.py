"""The Connect build uses the Kafka of the local stack: one version, pinned in
``deploy/local/pom.xml``, repeated in the Connect poms (Maven cannot import a property
from another pom without a parent), and kept equal here."""

from __future__ import annotations

import re
from pathlib import Path

from tests.connect.worker import CONNECT

LOCAL = CONNECT.parent / "local" / "pom.xml"


def kafka_version(pom: Path) -> str:
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    assert found, f"{pom} pins no kafka.version"
    return found.group(1)


def test_the_connect_poms_use_the_local_stacks_kafka() -> None:
    wanted = kafka_version(LOCAL)
    for pom in (CONNECT / "pom.xml", CONNECT / "worker" / "pom.xml"):
        assert kafka_version(pom) == wanted, f"{pom}: Kafka {kafka_version(pom)}, not {wanted}"
