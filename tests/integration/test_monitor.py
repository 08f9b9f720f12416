"""The monitor against the real stack: state from events, alerts, history, lag, API errors.

The helpers at the top run the monitor in-process and read its API; the browser test
(test_monitor_browser.py) uses them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from lepton.bus import Publisher, ensure_topics
from lepton.config import KafkaAccess, Settings
from lepton.contract.identity import Principal, SigningKey
from lepton.contract.topics import Namespace, dead_letter_topic
from lepton.runtime.identity import master_key
from lepton.services.monitor.app import MonitorService, build
from lepton.services.monitor.settings import MonitorSettings
from tests.integration.scheduler_support import dead_letter_for
from tests.samples import sample

pytestmark = pytest.mark.integration

T = TypeVar("T")


def fresh_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


def settings_for(
    kafka: KafkaAccess, database_url: str, prefix: str, **extra: Any
) -> MonitorSettings:
    return MonitorSettings(
        **kafka.settings(),
        database_url=database_url,
        topic_prefix=prefix,
        monitor_port=0,
        monitor_metrics_port=0,
        monitor_sample_interval_s=0.2,
        monitor_lag_interval_s=0.5,
        **extra,
    )


@contextlib.asynccontextmanager
async def running(settings: MonitorSettings) -> AsyncIterator[MonitorService]:
    """The monitor, started and serving; stopped gracefully on exit."""
    monitor = build(settings)
    task = asyncio.create_task(monitor.service.run())
    try:
        async with asyncio.timeout(60):
            await monitor.service.ready.wait()
            await monitor.web_ready.wait()
        yield monitor
    finally:
        monitor.service.stop_soon()
        async with asyncio.timeout(60):
            await task


def topic(prefix: str, name: str) -> Any:
    return Namespace(prefix).topic(name)


def key_of(principal: Principal) -> SigningKey:
    """``principal``'s key, from the master key the tests' services verify with (the
    session's stack's, in LEPTON_IDENTITY_KEY once the stack fixture has run)."""
    return master_key(Settings()).derive(principal)


def operator() -> SigningKey:
    return key_of(Principal("operator", "tests"))


def bearer(key: SigningKey | None = None, ttl_s: float = 300) -> dict[str, str]:
    """The Authorization header of a fresh token of ``key`` (an operator's by default)."""
    key = key or operator()
    return {"Authorization": f"Bearer {key.token(int(time.time() + ttl_s))}"}


def _get(url: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def get(base: str, path: str, key: SigningKey | None = None) -> tuple[int, Any]:
    """GET with a token of ``key`` (an operator's unless said otherwise), decoded."""
    status, _, body = await asyncio.to_thread(_get, base.rstrip("/") + path, bearer(key))
    return status, json.loads(body) if body else None


async def get_raw(
    base: str, path: str, headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET with these headers (an operator's token when none are given)."""
    given = bearer() if headers is None else headers
    return await asyncio.to_thread(_get, base.rstrip("/") + path, given)


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout_s: float = 30.0, what: str = "condition"
) -> T:
    """Polls ``probe`` until it returns something other than None (the monitor is another
    loop behind a broker, so there is nothing to await directly), within a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout_s} s")
        await asyncio.sleep(0.05)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def heartbeat(node_id: str, *, sent_at: int, sequence: int = 1, **extra: Any) -> dict[str, Any]:
    record = sample("lepton.NodeHeartbeat")
    record.update(
        node_id=node_id,
        region="eu-1",
        capacity={"cpu_millicores": 4000, "memory_mib": 8192, "gpus": 1, "network_mbps": 1000},
        usage={"cpu_millicores": 1000, "memory_mib": 2048, "gpus": 0, "network_mbps": 10},
        running_job_ids=[],
        sent_at=sent_at,
        sequence=sequence,
        agent_started_at=sent_at - 1000 * sequence,
        **extra,
    )
    return record


def beating_for_a_minute(node_id: str, until: int) -> list[tuple[str, dict[str, Any]]]:
    """A node's heartbeats over the minute before ``until``, 10 s apart: a node heard all
    along, whichever partition the monitor happens to read first (a jump of the newest
    heartbeat past the dead threshold would be the pipeline resuming after a stall)."""
    return [
        (node_id, heartbeat(node_id, sent_at=until - ago, sequence=7 - ago // 10_000))
        for ago in range(60_000, -1, -10_000)
    ]


def job_request(job_id: str, *, submitted_at: int, name: str | None = None) -> dict[str, Any]:
    record = sample("lepton.JobRequested")
    record.update(
        job_id=job_id,
        tenant="acme",
        name=name,
        priority_class="high",
        priority=10,
        submitted_at=submitted_at,
    )
    return record


def job_assigned(job_id: str, node_id: str, *, assigned_at: int) -> dict[str, Any]:
    record = sample("lepton.JobAssigned")
    record.update(
        job_id=job_id,
        node_id=node_id,
        tenant="acme",
        action="run",
        attempt=0,
        assigned_at=assigned_at,
    )
    return record


def job_event(job_id: str, kind: str, *, time: int, **extra: Any) -> dict[str, Any]:
    record = sample("lepton.JobEvent", 0)
    record.update(job_id=job_id, kind=kind, tenant="acme", time=time, **extra)
    return record


async def json_when(base: str, path: str, check: Callable[[Any], bool] = bool) -> Any:
    async def probe() -> Any:
        status, body = await get(base, path)
        return body if status == 200 and check(body) else None

    return await eventually(probe, what=f"GET {path}")


async def test_heartbeats_and_job_events_build_the_views(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    prefix = fresh_prefix()
    async with running(settings_for(kafka, database_for("monitor"), prefix)) as monitor:
        assert monitor.url is not None
        now = now_ms()
        node = f"node-{uuid.uuid4().hex[:6]}"
        await publisher.publish(
            topic(prefix, "lepton.node.heartbeats"), node, heartbeat(node, sent_at=now)
        )
        view = await json_when(monitor.url, f"/api/nodes/{node}")
        assert view["alive"] is True
        assert view["region"] == "eu-1"
        assert view["utilisation"]["cpu_millicores"] == 0.25

        job = f"job-{uuid.uuid4().hex[:6]}"
        await publisher.publish(
            topic(prefix, "lepton.jobs.requested"), job, job_request(job, submitted_at=now - 400)
        )
        queued = await json_when(monitor.url, f"/api/jobs/{job}")
        assert queued["state"] == "requested"
        queues = await json_when(monitor.url, "/api/queues")
        assert {"tenant": "acme", "priority_class": "high"}.items() <= queues["queues"][0].items()
        assert queues["queues"][0]["pending"] == 1

        await publisher.publish(
            topic(prefix, "lepton.jobs.assigned"), node, job_assigned(job, node, assigned_at=now)
        )
        # The assignment and the job's events are on two topics, read in either order; a
        # trainer's "started" answers the assignment, so it follows once that is seen.
        await json_when(monitor.url, f"/api/jobs/{job}", lambda body: body["state"] == "assigned")
        for kind, at in (("started", now + 10), ("succeeded", now + 1010)):
            await publisher.publish(
                topic(prefix, "lepton.jobs.events"), job, job_event(job, kind, time=at)
            )
        done = await json_when(
            monitor.url, f"/api/jobs/{job}", lambda body: body["state"] == "succeeded"
        )
        assert done["node_ids"] == [node]
        overview = await json_when(monitor.url, "/api/overview")
        assert overview["scheduling_latency_ms"]["p50"] == 400
        assert overview["jobs"]["duration_ms"]["p50"] == 1000
        assert overview["queue"]["pending"] == 0

        assert monitor.metrics_url is not None
        status, _, metrics = await get_raw(monitor.metrics_url, "/metrics/", headers={})
        assert status == 200
        assert b'lepton_nodes{state="alive"} 1.0' in metrics
        # Every rule reads a value, firing or not; request-to-assignment latency is the
        # scheduler's histogram now, not a gauge here.
        assert b'lepton_alerts_firing{rule="node_dead",severity="critical"} 0.0' in metrics
        assert b"lepton_cluster_utilisation_ratio{" in metrics


async def test_node_dead_alert_fires_then_resolves_on_lepton_alerts(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    prefix = fresh_prefix()
    alerts = AIOKafkaConsumer(
        topic(prefix, "lepton.alerts").name,
        **kafka.aiokafka(),
        group_id=None,
        auto_offset_reset="earliest",
    )
    async with running(settings_for(kafka, database_for("monitor"), prefix)) as monitor:
        await alerts.start()
        try:
            node = f"node-{uuid.uuid4().hex[:6]}"
            silent_since = now_ms() - 60_000
            beats = topic(prefix, "lepton.node.heartbeats")
            # Dead: a minute behind another node's heartbeat (were it the only node, no
            # heartbeat at all would be the pipeline's fault: heartbeats_stopped).
            await publisher.publish_many(beats, beating_for_a_minute("other", now_ms()))
            await publisher.publish(beats, node, heartbeat(node, sent_at=silent_since))
            fired = await next_alert(alerts, node)
            assert (fired["rule"], fired["state"], fired["severity"]) == (
                "node_dead",
                "firing",
                "critical",
            )
            assert fired["value"] >= 60
            assert fired["labels"] == {"region": "eu-1"}

            await publisher.publish(beats, node, heartbeat(node, sent_at=now_ms(), sequence=2))
            resolved = await next_alert(alerts, node)
            assert (resolved["rule"], resolved["state"]) == ("node_dead", "resolved")
            assert resolved["active_since"] == fired["active_since"]

            assert monitor.url is not None
            history = await json_when(
                monitor.url, "/api/alerts", lambda body: len(body["history"]) >= 2
            )
            assert [a["state"] for a in history["history"][:2]] == ["resolved", "firing"]
            assert history["active"] == []
        finally:
            await alerts.stop()


async def test_an_alert_too_large_for_its_topic_is_set_aside_and_the_monitor_goes_on(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    """An alert the broker would refuse was retried by the sampler for ever (no more
    alerts, no more samples). Now it is set aside to ``lepton.alerts.dlq`` with the reason,
    still kept in the monitor's history, and the next alert is handled too."""
    prefix = fresh_prefix()
    alerts = topic(prefix, "lepton.alerts")
    # Smaller than any alert: every one is refused.
    await ensure_topics(kafka, [dataclasses.replace(alerts, config={"max.message.bytes": "64"})])
    letters = AIOKafkaConsumer(
        dead_letter_topic(alerts.name),
        **kafka.aiokafka(),
        group_id=None,
        auto_offset_reset="earliest",
    )
    async with running(settings_for(kafka, database_for("monitor"), prefix)) as monitor:
        await letters.start()
        try:
            node = f"node-{uuid.uuid4().hex[:6]}"
            beats = topic(prefix, "lepton.node.heartbeats")
            await publisher.publish_many(beats, beating_for_a_minute("other", now_ms()))
            await publisher.publish(beats, node, heartbeat(node, sent_at=now_ms() - 60_000))
            fired = await dead_letter_for(letters, f"node_dead/{node}")
            assert fired["dlq_error_type"] == "MessageTooLargeError"
            await publisher.publish(beats, node, heartbeat(node, sent_at=now_ms(), sequence=2))
            await dead_letter_for(letters, f"node_dead/{node}")  # resolved: the sampler went on
            assert monitor.url is not None
            history = await json_when(
                monitor.url, "/api/alerts", lambda body: len(body["history"]) >= 2
            )
            assert [a["state"] for a in history["history"][:2]] == ["resolved", "firing"]
        finally:
            await letters.stop()


async def next_alert(consumer: AIOKafkaConsumer, subject: str) -> dict[str, Any]:
    from lepton.contract import default_codec

    codec = default_codec()
    async with asyncio.timeout(30):
        while True:
            message = await consumer.getone()
            _, record = codec.decode(message.value, expected="lepton.Alert")
            if record["subject"] == subject:
                assert message.key.decode() == f"{record['rule']}/{subject}"
                return dict(record)


async def test_history_and_views_survive_a_restart(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    prefix = fresh_prefix()
    settings = settings_for(kafka, database_for("monitor"), prefix)
    node = f"node-{uuid.uuid4().hex[:6]}"
    job = f"job-{uuid.uuid4().hex[:6]}"
    async with running(settings) as first:
        assert first.url is not None
        await publisher.publish(
            topic(prefix, "lepton.node.heartbeats"), node, heartbeat(node, sent_at=now_ms())
        )
        await publisher.publish(
            topic(prefix, "lepton.jobs.requested"), job, job_request(job, submitted_at=now_ms())
        )
        await json_when(first.url, f"/api/jobs/{job}")
        before = await json_when(
            first.url,
            "/api/series?metric=nodes&subject=alive&resolution=10",
            lambda body: body["series"].get("alive", [[0, 0]])[-1][1] > 0,
        )
    async with running(settings) as second:
        assert second.url is not None
        # Straight after the start, before any new event: restored, not re-read.
        status, after = await get(
            second.url, "/api/series?metric=nodes&subject=alive&resolution=10"
        )
        assert status == 200
        # The buckets written before the restart are there (the new monitor may add to them).
        kept = [bucket[0] for bucket in after["series"]["alive"]]
        written_before = [bucket[0] for bucket in before["series"]["alive"]]
        assert kept[: len(written_before)] == written_before
        assert max(bucket[3] for bucket in after["series"]["alive"]) == 1
        assert (await get(second.url, f"/api/nodes/{node}"))[0] == 200
        status, restored = await get(second.url, f"/api/jobs/{job}")
        assert status == 200
        assert restored["state"] == "requested"
        assert after["truncated"] is False
        # Retention keeps everything this young, at every resolution.
        for resolution in (300, 3600):
            status, coarse = await get(
                second.url, f"/api/series?metric=nodes&subject=alive&resolution={resolution}"
            )
            assert coarse["series"]["alive"]


async def test_a_crash_after_the_last_snapshot_loses_no_event_and_counts_none_twice(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    prefix = fresh_prefix()
    # Snapshots only when the test says so, and none at the "crash".
    settings = settings_for(
        kafka, database_for("monitor"), prefix, monitor_snapshot_interval_s=3600
    )
    requested = topic(prefix, "lepton.jobs.requested")
    async with running(settings) as first:
        assert first.url is not None
        assert first.monitor is not None
        await publisher.publish(requested, "j1", job_request("j1", submitted_at=now_ms()))
        await json_when(first.url, "/api/jobs/j1")
        await first._save(first.monitor, now_ms())  # the last snapshot before the crash
        await publisher.publish(requested, "j2", job_request("j2", submitted_at=now_ms()))
        await json_when(first.url, "/api/jobs/j2")
        admin = AIOKafkaAdminClient(**kafka.aiokafka())
        await admin.start()
        try:

            async def committed_both() -> bool | None:
                offsets = await admin.list_consumer_group_offsets(prefix + "lepton-monitor")
                done = sum(o.offset for tp, o in offsets.items() if tp.topic == requested.name)
                return True if done == 2 else None

            await eventually(committed_both, what="the monitor's commit of both requests")
        finally:
            await admin.close()

        async def crash_without_saving(*_: Any) -> None:
            return None

        first._save = crash_without_saving  # type: ignore[method-assign]
    async with running(settings) as second:
        assert second.url is not None
        for job in ("j1", "j2"):
            status, view = await get(second.url, f"/api/jobs/{job}")
            assert (status, view["state"]) == (200, "requested")
        status, pipeline = await get(second.url, "/api/pipeline")
        assert pipeline["events_by_topic"]["lepton.jobs.requested"] == 2


async def test_consumer_lag_per_group_and_topic_and_dead_letter_counts(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    prefix = fresh_prefix()
    async with running(settings_for(kafka, database_for("monitor"), prefix)) as monitor:
        assert monitor.url is not None
        requested = topic(prefix, "lepton.jobs.requested")
        for index in range(3):
            job = f"lagging-{index}"
            await publisher.publish(requested, "same-key", job_request(job, submitted_at=now_ms()))
        # Another service's group that read nothing yet: its lag is the three messages.
        group = AIOKafkaConsumer(
            **kafka.aiokafka(),
            group_id=prefix + "lepton-slow",
            enable_auto_commit=False,
        )
        await group.start()
        try:
            partitions = [
                TopicPartition(requested.name, number)
                for number in sorted(await publisher.partitions(requested.name))
            ]
            group.assign(partitions)
            await group.commit({partition: 0 for partition in partitions})
        finally:
            await group.stop()

        raw = AIOKafkaProducer(**kafka.aiokafka())
        await raw.start()
        try:
            events = topic(prefix, "lepton.jobs.events").name
            await raw.send_and_wait(events, b"not avro at all", key=b"job-x")
        finally:
            await raw.stop()

        def lag_of(body: Any, name: str) -> Any:
            rows = [
                row
                for row in body["lag"]
                if row["group"] == name and row["topic"] == "lepton.jobs.requested"
            ]
            return rows[0] if rows else None

        pipeline = await json_when(
            monitor.url,
            "/api/pipeline",
            lambda body: (
                lag_of(body, "lepton-slow") is not None
                and body["dead_letters"].get("lepton.jobs.events") == 1
            ),
        )
        slow = lag_of(pipeline, "lepton-slow")
        assert (slow["messages"], slow["end"], slow["committed"]) == (3, 3, 0)
        own = await json_when(
            monitor.url,
            "/api/pipeline",
            lambda body: (lag_of(body, "lepton-monitor") or {}).get("messages") == 0,
        )
        assert lag_of(own, "lepton-monitor")["seconds"] == 0.0
        assert own["dead_letters"]["lepton.node.heartbeats"] == 0


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/api/jobs?limit=abc", "limit must be an integer"),
        ("/api/jobs?limit=0", "limit must be between 1 and 1000"),
        ("/api/jobs?limit=99999999999999999999999", "limit must be between"),
        ("/api/jobs?state=sleeping", "state must be one of"),
        ("/api/jobs?colour=red", "unknown query parameter 'colour'"),
        ("/api/jobs?limit=1&limit=2", "given more than once"),
        ("/api/jobs?tenant=", "tenant must be 1 to 256 printable characters"),
        ("/api/jobs?tenant=%00", "printable"),
        ("/api/nodes?state=zombie", "state must be one of alive, all, dead"),
        ("/api/series", "metric is required"),
        ("/api/series?metric=nope", "metric must be one of"),
        ("/api/series?metric=nodes&since=10&until=5", "since (10) must be before until (5)"),
        ("/api/series?metric=nodes&since=-5", "since must be between"),
        ("/api/series?metric=nodes&resolution=7", "resolution must be one of 10, 300, 3600"),
        ("/api/series?metric=nodes&since=0&resolution=10", "more than 20000 points"),
        ("/api/alerts?state=sleeping", "state must be one of firing, resolved"),
        ("/api/overview?x=1", "unknown query parameter 'x'"),
        ("/api/stream?x=1", "unknown query parameter 'x'"),
    ],
)
async def test_malformed_queries_get_a_400_with_the_reason(
    path: str, reason: str, shared_monitor: MonitorService
) -> None:
    assert shared_monitor.url is not None
    status, body = await get(shared_monitor.url, path)
    assert status == 400, body
    assert reason in body["error"]


async def test_unknown_things_are_404_and_pages_carry_a_strict_csp(
    shared_monitor: MonitorService,
) -> None:
    assert shared_monitor.url is not None
    for path in ("/api/jobs/nope", "/api/nodes/nope", "/api/nothing", "/static/nothing.js"):
        status, body = await get(shared_monitor.url, path)
        assert status == 404, path
        assert body["error"]
    status, headers, page = await get_raw(shared_monitor.url, "/")
    assert status == 200
    policy = {key.lower(): value for key, value in headers.items()}["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert b'<script src="/static/app.js"' in page


@pytest.fixture(scope="module")
async def shared_monitor(
    kafka: KafkaAccess, database_for: Callable[[str], str]
) -> AsyncIterator[MonitorService]:
    async with running(settings_for(kafka, database_for("monitor"), fresh_prefix())) as monitor:
        yield monitor
