"""The local stack's life cycle, on a stack of its own (not the session's)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from lepton import devstack
from lepton.bus import BrokerUnavailableError, ensure_topics
from lepton.config import ACTORS, KafkaAccess, Settings
from lepton.contract.topics import Topic
from lepton.devstack._process import free_port
from lepton.sdk.local import start_supervisor
from lepton.sdk.supervisor import PLAN_FILE, Policy
from tests.integration.processes import lepton_cli
from tests.unit.test_supervisor import POLITE

pytestmark = pytest.mark.integration


def test_up_status_crash_recovery_and_down(tmp_path: Path) -> None:
    env = {"LEPTON_STATE_DIR": str(tmp_path / "state")}
    env_without_servers = {
        key: value for key, value in os.environ.items() if not key.startswith("LEPTON_")
    }
    env_without_servers.update(env)

    started = lepton_cli("stack", "up", "--json", env=env_without_servers)
    assert started.returncode == 0, started.stderr
    first = json.loads(started.stdout)
    assert first["running"]
    assert first["kafka_bootstrap"].startswith("127.0.0.1:")
    assert first["kafka_security_protocol"] == "SASL_PLAINTEXT"
    assert first["kafka_user"] == "lepton-admin"
    assert first["database_url"].startswith("postgresql://")

    # Every actor's password is kept for the owner alone, and never shown.
    credentials = Path(first["kafka_credentials"])
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert credentials.parent.stat().st_mode & 0o777 == 0o700
    passwords = json.loads(credentials.read_text())
    assert set(passwords) == {f"lepton-{actor}" for actor in ACTORS}
    shown = lepton_cli("stack", "status", env=env_without_servers).stdout
    assert "lepton-admin" in shown
    for password in passwords.values():
        assert password not in started.stdout + shown

    again = json.loads(lepton_cli("stack", "up", "--json", env=env_without_servers).stdout)
    assert again["note"] == "already running"
    assert again["kafka_pid"] == first["kafka_pid"], "nothing is started twice"

    status = json.loads(lepton_cli("stack", "status", "--json", env=env_without_servers).stdout)
    assert status["kafka_bootstrap"] == first["kafka_bootstrap"]
    assert status["database_url"] == first["database_url"]

    async def both_answer(where: dict[str, str]) -> None:
        admin = devstack.endpoints(Settings(state_dir=tmp_path / "state")).kafka
        assert admin.bootstrap == where["kafka_bootstrap"]
        await ensure_topics(admin, [Topic("probe", "lepton.Alert", "k")])
        connection = await asyncpg.connect(where["database_url"])
        await connection.close()

    asyncio.run(both_answer(first))

    os.killpg(first["kafka_pid"], signal.SIGKILL)  # a crashed run leaves PostgreSQL behind
    crashed = json.loads(lepton_cli("stack", "status", "--json", env=env_without_servers).stdout)
    assert not crashed["running"]
    assert "crashed" in crashed["note"]

    restarted = lepton_cli("stack", "up", "--json", env=env_without_servers)
    assert restarted.returncode == 0, restarted.stderr
    recovered = json.loads(restarted.stdout)
    assert recovered["running"]
    assert recovered["note"] == "cleaned up a stack left behind by a crashed run"
    assert recovered["postgres_pid"] != first["postgres_pid"], "the leftover server was stopped"
    asyncio.run(both_answer(recovered))

    # Both servers killed hard: the stack comes back where it was, so that whatever was
    # started against it (services, clients) finds it again.
    os.killpg(recovered["kafka_pid"], signal.SIGKILL)
    os.kill(recovered["postgres_pid"], signal.SIGKILL)
    again_up = lepton_cli("stack", "up", "--json", env=env_without_servers)
    assert again_up.returncode == 0, again_up.stderr
    back = json.loads(again_up.stdout)
    assert back["kafka_bootstrap"] == first["kafka_bootstrap"]
    assert back["database_url"] == first["database_url"]
    asyncio.run(both_answer(back))
    recovered = back

    # Services run on it (stand-ins under the supervisor of `lepton up`): refused, unless
    # --force, which stops them first and says so.
    services = tmp_path / "state" / "services"
    services.mkdir()
    (services / PLAN_FILE).write_text(json.dumps({"ingest": [sys.executable, "-c", POLITE]}))
    supervisor = start_supervisor(services, {}, Policy(stop_grace_s=5))
    refused = lepton_cli("stack", "down", env=env_without_servers)
    assert refused.returncode == 1
    assert "services run on this stack: ingest" in refused.stderr
    assert json.loads(lepton_cli("stack", "status", "--json", env=env_without_servers).stdout)[
        "running"
    ]
    stopped = lepton_cli("stack", "down", "--force", env=env_without_servers)
    assert stopped.returncode == 0
    assert "--force: stopping the services first: ingest" in stopped.stdout
    assert "ingest: stopped, last exit status 0" in stopped.stdout
    assert "stack stopped" in stopped.stdout
    assert not devstack.is_alive(supervisor.pid)
    final = json.loads(lepton_cli("stack", "status", "--json", env=env_without_servers).stdout)
    assert not final["running"]
    assert not Path(f"/proc/{recovered['kafka_pid']}").exists()


def test_a_kept_port_taken_by_another_program_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    state.mkdir()
    (state / "ports.json").write_text(
        json.dumps({"broker": port, "controller": free_port(), "postgres": free_port()})
    )
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = lepton_cli("stack", "up", env={"LEPTON_STATE_DIR": str(state)})
    assert result.returncode == 1
    assert f"the local stack's broker port {port} is taken by " in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert "ports.json" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "stack.json").exists(), "nothing was started on other ports"


def test_missing_java_is_a_one_line_error(tmp_path: Path) -> None:
    result = lepton_cli(
        "stack",
        "up",
        env={"LEPTON_STATE_DIR": str(tmp_path), "LEPTON_JAVA": "no-such-java"},
    )
    assert result.returncode == 1
    assert "'no-such-java' not found" in result.stderr
    assert "LEPTON_JAVA" in result.stderr
    assert "Traceback" not in result.stderr


def test_commands_without_a_stack_say_how_to_get_one(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEPTON_")}
    env["LEPTON_STATE_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "lepton", "tail", "lepton.alerts", "--max", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "run `lepton stack up`" in result.stderr
    assert "Traceback" not in result.stderr


async def test_an_unreachable_broker_is_a_clear_error_within_the_timeout() -> None:
    kafka = KafkaAccess(f"127.0.0.1:{free_port()}")
    with pytest.raises(
        BrokerUnavailableError, match=f"Kafka at {kafka.bootstrap} .* did not answer"
    ):
        await ensure_topics(kafka, [Topic("x", "lepton.Alert", "k")], connect_timeout_s=2)


def test_settings_name_existing_servers() -> None:
    settings = Settings(kafka_bootstrap="kafka.example:9092", database_url="postgresql://x/y")
    where = devstack.endpoints(settings)
    assert where.kafka == KafkaAccess("kafka.example:9092")
    assert where.database_url == "postgresql://x/y"


def test_maven_unable_to_fetch_is_a_one_line_error(tmp_path: Path) -> None:
    fake = tmp_path / "mvn"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '[ERROR] Failed to execute goal: Could not transfer artifact "
        "org.apache.kafka:kafka_2.13:pom:4.1.1 from/to central: Network is unreachable'\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    result = lepton_cli(
        "stack",
        "up",
        env={
            "LEPTON_STATE_DIR": str(tmp_path / "state"),
            "LEPTON_CACHE_DIR": str(tmp_path / "cache"),
            "LEPTON_MAVEN": str(fake),
        },
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: Maven could not fetch Kafka's jars")
    assert "Network is unreachable" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "devstack.json").exists(), "nothing half-started is left"


def test_a_service_without_a_broker_exits_with_a_clear_error(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEPTON_")}
    env |= {
        "LEPTON_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "LEPTON_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "LEPTON_CONNECT_TIMEOUT_S": "2",
        "LEPTON_STATE_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lepton-ingest")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "lepton: Kafka at 127.0.0.1:" in result.stderr
    assert "did not answer within 2 s" in result.stderr
    assert "Traceback" not in result.stderr
