"""LEPTON_ENV=production: a service refuses to start insecure, naming every setting."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from lepton.config import Settings
from lepton.contract.identity import IdentityKey, Principal
from lepton.runtime.production import InsecureConfiguration, check, refusals
from services.ingest.app import create_app as ingest_app
from services.ingest.settings import IngestSettings

MASTER = IdentityKey.generate()
CONFIGURED = {
    "kafka_bootstrap": "kafka.example:9092",
    "database_url": SecretStr("postgresql://lepton_scheduler:x@db.example/lepton"),
}


def test_development_asks_nothing() -> None:
    assert refusals(Settings(env="development"), "scheduler") == []


def test_production_names_every_missing_setting_at_once() -> None:
    with pytest.raises(InsecureConfiguration) as refused:
        check(Settings(env="production"), "scheduler")
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
        env="production", identity_key=SecretStr(MASTER.to_text()), **CONFIGURED
    )
    service = ingest_app(settings)
    found = refusals(settings, "ingest", service.production_checks)
    assert found == ["LEPTON_MASTER_KEY is unset: sensitive columns could not be encrypted"]


async def test_a_service_in_production_stops_before_it_connects_to_anything() -> None:
    service = ingest_app(IngestSettings(env="production"))
    with pytest.raises(InsecureConfiguration, match="refusing to start in production"):
        await service.run()
