"""The Java examples (``examples/``), built with Maven and run against the real stack and the
real services: a job submitted by the Java producer, signed as a tenant, is accepted by the
scheduler, trained, and its outcome reached through the topics; the Kafka Streams
application turns the heartbeats of the jobs the test ran into each tenant's usage, which
must equal what the test computes from the same heartbeats itself.

Each Java program connects as its own principal under the ACLs it is given (the producer as
``lepton-client``, the Streams application as ``lepton-usage``), never as the admin.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import secrets
import subprocess
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
from aiokafka import AIOKafkaConsumer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from lepton.bus import provision
from lepton.config import Actor, KafkaAccess, Settings
from lepton.contract import schemas_dir
from lepton.contract.codec import Codec
from lepton.contract.identity import IdentityKey, Principal
from lepton.contract.topics import Namespace
from tests.examples.java import JavaProcess, build_examples
from tests.integration.processes import BIN, data_service_env, lepton_cli, running
from tests.integration.scheduler_support import dead_letter_for
from tests.integration.test_trainer import houses

# The first build downloads from Maven Central; the services, two trainings and a restart
# of the Streams application follow, on two shared cores.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).parents[2]
WINDOW_MS = 5000  # USAGE_WINDOW_S below: several windows per job
USAGE_TOPIC = "lepton.usage.by-tenant"


@pytest.fixture(scope="module")
def jars() -> dict[str, Path]:
    return build_examples(ROOT / "examples", Settings().maven)


@pytest.fixture(scope="module")
async def stack(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Any]]:
    """Ingest, the scheduler and one trainer agent (two cores: two one-core jobs run side by
    side, so a heartbeat's CPU is split) under a prefix of their own, with each actor's
    ACLs on its topics, and a dataset for two tenants."""
    root = tmp_path_factory.mktemp("java-examples")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await provision(kafka, Namespace(prefix))
    env = data_service_env(kafka, database_for("client"), prefix, root)
    node = f"java-{uuid.uuid4().hex[:6]}"
    commands = [
        ([str(BIN / "lepton-ingest")], "health"),
        ([str(BIN / "lepton-scheduler")], "health"),
        (
            [
                str(BIN / "lepton-trainer"),
                *("--node-id", node, "--cpus", "2", "--memory", "4096", "--interval", "0.25"),
            ],
            "health",
        ),
    ]
    tenants = [f"java-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    houses(400).to_csv(root / "houses.csv", index=False)
    async with running(commands, env, database_for):
        for tenant in tenants:
            ingested = await asyncio.to_thread(
                lepton_cli,
                *("data", "ingest", str(root / "houses.csv"), "--name", "houses"),
                *("--tenant", tenant),
                env=env,
            )
            assert ingested.returncode == 0, ingested.stderr
        yield {"prefix": prefix, "tenants": tenants, "root": root}


def test_the_examples_use_the_local_stacks_kafka_and_avro_versions() -> None:
    """The examples are built against what the stack runs (deploy/local/pom.xml)."""

    def versions(pom: Path) -> dict[str, str]:
        text = pom.read_text(encoding="utf-8")
        return {name: re.findall(rf"<{name}>([^<]+)</{name}>", text)[0] for name in WANTED}

    WANTED = ("kafka.version", "avro.version")
    assert versions(ROOT / "examples" / "pom.xml") == versions(ROOT / "deploy/local/pom.xml")


def test_the_examples_read_records_written_with_an_earlier_version_of_a_schema(
    jars: dict[str, Path], tmp_path: Path
) -> None:
    """Their decoder knows ``schemas/history/`` (bundled into the jar): a ``ModelReady`` of
    version 1 is found by its fingerprint and resolved to the current schema."""

    def fields(schema: dict[str, Any]) -> set[str]:
        return {field["name"] for field in schema["fields"]}

    old = json.loads((schemas_dir() / "history" / "1" / "model_ready.avsc").read_text("utf-8"))
    current = fields(json.loads((schemas_dir() / "model_ready.avsc").read_text("utf-8")))
    record = json.loads((schemas_dir() / "vectors" / "model_ready.json").read_text("utf-8"))[0]
    written = {name: record["record"][name] for name in fields(old)}
    assert current - set(written), "version 1 lacks a field the current schema has"
    parsed = fastavro.parse_schema(old)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, written)
    header = b"\xc3\x01" + bytes.fromhex(
        fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    )
    (tmp_path / "record.hex").write_text((header + body.getvalue()).hex(), encoding="utf-8")
    source = Path(__file__).parent / "java_src" / "DecodeHistory.java"
    compiled = subprocess.run(
        ["javac", "-cp", str(jars["usage"]), "-d", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert compiled.returncode == 0, compiled.stderr
    decoded = subprocess.run(
        ["java", "-cp", os.pathsep.join([str(jars["usage"]), str(tmp_path)]), "DecodeHistory",
         "model_ready", str(tmp_path / "record.hex")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr
    shown = json.loads(decoded.stdout)
    assert shown["model_id"] == written["model_id"]
    for missing in current - set(written):
        assert missing in shown, f"{missing} filled from the current schema's default"


def actor_env(
    access: KafkaAccess, prefix: str, *, properties: Path | None = None, **extra: str
) -> dict[str, str]:
    """What a Java example is given: one principal's Kafka access (``LEPTON_KAFKA_*``, or
    with ``properties`` a Java client properties file written there, as the README's recipe
    does) and the prefix; never the master identity key (the services' alone)."""
    if properties is None:
        connection = access.environment()
    else:
        properties.touch(mode=0o600)
        properties.write_text(access.java_properties(), encoding="utf-8")
        connection = {"LEPTON_KAFKA_CLIENT_PROPERTIES": str(properties)}
    return {"PATH": os.environ["PATH"], **connection, "LEPTON_TOPIC_PREFIX": prefix, **extra}


async def submit(
    jar: Path, env: dict[str, str], *, trials: int = 4, timeout_s: float = 240, status: int = 0
) -> list[str]:
    """Runs the Java producer to the end (its exit status must be ``status``); returns its
    output lines."""
    arguments = ("--dataset", "houses", "--target", "price", "--trials", str(trials))
    producer = await asyncio.create_subprocess_exec(
        "java", "-jar", str(jar), *arguments, "--timeout", str(int(timeout_s)),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(timeout_s + 60):
        out, err = await producer.communicate()
    lines = out.decode().splitlines()
    assert producer.returncode == status, (lines, err.decode()[-3000:])
    return lines


async def test_the_java_producer_submits_a_job_and_follows_it_to_its_outcome(
    jars: dict[str, Path],
    stack: dict[str, Any],
    stack_access: Callable[[Actor], KafkaAccess],
    identity: IdentityKey,
    tmp_path: Path,
) -> None:
    tenant = stack["tenants"][0]
    key = identity.derive(Principal("tenant", tenant)).to_text()
    env = actor_env(
        stack_access("client"),
        stack["prefix"],
        properties=tmp_path / "client.properties",
        LEPTON_SIGNING_KEY=key,
    )

    lines = await submit(jars["submit"], env, trials=2)

    assert lines[0].startswith("submitted job-")
    assert "  queued" in lines, "the scheduler accepted the signed request"
    assert any(line.startswith("  started on java-") for line in lines)
    assert any(line.startswith("  succeeded on java-") and " model " in line for line in lines)
    assert lines[-1] == "outcome succeeded"


async def test_a_request_signed_with_a_key_the_master_never_derived_is_refused(
    jars: dict[str, Path],
    stack: dict[str, Any],
    kafka: KafkaAccess,
    stack_access: Callable[[Actor], KafkaAccess],
) -> None:
    """The signature is what the scheduler checks: the same tenant's name under a key of
    another master is dead-lettered as forged, and the producer hears no event of it."""
    tenant = stack["tenants"][0]
    forged = IdentityKey.generate().derive(Principal("tenant", tenant)).to_text()
    env = actor_env(stack_access("client"), stack["prefix"], LEPTON_SIGNING_KEY=forged)
    refused = AIOKafkaConsumer(
        stack["prefix"] + "lepton.jobs.requested.dlq",
        **kafka.aiokafka(),
        auto_offset_reset="earliest",
    )
    await refused.start()
    try:
        lines = await submit(jars["submit"], env, timeout_s=15, status=3)
        job = lines[0].removeprefix("submitted ")
        reason = await dead_letter_for(refused, job)
    finally:
        await refused.stop()
    assert reason["dlq_error_type"] == "ForgedRecordError"
    assert lines[1:] == ["outcome timeout"], "no event of the refused job"


async def test_the_streams_app_reports_each_tenants_usage_of_the_jobs_it_ran(
    jars: dict[str, Path],
    stack: dict[str, Any],
    kafka: KafkaAccess,
    stack_access: Callable[[Actor], KafkaAccess],
    identity: IdentityKey,
    codec: Codec,
    tmp_path: Path,
) -> None:
    prefix, tenants = stack["prefix"], stack["tenants"]
    password = secrets.token_urlsafe(24)
    provisioned = await asyncio.to_thread(
        subprocess.run,
        ["java", "-jar", str(jars["usage"]), "provision"],
        env=actor_env(kafka, prefix, USAGE_PASSWORD=password),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert provisioned.returncode == 0, provisioned.stderr
    assert f"created topic {prefix}{USAGE_TOPIC}" in provisioned.stdout
    # As the recipe runs it: the admin's properties file for where the brokers are, the
    # application's own user and password over it.
    streams_env = actor_env(
        kafka,
        prefix,
        properties=tmp_path / "admin.properties",
        LEPTON_KAFKA_SASL_USERNAME="lepton-usage",
        LEPTON_KAFKA_SASL_PASSWORD=password,
        USAGE_WINDOW_S=str(WINDOW_MS // 1000),
        USAGE_STATE_DIR=str(tmp_path / "streams-state"),
    )
    jobs: dict[str, str] = {}

    async def run_job(tenant: str) -> None:
        key = identity.derive(Principal("tenant", tenant)).to_text()
        env = actor_env(stack_access("client"), prefix, LEPTON_SIGNING_KEY=key)
        lines = await submit(jars["submit"], env)
        assert lines[-1] == "outcome succeeded", lines
        jobs[lines[0].removeprefix("submitted ")] = tenant

    command = ["java", "-jar", str(jars["usage"]), "run"]
    async with JavaProcess.started(command, streams_env, until="state RUNNING") as app:
        await run_job(tenants[0])
        await _usage_matches_heartbeats(kafka, codec, prefix, jobs, app)
    # Stopped (SIGTERM: Streams commits and closes) and started again on its state, it
    # resumes where it committed: what comes next adds to the totals, and nothing counted
    # before the restart is counted again. Two jobs side by side split their node's CPU.
    async with JavaProcess.started(command, streams_env, until="state RUNNING") as app:
        await asyncio.gather(*(run_job(tenant) for tenant in tenants))
        reported = await _usage_matches_heartbeats(kafka, codec, prefix, jobs, app)

    # The application was that user, under its ACLs alone: it may write the usage topic,
    # not read it.
    refused = await asyncio.to_thread(
        subprocess.run,
        ["java", "-jar", str(jars["usage"]), "show"],
        env=streams_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0
    assert "TopicAuthorizationException" in refused.stderr, refused.stderr[-2000:]
    # What a reader of the topic is told: the latest figure of each tenant and window.
    shown = await asyncio.to_thread(
        subprocess.run,
        ["java", "-jar", str(jars["usage"]), "show"],
        env=actor_env(kafka, prefix),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {
        (row["tenant"], row["window_start_ms"]): [
            row["job_ms"], row["cpu_millicore_ms"], row["heartbeats"],
        ]
        for row in rows
    } == reported  # fmt: skip
    assert len(rows) == len(reported)


class Ledger:
    """The usage the test expects, made from the topics as the application should make it:
    each job's share of each heartbeat that listed it (``examples/streams``' ``Usage``),
    summed per tenant and window, the tenant named by the job's ``queued`` event."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.tenants: dict[str, str] = {}
        self.by_job: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0])

    def heartbeat(self, value: bytes) -> None:
        _, beat = self.codec.decode(value, expected="lepton.NodeHeartbeat")
        listed = set(beat["running_job_ids"])
        window = beat["sent_at"] - beat["sent_at"] % WINDOW_MS
        cpu = beat["usage"]["cpu_millicores"] * beat["interval_ms"] // max(len(listed), 1)
        for job in listed:
            figures = self.by_job[(job, window)]
            figures[0] += beat["interval_ms"]
            figures[1] += cpu
            figures[2] += 1

    def job_event(self, value: bytes) -> None:
        _, event = self.codec.decode(value, expected="lepton.JobEvent")
        if event["kind"] == "queued":
            self.tenants.setdefault(event["job_id"], event["tenant"])

    def expected(self) -> dict[tuple[str, int], list[int]]:
        totals: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
        for (job, window), figures in self.by_job.items():
            tenant = self.tenants.get(job)
            if tenant is None:  # its queued event not read yet
                continue
            total = totals[(tenant, window)]
            for index, figure in enumerate(figures):
                total[index] += figure
        return dict(totals)


async def _usage_matches_heartbeats(
    kafka: KafkaAccess, codec: Codec, prefix: str, jobs: dict[str, str], app: JavaProcess
) -> dict[tuple[str, int], list[int]]:
    """Waits (bounded) until the usage topic's latest figure of every (tenant, window) equals
    the ledger the test keeps of the same topics: each side is read as it grows, since a
    heartbeat may still list a job just after its outcome. Every job on the test's topics
    counts (an earlier test's too, which the application reads from the beginning). Returns
    the figures, by tenant and window start."""
    ledger = Ledger(codec)
    reported: dict[tuple[str, int], list[int]] = {}
    consumers = {
        name: AIOKafkaConsumer(
            prefix + name,
            **kafka.aiokafka(),
            auto_offset_reset="earliest",
            isolation_level="read_committed",  # the application writes in transactions
        )
        for name in ("lepton.node.heartbeats", "lepton.jobs.events", USAGE_TOPIC)
    }
    for consumer in consumers.values():
        await consumer.start()
    try:
        async with asyncio.timeout(120):
            while set(jobs) - {job for job, _ in ledger.by_job} or reported != ledger.expected():
                for name, consumer in consumers.items():
                    for messages in (await consumer.getmany(timeout_ms=100)).values():
                        for message in messages:
                            if name == "lepton.node.heartbeats":
                                ledger.heartbeat(message.value)
                            elif name == "lepton.jobs.events":
                                ledger.job_event(message.value)
                            else:
                                row = json.loads(message.value)
                                assert message.key.decode() == (
                                    f"{row['tenant']}@{row['window_start']}"
                                )
                                assert row["window_end_ms"] - row["window_start_ms"] == WINDOW_MS
                                reported[(row["tenant"], row["window_start_ms"])] = [
                                    row["job_ms"], row["cpu_millicore_ms"], row["heartbeats"],
                                ]  # fmt: skip
    except TimeoutError:
        pytest.fail(
            f"usage {reported} never matched the topics' {ledger.expected()} "
            f"(jobs {jobs}); the application said: {app.output()[-3000:]}"
        )
    finally:
        for consumer in consumers.values():
            await consumer.stop()
    assert {ledger.tenants[job] for job in jobs} == set(jobs.values())
    assert {tenant for tenant, _ in reported} == set(jobs.values()), "no other tenant's usage"
    assert sum(figures[1] for figures in reported.values()) > 0, "CPU was measured"
    return reported
