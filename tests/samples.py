"""Example records for tests: the golden vectors' records, by event type."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from lepton.contract import schemas_dir


def _stem(event: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", event.rsplit(".", 1)[-1]).lower()


@cache
def _vectors(event: str) -> list[dict[str, Any]]:
    path = schemas_dir() / "vectors" / f"{_stem(event)}.json"
    vectors: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return vectors


def sample(event: str, index: int = -1) -> dict[str, Any]:
    """A valid record of ``event`` (the fullest vector unless ``index`` says otherwise)."""
    return dict(_vectors(event)[index]["record"])
