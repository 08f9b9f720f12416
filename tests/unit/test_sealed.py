"""Answers sealed for their tenant: who can open them, and what a reader without the key,
or with an altered value, is told."""

from __future__ import annotations

import pytest

from lepton.contract import default_codec
from lepton.contract.codec import NotForThisReaderError, SealedMessageError
from lepton.contract.identity import IdentityKey, Principal
from lepton.contract.sealed import SEALED_MAGIC, Keyring, NotSealedForUsError, SealError, sealed_for
from lepton.contract.topics import Namespace
from lepton.testing import InMemoryBroker
from tests.samples import sample

MASTER = IdentityKey(b"m" * 32)
SERVICE = Keyring(master=MASTER)


def tenant(name: str) -> Keyring:
    return Keyring(own=MASTER.derive(Principal("tenant", name)))


def test_the_tenant_and_the_services_open_what_is_sealed_for_it() -> None:
    sealed = SERVICE.seal("acme", b"\xc3\x01predictions")
    assert sealed.startswith(SEALED_MAGIC)
    assert b"predictions" not in sealed
    assert sealed_for(sealed) == ("tenant:acme", 3 + len("tenant:acme"))
    assert tenant("acme").open(sealed) == b"\xc3\x01predictions"
    assert SERVICE.open(sealed) == b"\xc3\x01predictions"
    # A tenant holding its own key seals for itself alone.
    assert SERVICE.open(tenant("acme").seal("acme", b"x")) == b"x"
    with pytest.raises(SealError, match="cannot seal a record for tenant:other"):
        tenant("acme").seal("other", b"x")


def test_another_tenant_is_told_whose_it_is_and_nothing_more() -> None:
    sealed = SERVICE.seal("victim", b"secret")
    with pytest.raises(NotSealedForUsError, match="sealed for tenant:victim"):
        tenant("acme").open(sealed)
    with pytest.raises(NotSealedForUsError):
        Keyring().open(sealed)


def test_the_same_answer_seals_differently_each_time() -> None:
    assert SERVICE.seal("acme", b"x") != SERVICE.seal("acme", b"x")


@pytest.mark.parametrize(
    ("alter", "reason"),
    [
        (lambda v: v[:-1] + bytes([v[-1] ^ 1]), "does not open"),
        # Renamed for another tenant (the name is authenticated data): refused, not opened.
        (lambda v: v.replace(b"tenant:victim", b"tenant:victin"), "does not open"),
        (lambda v: v[:20], "shorter than its header"),
        (lambda v: v[:2], "ends before its principal"),
        (lambda v: v[:3] + b"\xff" * 60, "not UTF-8"),
    ],
)
def test_an_altered_sealed_value_is_refused_with_its_reason(alter, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SealError, match=reason):
        SERVICE.open(alter(SERVICE.seal("victim", b"\xc3\x01" + b"x" * 30)))


def test_the_codec_opens_what_its_keys_can_and_names_what_they_cannot() -> None:
    record = sample("lepton.PredictionResult") | {"tenant": "victim"}
    service_codec = default_codec().keyed(SERVICE)
    value = service_codec.seal("victim", default_codec().encode("lepton.PredictionResult", record))

    assert service_codec.decode(value, expected="lepton.PredictionResult")[1] == record
    assert default_codec().keyed(tenant("victim")).decode(value)[1] == record
    with pytest.raises(NotForThisReaderError, match="sealed for tenant:victim"):
        default_codec().keyed(tenant("acme")).decode(value)
    with pytest.raises(NotForThisReaderError, match="holds no keys"):
        default_codec().decode(value)
    with pytest.raises(SealedMessageError, match="does not open"):
        service_codec.decode(value[:-1] + bytes([value[-1] ^ 1]))
    with pytest.raises(SealError, match="holds no keys"):
        default_codec().seal("victim", value)


async def test_a_publisher_seals_the_sealed_topics_only_and_signs_the_sealed_bytes() -> None:
    broker = InMemoryBroker(identity=MASTER)
    names = Namespace()
    result = sample("lepton.PredictionResult") | {"tenant": "victim"}
    heartbeat = sample("lepton.NodeHeartbeat")
    publisher = broker.publisher()
    await publisher.publish(names.topic("lepton.predict.results"), "r1", result)
    await publisher.publish_many(names.topic("lepton.predict.results"), [("r2", result)])
    await publisher.publish(names.topic("lepton.node.heartbeats"), heartbeat["node_id"], heartbeat)

    sealed = broker.messages("lepton.predict.results")
    assert all(message.value().startswith(SEALED_MAGIC) for message in sealed)
    assert broker.messages("lepton.node.heartbeats")[0].value().startswith(b"\xc3\x01")
    assert broker.records("lepton.predict.results") == [result, result]
    # The signature covers the bytes on the wire: who wrote it is checked unopened.
    first = sealed[0]
    signer = MASTER.derive(Principal("service", "evaluator"))
    assert (
        dict(first.headers())["lepton-signature"]
        == dict(signer.sign("lepton.predict.results", b"r1", first.value()))["lepton-signature"]
    )
