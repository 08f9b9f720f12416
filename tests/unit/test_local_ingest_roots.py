"""`lepton up` gives a local ingest service the inbox and its working directory, and adds
the directories LEPTON_INGEST_ROOTS names instead of replacing them (`lepton demo` ingests
from the inbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton.config import Settings
from lepton.errors import ConfigError
from lepton.sdk.local import inbox, ingest_roots


def test_configured_roots_add_to_the_inbox(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    roots = ingest_roots(settings, '["/data/in", "/data/in"]')
    assert roots == [str(inbox(settings)), str(Path.cwd()), "/data/in"]


def test_no_configured_roots_leaves_the_inbox_and_the_working_directory(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    assert ingest_roots(settings, None) == [str(inbox(settings)), str(Path.cwd())]


@pytest.mark.parametrize("configured", ["/data/in", '{"a": 1}', "[1]"])
def test_roots_that_are_not_a_list_of_directories_say_how_to_write_them(
    tmp_path: Path, configured: str
) -> None:
    with pytest.raises(ConfigError, match="LEPTON_INGEST_ROOTS") as raised:
        ingest_roots(Settings(state_dir=tmp_path / "state"), configured)
    assert raised.value.hint is not None
    assert '["/data/in"]' in raised.value.hint
