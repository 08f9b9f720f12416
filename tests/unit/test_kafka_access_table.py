"""The ACL table: the README says what lepton/contract/topics.py grants, and the grants
follow the rules the table states."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from lepton.cli.access import kafka_acls_lines
from lepton.contract.topics import (
    ALL_TOPICS,
    Grant,
    Namespace,
    dead_letter_topic,
    grants,
    who_may_do_what,
)

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def test_the_readme_table_is_the_generated_one() -> None:
    found = re.search(
        r"<!-- who-may-do-what:[^\n]*-->\n(.*?)<!-- /who-may-do-what -->", README, re.DOTALL
    )
    assert found, "README lacks the who-may-do-what table"
    assert found.group(1) == who_may_do_what(), "regenerate it from who_may_do_what()"


def test_the_scheduler_alone_assigns_and_the_evaluator_alone_evaluates() -> None:
    writers = {
        grant.name: grant.actor
        for grant in grants()
        if grant.operation == "write"
        and grant.name in {"lepton.jobs.assigned", "lepton.models.evaluated"}
    }
    assert writers == {"lepton.jobs.assigned": "scheduler", "lepton.models.evaluated": "evaluator"}


def test_every_service_reader_writes_the_dead_letters_and_the_client_none() -> None:
    found = set(grants())
    for topic in ALL_TOPICS:
        for actor in topic.readers:
            letter = Grant(actor, "topic", dead_letter_topic(topic.name), "write")
            assert (letter in found) == (actor != "client"), (actor, topic.name)


def test_whoever_writes_a_topic_may_read_its_size_limit() -> None:
    found = set(grants())
    for grant in found:
        if grant.operation == "write":
            assert dataclasses.replace(grant, operation="describe_configs") in found, grant
    assert {grant.name for grant in found if grant.operation == "describe_configs"} == {
        grant.name for grant in found if grant.operation == "write"
    }


def test_grants_follow_the_prefix_and_name_nothing_outside_it() -> None:
    prefix = "t1234."
    for grant in grants(Namespace(prefix)):
        assert grant.name.startswith(prefix), grant


def test_kafka_acls_lines_name_each_principal_and_resource() -> None:
    lines = kafka_acls_lines(grants(), "User:lepton-{actor}")
    assert (
        "kafka-acls.sh --bootstrap-server $BOOTSTRAP --command-config admin.properties --add "
        "--allow-principal User:lepton-trainer --operation Read --resource-pattern-type "
        "prefixed --group lepton-trainer-"
    ) in lines
    assert (
        "kafka-acls.sh --bootstrap-server $BOOTSTRAP --command-config admin.properties --add "
        "--allow-principal User:lepton-client --operation DescribeConfigs --operation Read "
        "--operation Write --topic lepton.jobs.events"
    ) in lines
    assert not any("lepton-admin" in line for line in lines), "the admin is a super user"
