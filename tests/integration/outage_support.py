"""Outages for integration tests: a stack of a test module's own, whose broker and
database a test stops and starts again on the same ports.

The session's stack (tests/conftest.py) is shared by every test and must stay up, so a
module that takes servers away starts its own. One server is restarted, the other left
running, with the devstack's own parts on the ports the stack recorded.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lepton import devstack
from lepton.devstack import _read_state

if TYPE_CHECKING:
    from lepton.config import Actor, Settings


@dataclass(slots=True)
class OwnStack:
    """A local stack (``lepton.devstack``) in its own state directory."""

    settings: Settings

    def _state(self) -> dict[str, Any]:
        state = _read_state(self.settings)
        assert state is not None, "the module's stack is not running"
        return state

    def env(self, actor: Actor, prefix: str, **extra: str) -> dict[str, str]:
        """A service's environment on this stack: its own database login, the Kafka
        admin's access (as every service in a test has: the test's topics are not in the
        ACLs), this stack's identity key, and the test's topic prefix."""
        return os.environ | {
            **devstack.endpoints(self.settings).kafka.environment(),
            "LEPTON_DATABASE_URL": devstack.endpoints(self.settings, actor).database_url,
            "LEPTON_IDENTITY_KEY": devstack.identity_key(self.settings),
            "LEPTON_TOPIC_PREFIX": prefix,
            "LEPTON_MONITOR_PORT": "0",
            "LEPTON_MONITOR_METRICS_PORT": "0",
            "LEPTON_HEALTH_CHECK_INTERVAL_S": "0.5",
            **extra,
        }

    def kill_kafka(self) -> None:
        """SIGKILL the broker, as a crash would."""
        os.killpg(self._state()["kafka_pid"], signal.SIGKILL)

    def start_kafka(self) -> None:
        """Start the broker again on its ports; returns once it answers."""
        devstack.start_brokers(self.settings, [1])

    def stop_postgres(self) -> None:
        """Stop PostgreSQL (fast shutdown: every session is cut)."""
        devstack.postgres(self.settings).stop()

    def start_postgres(self) -> None:
        node = devstack.postgres(self.settings)
        assert node.port == self._state()["postgres_port"], "the database's port was taken"
        node.start()
