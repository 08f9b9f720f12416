"""The SDK's pure parts of a job's lifecycle: a job's story folded as the scheduler folds
it, the refusals a cancel would meet, and the submit checks' one-line refusals with their
"did you mean" suggestions (and a catalog that cannot be reached)."""

from __future__ import annotations

import socket
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest

from lepton.config import Settings
from lepton.contract.identity import Principal
from lepton.contract.job_events import job_event
from lepton.data.catalog import DatasetInfo, DatasetVersion
from lepton.sdk._catalog import CatalogTransport
from lepton.sdk._checks import (
    DatasetUnchecked,
    check_dataset,
    did_you_mean,
    missing_column,
    no_dataset,
)
from lepton.sdk._jobs import MAX_HISTORY_EVENTS, Story, _authorship_refusal
from lepton.sdk.builders import DatasetRef, JobRequest, TrainingTask
from tests.integration.scheduler_support import job

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def event(kind: str, tenant: str = "acme", **details: Any) -> dict[str, Any]:
    return dict(job_event("j", kind, tenant, **details))


def test_the_outcome_is_decided_as_the_scheduler_decides_it() -> None:
    story = Story.of(
        "j",
        job("j"),
        [
            event("queued"),
            event("assigned", node_id="a", lease_epoch=1, worker_index=0),
            event("assigned", node_id="b", lease_epoch=2, worker_index=0, attempt=1),
            # the first node's late report names a lease the job no longer holds
            event("succeeded", node_id="a", lease_epoch=1, worker_index=0),
            event("started", node_id="b", lease_epoch=2, worker_index=0),
        ],
    )
    assert (story.state, story.outcome) == ("running", None)
    story.add(event("cancel_requested", reason="cancelled by alice"))
    assert story.history().cancel_requested
    ended = story.add(event("cancelled", lease_epoch=2, reason="cancelled by alice"))
    history = story.history()
    assert history.outcome == ended
    assert (history.state, history.finished, history.cancel_requested) == (
        "cancelled",
        True,
        False,
    )
    assert [e.kind for e in history.events][-2:] == ["cancel_requested", "cancelled"]
    assert history.tenant == "acme"


def test_a_job_known_only_by_its_events_and_records_of_other_jobs_under_its_key() -> None:
    stray = dict(job_event("other", "succeeded", "mallory"))
    story = Story.of("j", None, [stray, event("queued", tenant="acme")])
    assert story.known
    assert story.tenant == "acme"
    assert story.state == "queued"
    assert [e.job_id for e in story.events] == ["j"]
    assert not Story.of("j", None, [stray]).known


def test_a_history_keeps_the_newest_events_and_counts_the_others() -> None:
    story = Story.of("j", job("j"), [event("queued")])
    for _ in range(MAX_HISTORY_EVENTS + 4):
        story.add(event("progress", node_id="n", lease_epoch=0, worker_index=0))
    history = story.history()
    assert len(history.events) == MAX_HISTORY_EVENTS
    assert history.omitted == 5
    assert history.events[0].kind == "progress"
    assert history.state == "queued"


def test_an_event_no_producer_writes_is_shown_and_decides_nothing() -> None:
    story = Story.of("j", job("j"), [event("queued")])
    story.add(event("failed") | {"node_id": "n\u202e"})
    assert story.state == "queued"
    assert [e.kind for e in story.events] == ["queued", "failed"]


def test_a_cancel_is_refused_as_the_services_refuse_it() -> None:
    story = Story.of("j", job("j", tenant="victim"), [event("queued", tenant="victim")])
    mine = event("cancel_requested", tenant="mallory")
    assert story.refusal(mine) == "tenant mallory may not cancel job j of another tenant"
    theirs = event("cancel_requested", tenant="victim")
    assert story.refusal(theirs) is None
    mallory = Principal("tenant", "mallory")
    assert _authorship_refusal(theirs, mallory) == "tenant:mallory may not act for tenant victim"
    assert _authorship_refusal(mine, mallory) is None
    assert _authorship_refusal(theirs, Principal("operator", "local")) is None


def info(name: str, owner: str = "acme") -> DatasetInfo:
    return DatasetInfo(owner, name, "sha256:1", 10, [], None, NOW, owner != "acme")


def version(*columns: str) -> DatasetVersion:
    return DatasetVersion(
        "acme",
        "house_prices",
        "sha256:1",
        10,
        [
            {"name": name, "type": "float", "nullable": False, "sensitive": False}
            for name in columns
        ],
        {},
        True,
        [],
        None,
        NOW,
    )


def test_a_misspelt_dataset_gets_the_closest_names_and_a_hint() -> None:
    readable = [info("house_prices"), info("diagnosis"), info("house_prizes", owner="bank")]
    refused = no_dataset("acme", DatasetRef(name="house_prize"), readable)
    message = str(refused)
    assert message.startswith("tenant acme has no dataset 'house_prize' it may read; ")
    assert "did you mean house_prizes (owner bank) or house_prices?" in message
    assert "\n" not in message
    assert refused.hint is not None
    assert "`lepton data list --tenant acme`" in refused.hint
    assert "--no-check" in refused.hint
    nothing = no_dataset("acme", DatasetRef(name="weather"), readable)
    assert "did you mean" not in str(nothing)


def test_a_missing_target_column_is_refused_with_the_columns() -> None:
    assert missing_column("价格", version("面积", "区域", "价格")) is None
    refused = missing_column("prise", version("area", "district", "price"))
    assert refused is not None
    assert str(refused) == (
        "task.target_column: dataset acme/house_prices has no column 'prise'; did you mean price?"
    )
    assert refused.hint == "its columns: area, district, price"
    wide = missing_column("y", version(*(f"c{i}" for i in range(25))))
    assert wide is not None
    assert wide.hint is not None
    assert wide.hint.endswith("c19 and 5 more")


def test_did_you_mean_works_in_any_script() -> None:
    assert did_you_mean("房价-B", ["房价-B区", "diagnosis"]) == ["房价-B区"]
    assert did_you_mean("zzz", ["house_prices"]) == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_an_unreachable_catalog_lets_the_job_go_with_a_warning() -> None:
    settings = Settings(
        database_url=f"postgresql://nobody:secret@127.0.0.1:{closed_port()}/lepton",
        connect_timeout_s=0.3,
    )
    submitted = JobRequest(
        tenant="acme", dataset="house_prices", task=TrainingTask(target_column="price")
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetUnchecked)
        await check_dataset(CatalogTransport(settings), submitted)
    [warning] = caught
    assert warning.category is DatasetUnchecked
    text = str(warning.message)
    assert "could not be reached" in text
    assert f"`lepton jobs show {submitted.job_id}`" in text
    assert "secret" not in text


@pytest.mark.parametrize("name", ["house_prices", "房价-B区"])
def test_suggestions_name_a_shared_dataset_with_its_owner(name: str) -> None:
    refused = no_dataset("acme", DatasetRef(name=name[:-1]), [info(name, owner="bank")])
    assert f"did you mean {name} (owner bank)?" in str(refused)
