"""The broker's refusals as audit events: each line of its denials log read into who, what,
which resource and why; repeats counted, not itemised; the log followed across restarts,
rotations and overlong lines (real files; the lines are those a Kafka 4.1 broker wrote)."""

from __future__ import annotations

import os
from pathlib import Path

from lepton.services.monitor.broker_denials import Aggregator, BrokerDenial, parse
from lepton.services.monitor.log_follower import MAX_LINE, LogFollower

ACL = (
    "2026-12-04T17:49:46.765Z kafka.authorizer.logger Principal = User:lepton-client is "
    "Denied operation = WRITE from host = 127.0.0.1 on resource = "
    "Topic:LITERAL:try.lepton.models.evaluated for request = Produce with resourceRefCount = 1 "
    "based on rule DefaultDeny"
)
GROUP = (
    "2026-12-04T17:49:57.740Z kafka.authorizer.logger Principal = User:lepton-client is "
    "Denied operation = DESCRIBE from host = 127.0.0.1 on resource = "
    "Group:LITERAL:try.lepton-scheduler for request = FindCoordinator with resourceRefCount = 1 "
    "based on rule DefaultDeny"
)
PASSWORD = (
    "2026-12-04T17:49:46.909Z org.apache.kafka.common.network.Selector [SocketServer "
    "listenerType=BROKER, nodeId=1] Failed authentication with /127.0.0.1 "
    "(channelId=127.0.0.1:35449-127.0.0.1:40214-2-2) (Authentication failed during "
    "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512)"
)
PLAINTEXT = (
    "2026-12-04T17:49:57.747Z org.apache.kafka.common.network.Selector [SocketServer "
    "listenerType=BROKER, nodeId=1] Unexpected error from /127.0.0.1 "
    "(channelId=127.0.0.1:35449-127.0.0.1:40224-0-13); closing connection [Unexpected Kafka "
    "request of type METADATA during SASL handshake.]"
)
T0 = 1796406586765  # ACL's time


def test_an_acl_denial_says_who_what_which_resource_why_and_when() -> None:
    assert parse(ACL) == BrokerDenial(
        T0,
        "User:lepton-client",
        "kafka:WRITE",
        "publish",
        "topic:try.lepton.models.evaluated",
        "no ACL allows it (Produce request from 127.0.0.1)",
    )
    group = parse(GROUP)
    assert group is not None
    assert (group.operation, group.action, group.resource) == (
        "kafka:DESCRIBE",
        "read",
        "group:try.lepton-scheduler",
    )


def test_a_refused_password_and_a_plaintext_client_are_denials_of_their_address() -> None:
    password, plaintext = parse(PASSWORD), parse(PLAINTEXT)
    assert password == BrokerDenial(
        T0 + 144,
        "host:127.0.0.1",
        "kafka:AUTHENTICATE",
        "read",
        "listener:127.0.0.1:35449",
        "authentication failed: Authentication failed during authentication due to invalid "
        "credentials with SASL mechanism SCRAM-SHA-512",
    )
    assert plaintext is not None
    assert (plaintext.actor, plaintext.operation, plaintext.reason) == (
        "host:127.0.0.1",
        "kafka:CONNECT",
        "connection closed: Unexpected Kafka request of type METADATA during SASL handshake.",
    )


def test_a_hostile_group_name_stays_in_the_resource_and_is_bounded() -> None:
    hostile = "x for request = Produce with resourceRefCount = 1 based on rule Allowed " * 50
    denial = parse(GROUP.replace("try.lepton-scheduler", hostile))
    assert denial is not None
    assert denial.resource.startswith("group:x for request = Produce")
    assert len(denial.resource) <= 300
    assert denial.reason == "no ACL allows it (FindCoordinator request from 127.0.0.1)"


def test_other_lines_are_not_denials() -> None:
    for line in ("", "garbage", ACL.replace("2026-12-04T17:49:46.765Z", "yesterday"), ACL[:80]):
        assert parse(line) is None


def at(denial_line: str, time_ms: int) -> BrokerDenial:
    denial = parse(denial_line)
    assert denial is not None
    return BrokerDenial(time_ms, *(getattr(denial, f) for f in ("actor", "operation", "action")),
                        denial.resource, denial.reason)  # fmt: skip


