"""Record signatures and HTTP tokens: what a forger can and cannot do without the key."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lepton.contract.identity import (
    PRINCIPAL_HEADER,
    SIGNATURE_HEADER,
    IdentityKey,
    Principal,
    SigningKey,
    Verifier,
)
from lepton.errors import ConfigError, ForgedRecordError, InvalidTokenError

MASTER = IdentityKey.generate()
ACME = Principal("tenant", "acme")
TOPIC = "lepton.jobs.requested"


def test_a_record_signed_by_its_principal_is_verified_as_that_principal() -> None:
    headers = MASTER.derive(ACME).sign(TOPIC, b"job-1", b"value")
    assert Verifier(MASTER).verify(TOPIC, b"job-1", b"value", headers) == ACME


@pytest.mark.parametrize(
    ("topic", "key", "value"),
    [
        ("lepton.jobs.events", b"job-1", b"value"),  # moved to another topic
        (TOPIC, b"job-2", b"value"),  # another key
        (TOPIC, b"job-1", b"valuf"),  # another value
        (TOPIC, b"job-1v", b"alue"),  # the same bytes split differently
    ],
)
def test_a_signature_binds_topic_key_and_value(topic: str, key: bytes, value: bytes) -> None:
    headers = MASTER.derive(ACME).sign(TOPIC, b"job-1", b"value")
    with pytest.raises(ForgedRecordError, match="does not match for tenant:acme"):
        Verifier(MASTER).verify(topic, key, value, headers)


def test_a_tenant_cannot_sign_in_another_tenants_name() -> None:
    mine = MASTER.derive(ACME)
    forged = SigningKey(Principal("tenant", "victim"), mine.secret)
    with pytest.raises(ForgedRecordError, match="tenant:victim"):
        Verifier(MASTER).verify(TOPIC, b"k", b"v", forged.sign(TOPIC, b"k", b"v"))


def test_an_unsigned_or_malformed_record_says_what_is_wrong() -> None:
    verifier = Verifier(MASTER)
    with pytest.raises(ForgedRecordError, match="unsigned"):
        verifier.verify(TOPIC, b"k", b"v", [])
    with pytest.raises(ForgedRecordError, match="malformed principal"):
        verifier.verify(TOPIC, b"k", b"v", [(PRINCIPAL_HEADER, b"acme"), (SIGNATURE_HEADER, b"x")])
    with pytest.raises(ForgedRecordError, match="invalid principal name"):
        verifier.verify(
            TOPIC, b"k", b"v", [(PRINCIPAL_HEADER, b"tenant:a\nb"), (SIGNATURE_HEADER, b"x")]
        )


def test_a_key_from_another_master_is_refused() -> None:
    other = IdentityKey.generate().derive(ACME)
    with pytest.raises(ForgedRecordError):
        Verifier(MASTER).verify(TOPIC, b"k", b"v", other.sign(TOPIC, b"k", b"v"))


def test_keys_round_trip_through_their_text_form() -> None:
    key = MASTER.derive(Principal("node", "gpu-7"))
    assert SigningKey.from_text(key.to_text()) == key
    assert IdentityKey.from_text(MASTER.to_text()) == MASTER
    assert key.to_text().split(":")[2] not in repr(key)
    with pytest.raises(ConfigError, match="32 bytes"):
        SigningKey.from_text("tenant:acme:c2hvcnQ")
    with pytest.raises(ConfigError, match="32 bytes"):
        IdentityKey.from_text("c2hvcnQ")


def test_a_token_proves_its_principal_until_it_expires() -> None:
    token = MASTER.derive(ACME).token(expires_at=2_000)
    verifier = Verifier(MASTER)
    assert verifier.verify_token(token, now=1_999) == ACME
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify_token(token, now=2_000)


def test_a_token_valid_for_longer_than_a_day_is_refused() -> None:
    token = MASTER.derive(ACME).token(expires_at=100 * 365 * 24 * 3600)
    with pytest.raises(InvalidTokenError, match="valid for more than 86400 s"):
        Verifier(MASTER).verify_token(token, now=0)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace("tenant:acme", "tenant:victim"),
        lambda t: t.replace(".2000.", ".9999."),
    ],
)
def test_a_tampered_token_is_refused(tamper: Callable[[str], str]) -> None:
    token = MASTER.derive(ACME).token(expires_at=2_000)
    with pytest.raises(InvalidTokenError, match="does not match"):
        Verifier(MASTER).verify_token(tamper(token), now=0)


@pytest.mark.parametrize("token", ["", "abc", "lpt1.tenant:acme.x.y", "lpt2.tenant:acme.1.aa"])
def test_a_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidTokenError, match="malformed"):
        Verifier(MASTER).verify_token(token, now=0)


def test_who_may_act_for_a_tenant() -> None:
    assert ACME.may_act_for("acme")
    assert not ACME.may_act_for("victim")
    assert Principal("operator", "ops").may_act_for("victim")
    assert not Principal("node", "acme").may_act_for("acme")
