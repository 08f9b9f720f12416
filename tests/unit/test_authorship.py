"""Who may write what, record by record: every forgery the issue names is refused by the
rules, and every record as its natural author writes it passes them."""

from __future__ import annotations

from typing import Any

import pytest

from lepton.contract.authorship import check, natural_author
from lepton.contract.identity import Principal
from lepton.contract.topics import ALL_TOPICS
from lepton.errors import ForgedRecordError
from tests.samples import sample

ACME, VICTIM = Principal("tenant", "acme"), Principal("tenant", "victim")
OPS = Principal("operator", "ops")
NODE = Principal("node", "n1")
SCHEDULER = Principal("service", "scheduler")
EVALUATOR = Principal("service", "evaluator")


def _job_event(kind: str, **fields: Any) -> dict[str, Any]:
    return sample("lepton.JobEvent") | {"kind": kind, "tenant": "victim"} | fields


@pytest.mark.parametrize("topic", [topic.name for topic in ALL_TOPICS])
def test_every_topics_sample_passes_as_its_natural_author(topic: str) -> None:
    declared = next(t for t in ALL_TOPICS if t.name == topic)
    record = sample(declared.event)
    check(topic, b"n1", record, natural_author(topic, b"n1", record))


@pytest.mark.parametrize(
    ("topic", "key", "record", "principal", "reason"),
    [
        # a tenant asking in another's name, for each kind of request
        ("lepton.jobs.requested", b"j", {"tenant": "victim"}, ACME, "may not act for tenant"),
        ("lepton.data.requested", b"d", {"tenant": "victim"}, ACME, "may not act for tenant"),
        ("lepton.predict.requested", b"p", {"tenant": "victim"}, ACME, "may not act"),
        # a node reporting for another node, or invented by someone else
        ("lepton.node.heartbeats", b"evil-node", None, NODE, "may not report for node"),
        ("lepton.node.heartbeats", b"n1", None, ACME, "may not report for node"),
        # job events: a tenant's "succeeded", a node's for another node, another's cancel
        ("lepton.jobs.events", b"j", _job_event("succeeded", node_id="n1"), ACME, "may not"),
        ("lepton.jobs.events", b"j", _job_event("succeeded", node_id="n2"), NODE, "node n2"),
        ("lepton.jobs.events", b"j", _job_event("assigned", node_id="n1"), NODE, "'assigned'"),
        ("lepton.jobs.events", b"j", _job_event("cancel_requested"), ACME, "tenant victim"),
        ("lepton.jobs.events", b"j", _job_event("cancel_requested"), SCHEDULER, "tenant"),
        # verdicts: a promotion by anyone but the evaluator, a rollback for another tenant
        (
            "lepton.models.promoted",
            b"m",
            {"verdict": "promoted", "tenant": "acme"},
            ACME,
            "'promoted'",
        ),
        (
            "lepton.models.promoted",
            b"m",
            {"verdict": "rolled_back", "tenant": "victim"},
            ACME,
            "tenant victim",
        ),
        ("lepton.models.evaluated", b"m", {"tenant": "acme"}, ACME, "only service:evaluator"),
        ("lepton.models.ready", b"m", {"tenant": "acme"}, ACME, "only a trainer node"),
        ("lepton.jobs.assigned", b"n1", {"tenant": "acme"}, NODE, "only service:scheduler"),
        ("lepton.data.ready", b"d", {"tenant": "acme"}, SCHEDULER, "only service:ingest"),
        ("lepton.audit", b"acme", {"tenant": "acme"}, ACME, "may not write this topic"),
        ("lepton.somewhere.else", b"k", {}, OPS, "no rule allows it"),
    ],
)
def test_forgeries_are_refused_saying_who_tried_what(
    topic: str, key: bytes, record: dict[str, Any] | None, principal: Principal, reason: str
) -> None:
    with pytest.raises(ForgedRecordError, match=reason):
        check(topic, key, record, principal)


@pytest.mark.parametrize(
    ("topic", "record", "principal"),
    [
        ("lepton.jobs.requested", {"tenant": "victim"}, OPS),
        ("lepton.jobs.events", _job_event("cancel_requested"), VICTIM),
        ("lepton.jobs.events", _job_event("failed", node_id="n1"), NODE),
        ("lepton.jobs.events", _job_event("requeued", node_id="n1"), SCHEDULER),
        ("lepton.models.promoted", {"verdict": "rolled_back", "tenant": "victim"}, VICTIM),
        ("lepton.models.promoted", {"verdict": "rolled_back", "tenant": "victim"}, OPS),
        ("lepton.models.promoted", {"verdict": "promoted", "tenant": "victim"}, EVALUATOR),
    ],
)
def test_what_each_principal_may_do_it_can(
    topic: str, record: dict[str, Any], principal: Principal
) -> None:
    check(topic, b"k", record, principal)


def test_a_rule_that_needs_the_record_refuses_before_it_is_decoded() -> None:
    with pytest.raises(ForgedRecordError, match="needs the record"):
        check("lepton.jobs.requested", b"j", None, ACME)
    check("lepton.node.heartbeats", b"n1", None, NODE)  # the key is enough
