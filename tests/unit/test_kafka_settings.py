"""KafkaAccess: the settings and a Java client's properties file become one client
configuration; the password is never shown."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import SecretStr

from lepton.config import KafkaAccess, Settings
from lepton.devstack._tls import broker_tls
from lepton.errors import ConfigError

PROPERTIES = """\
# as an operator's Java client has it
bootstrap.servers=kafka-1.internal:9093,kafka-2.internal:9093
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\
    username="lepton-scheduler" \\
    password="s3cr\\"et";
ssl.truststore.type=PEM
ssl.truststore.location=/etc/kafka/ca.pem
"""


def test_a_properties_file_gives_the_whole_access(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(PROPERTIES)
    access = Settings(kafka_client_properties=path).kafka_access()
    assert access == KafkaAccess(
        bootstrap="kafka-1.internal:9093,kafka-2.internal:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        username="lepton-scheduler",
        password=SecretStr('s3cr"et'),
        ssl_cafile=Path("/etc/kafka/ca.pem"),
    )


def test_explicit_settings_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text(PROPERTIES)
    access = Settings(
        kafka_client_properties=path,
        kafka_sasl_username="lepton-monitor",
        kafka_sasl_password=SecretStr("other"),
        kafka_sasl_mechanism="SCRAM-SHA-512",
    ).kafka_access()
    assert access is not None
    assert (access.username, access.sasl_mechanism) == ("lepton-monitor", "SCRAM-SHA-512")
    assert access.librdkafka()["sasl.password"] == "other"


def test_a_java_key_store_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "client.properties"
    path.write_text("security.protocol=SSL\nssl.truststore.location=/etc/kafka/trust.jks\n")
    with pytest.raises(ConfigError, match="not a PEM file"):
        Settings(kafka_client_properties=path).kafka_access()


def test_without_a_bootstrap_the_local_stack_is_meant() -> None:
    assert (
        Settings(kafka_sasl_username="x", kafka_sasl_password=SecretStr("y")).kafka_access() is None
    )


def test_the_password_is_in_no_repr_nor_message() -> None:
    access = KafkaAccess("h:9093", "SASL_PLAINTEXT", username="u", password=SecretStr("hunter2"))
    assert "hunter2" not in repr(access)
    assert "hunter2" not in str(access)
    assert "hunter2" not in repr(Settings(**access.settings()))
    assert str(access) == "h:9093 (SASL_PLAINTEXT as u)"


def test_sasl_needs_a_user_and_a_password() -> None:
    with pytest.raises(ConfigError, match="needs a user name and a password"):
        KafkaAccess("h:9093", "SASL_SSL", username="u")


def test_one_access_configures_both_clients(tmp_path: Path) -> None:
    # A real CA file: the aiokafka context loads it.
    ca = broker_tls(tmp_path / "tls").ca_file
    access = KafkaAccess("h:9093", "SASL_SSL", username="u", password=SecretStr("p"), ssl_cafile=ca)
    assert access.librdkafka() == {
        "bootstrap.servers": "h:9093",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u",
        "sasl.password": "p",
        "ssl.ca.location": str(ca),
    }
    arguments = access.aiokafka()
    context = arguments.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert arguments == {
        "bootstrap_servers": "h:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }
    assert Settings(**access.settings()).kafka_access() == access


def test_java_properties_round_trip(tmp_path: Path) -> None:
    access = KafkaAccess(
        "h:9093", "SASL_SSL", username="u", password=SecretStr('p"q\\r'), ssl_cafile=Path("/ca.pem")
    )
    path = tmp_path / "admin.properties"
    path.write_text(access.java_properties())
    assert Settings(kafka_client_properties=path).kafka_access() == access
