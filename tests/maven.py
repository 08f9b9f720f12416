"""Building the Java parts a test runs (the Connect converter, the Java examples, the schema
registry and its serializer): ``mvn package``, offline first, which is enough once ``make
install`` has fetched what they need, else from Maven Central."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lepton.config import Settings

BUILD_TIMEOUT_S = 1200


def package(pom: Path, maven: str | None = None) -> None:
    """``mvn package`` of the project ``pom`` names (its Java tests included); the test
    fails with Maven's own errors if it cannot be built."""
    attempts: list[str] = []
    for offline in (["--offline"], []):
        built = subprocess.run(
            [
                maven or Settings().maven,
                "--batch-mode",
                "--quiet",
                *offline,
                "-f",
                str(pom),
                "package",
            ],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if built.returncode == 0:
            return
        attempts.append(built.stdout[-3000:] + built.stderr[-1000:])
    pytest.fail(f"Maven could not build {pom.parent}:\n" + "\n".join(attempts))