def test_a_client_retrying_in_a_loop_makes_two_events_a_window() -> None:
    aggregator = Aggregator(60)
    first = aggregator.add(at(PASSWORD, T0))
    assert [e["detail"] for e in first] == [
        "kafka:AUTHENTICATE refused by the broker: authentication failed: Authentication "
        "failed during authentication due to invalid credentials with SASL mechanism "
        "SCRAM-SHA-512"
    ]
    assert first[0]["outcome"] == "denied"
    assert first[0]["time"] == T0
    repeats = [e for i in range(1, 200) for e in aggregator.add(at(PASSWORD, T0 + i * 300))]
    assert repeats == []
    assert aggregator.add(at(ACL, T0 + 1000)) != []  # another kind is itemised at once
    assert aggregator.due(T0 + 59_999) == []
    summary = aggregator.due(T0 + 60_000)
    assert len(summary) == 1
    assert summary[0]["time"] == T0 + 199 * 300
    assert summary[0]["detail"] is not None
    assert summary[0]["detail"].endswith(
        "; and 199 more time(s) within 59.7 s after 2026-12-04T17:49:46.765+00:00"
    )
    assert aggregator.due(T0 + 120_000) == []  # the ACL denial never repeated


def test_a_backlog_is_windowed_on_the_logs_clock() -> None:
    aggregator = Aggregator(10)
    events = [e for i in range(30) for e in aggregator.add(at(ACL, T0 + i * 1000))]
    # t=0 itemised; t=10 s closes the first window (9 repeats) and opens the next; t=20 too.
    assert [e["time"] for e in events] == [T0, T0 + 9000, T0 + 10_000, T0 + 19_000, T0 + 20_000]
    assert [e["time"] for e in aggregator.flush()] == [T0 + 29_000]


def test_beyond_the_kinds_a_window_itemises_the_rest_are_counted_together() -> None:
    aggregator = Aggregator(60, max_kinds=3)
    topics = [ACL.replace("try.lepton.models.evaluated", f"topic-{i}") for i in range(100)]
    events = [e for i, line in enumerate(topics) for e in aggregator.add(at(line, T0 + i))]
    assert [e["resource"] for e in events] == [
        "topic:topic-0",
        "topic:topic-1",
        "topic:topic-2",
        "*",
    ]
    assert events[3]["detail"] is not None
    assert "more than 3 kinds of denial" in events[3]["detail"]
    assert "topic:topic-3" in events[3]["detail"]
    (overflow,) = (e for e in aggregator.flush() if e["resource"] == "*")
    assert overflow["detail"] is not None
    assert "and 96 more time(s)" in overflow["detail"]


def write(path: Path, *lines: str, end: str = "\n") -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write("".join(line + end for line in lines))


def test_the_follower_resumes_at_its_position_and_waits_for_unfinished_lines(
    tmp_path: Path,
) -> None:
    log = tmp_path / "denials.log"
    follower = LogFollower(log, None)
    assert follower.read() == []  # not written yet
    write(log, "one", "two")
    write(log, "thr", end="")
    assert follower.read() == ["one", "two"]
    saved = follower.position
    write(log, "ee")
    assert follower.read() == ["three"]
    follower.close()
    again = LogFollower(log, saved)
    assert again.read() == ["three"]
    assert again.read() == []


def test_a_rotation_while_stopped_is_finished_before_the_new_file(tmp_path: Path) -> None:
    log = tmp_path / "denials.log"
    write(log, "one")
    follower = LogFollower(log, None)
    assert follower.read() == ["one"]
    saved = follower.position
    follower.close()
    write(log, "two")  # written, then rolled over, while the follower was stopped
    os.rename(log, tmp_path / "denials.log.1")
    write(log, "three")
    again = LogFollower(log, saved)
    assert again.read() == ["two", "three"]
    assert not again.lost


def test_a_rotation_while_following_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "denials.log"
    write(log, "one")
    follower = LogFollower(log, None)
    assert follower.read() == ["one"]
    write(log, "two")
    write(log, "unfinished", end="")
    os.rename(log, tmp_path / "denials.log.1")
    write(log, "three")
    assert follower.read() == ["two", "unfinished", "three"]
    write(log, "four")
    assert follower.read() == ["four"]


def test_a_file_gone_while_stopped_is_said_and_the_new_one_read(tmp_path: Path) -> None:
    log = tmp_path / "denials.log"
    write(log, "one")
    follower = LogFollower(log, None)
    follower.read()
    saved = follower.position
    follower.close()
    log.unlink()
    write(log, "two")
    again = LogFollower(log, saved)
    assert again.read() == ["two"]
    assert again.lost


def test_a_truncated_file_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "denials.log"
    write(log, "a long first line", "another")
    follower = LogFollower(log, None)
    follower.read()
    with log.open("w") as file:  # copytruncate-style rotation
        file.write("new\n")
    assert follower.read() == ["new"]


def test_an_overlong_line_keeps_its_start_and_end_within_the_bound(tmp_path: Path) -> None:
    log = tmp_path / "denials.log"
    huge = "START" + "x" * 5_000_000 + "END"
    write(log, huge, ACL)
    follower = LogFollower(log, None)
    lines = follower.read()
    while follower.behind:
        lines += follower.read()
    assert len(lines) == 2
    assert lines[0].startswith("START")
    assert lines[0].endswith("END")
    assert len(lines[0].encode()) <= MAX_LINE
    assert lines[1] == ACL
