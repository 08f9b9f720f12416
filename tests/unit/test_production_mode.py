"""LEPTON_ENV=production: a service refuses to start insecure, naming every setting."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from lepton.config import Settings
from lepton.contract.identity import IdentityKey, Principal
from lepton.runtime.production import InsecureConfiguration, check, refusals
from lepton.services.ingest.app import create_app as ingest_app
from lepton.services.ingest.settings import IngestSettings

MASTER = IdentityKey.generate()
CONFIGURED = {
    "kafka_bootstrap": "kafka.example:9092",
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_username": "lepton-scheduler",
    "kafka_sasl_password": SecretStr("a-long-random-password"),
    "database_url": SecretStr("postgresql://lepton_scheduler:a-long-random-pw@db.example/lepton"),
}


def test_development_asks_nothing() -> None:
    assert refusals(Settings(env="development"), "scheduler") == []


def test_production_names_every_missing_setting_at_once() -> None:
    with pytest.raises(InsecureConfiguration) as refused:
        # None: whatever the environment says (a test stack sets LEPTON_IDENTITY_KEY)
        check(Settings(env="production", identity_key=None), "scheduler")
    message = str(refused.value)
    for setting in ("LEPTON_KAFKA_BOOTSTRAP", "LEPTON_DATABASE_URL", "LEPTON_IDENTITY_KEY"):
        assert setting in message


def test_a_service_needs_the_master_key_and_a_trainer_its_own() -> None:
    service = Settings(env="production", identity_key=SecretStr(MASTER.to_text()), **CONFIGURED)
    assert refusals(service, "scheduler") == []
    assert refusals(service, "trainer") == [
        "LEPTON_SIGNING_KEY is unset: a trainer signs with its own key"
    ]
    node_key = MASTER.derive(Principal("node", "n1")).to_text()
    trainer = Settings(env="production", signing_key=SecretStr(node_key), **CONFIGURED)
    assert refusals(trainer, "trainer") == []


def test_ingest_refuses_to_store_sensitive_columns_it_could_not_encrypt() -> None:
    settings = IngestSettings(
        env="production",
        identity_key=SecretStr(MASTER.to_text()),
        master_key=None,  # whatever the environment says
        **CONFIGURED,
    )
    service = ingest_app(settings)
    found = refusals(settings, "ingest", service.production_checks)
    assert found == ["LEPTON_MASTER_KEY is unset: sensitive columns could not be encrypted"]


async def test_a_service_in_production_stops_before_it_connects_to_anything() -> None:
    service = ingest_app(IngestSettings(env="production"))
    with pytest.raises(InsecureConfiguration, match="refusing to start in production"):
        await service.run()


def test_a_superuser_database_login_is_refused() -> None:
    settings = Settings(
        env="production",
        identity_key=SecretStr(MASTER.to_text()),
        **(CONFIGURED | {"database_url": SecretStr("postgresql://postgres:x@db.example/lepton")}),
    )
    (refusal,) = refusals(settings, "evaluator")
    assert refusal.startswith("LEPTON_DATABASE_URL logs in as a superuser")
    assert "give the evaluator its own login" in refusal


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("monitor.example", True),
    ],
)
def test_the_monitor_keeps_its_plain_http_on_loopback(host: str, refused: bool) -> None:
    from lepton.services.monitor.app import create_app as monitor_app
    from lepton.services.monitor.settings import MonitorSettings

    settings = MonitorSettings(
        env="production", identity_key=SecretStr(MASTER.to_text()), monitor_host=host, **CONFIGURED
    )
    found = refusals(settings, "monitor", monitor_app(settings).production_checks)
    assert bool(found) is refused
    if refused:
        assert found[0].startswith(f"LEPTON_MONITOR_HOST is {host}")


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({"kafka_security_protocol": "PLAINTEXT"}, "LEPTON_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"kafka_security_protocol": "SSL"}, "without LEPTON_KAFKA_SSL_CERTFILE"),
        ({"kafka_sasl_password": SecretStr("lepton")}, "a well-known default"),
        ({"kafka_sasl_password": None}, "needs a user name and a password"),
    ],
)
def test_an_unauthenticated_or_weak_kafka_login_is_refused(
    given: dict[str, object], reason: str
) -> None:
    settings = Settings(
        env="production", identity_key=SecretStr(MASTER.to_text()), **(CONFIGURED | given)
    )
    (refusal,) = refusals(settings, "scheduler")
    assert reason in refusal


def test_a_weak_database_password_is_refused() -> None:
    weak = SecretStr("postgresql://lepton_scheduler:changeme@db.example/lepton")
    settings = Settings(
        env="production",
        identity_key=SecretStr(MASTER.to_text()),
        **(CONFIGURED | {"database_url": weak}),
    )
    assert refusals(settings, "scheduler") == [
        "LEPTON_DATABASE_URL's password is short or a well-known default"
    ]
