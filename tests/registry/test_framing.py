"""The codec's registry framing and the id cache, as pure logic: the ids come from a fake
(the real registry is in test_registry.py); and what the registry client shows of its URL."""

from __future__ import annotations

import pytest

from lepton.contract import default_codec
from lepton.contract.codec import (
    CorruptMessageError,
    TruncatedMessageError,
    UnknownSchemaIdError,
    WrongSchemaError,
)
from lepton.contract.registry import RegistryIds, RegistryUnavailableError, SchemaRegistry
from lepton.contract.topics import Namespace
from lepton.contract.vector_examples import EXAMPLES

CODEC = default_codec()
NAME = "lepton.JobRequested"
RECORD = EXAMPLES[NAME][0][1]
FINGERPRINT = CODEC.schema(NAME).fingerprint


class Ids:
    """Fixed ids: 7 is the current JobRequested, 8 a schema that is none of Lepton's."""

    def __init__(self, *, write: bool) -> None:
        self.write = write

    def fingerprint(self, schema_id: int) -> bytes | None:
        return {7: FINGERPRINT, 8: b"\x01" * 8}.get(schema_id)

    def writer_id(self, name: str) -> int | None:
        return 7 if self.write and name == NAME else None


def framed(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def body() -> bytes:
    return CODEC.encode(NAME, RECORD)[10:]


def test_registry_framing_reads_as_the_single_object_encoding_does() -> None:
    codec = CODEC.with_registry(Ids(write=False))
    assert codec.decode(framed(7, body()), expected=NAME) == CODEC.decode(
        CODEC.encode(NAME, RECORD)
    )
    # Single-object encoding still reads in registry mode.
    assert codec.decode(CODEC.encode(NAME, RECORD))[0] == NAME


def test_write_mode_frames_with_the_registry_id_and_read_mode_does_not() -> None:
    assert CODEC.with_registry(Ids(write=True)).encode(NAME, RECORD) == framed(7, body())
    assert CODEC.with_registry(Ids(write=False)).encode(NAME, RECORD) == CODEC.encode(NAME, RECORD)


@pytest.mark.parametrize(
    ("value", "error", "reason"),
    [
        (framed(9, b""), UnknownSchemaIdError, "schema id 9 is not in the schema registry"),
        (framed(8, b""), UnknownSchemaIdError, "schema id 8 of the schema registry is none"),
        (b"\x00\x00\x07", TruncatedMessageError, "shorter than the 5-byte registry header"),
        (framed(7, b"\xff"), TruncatedMessageError, "body ends before"),
    ],
)
def test_bad_registry_framing_gets_a_specific_reason(
    value: bytes, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        CODEC.with_registry(Ids(write=False)).decode(value)


def test_the_expected_type_is_still_checked() -> None:
    with pytest.raises(WrongSchemaError):
        CODEC.with_registry(Ids(write=False)).decode(framed(7, body()), expected="lepton.Alert")


def test_without_a_registry_the_framing_is_not_single_object_encoding() -> None:
    with pytest.raises(CorruptMessageError, match="starts with 0000"):
        CODEC.decode(framed(7, body()))


class CountingRegistry(SchemaRegistry):
    """A registry whose answers are set by the test, counting the questions."""

    def __init__(self, schemas: dict[int, str | None], *, down: bool = False) -> None:
        super().__init__("http://registry.invalid")
        self.schemas = schemas
        self.down = down
        self.asked = 0

    def schema(self, schema_id: int) -> str | None:
        self.asked += 1
        if self.down:
            raise RegistryUnavailableError("down")
        return self.schemas.get(schema_id)


def ids_of(registry: SchemaRegistry) -> RegistryIds:
    return RegistryIds(registry, CODEC, Namespace(""), write=False)


def test_an_id_is_asked_for_once_and_an_unknown_one_not_on_every_message() -> None:
    registry = CountingRegistry({5: CODEC.schema(NAME).canonical, 6: '"string"'})
    ids = ids_of(registry)
    assert ids.fingerprint(5) == FINGERPRINT
    assert ids.fingerprint(5) == FINGERPRINT
    assert ids.fingerprint(6) not in (None, FINGERPRINT)  # a schema, but none of Lepton's
    assert ids.fingerprint(404) is None
    assert ids.fingerprint(404) is None
    assert registry.asked == 3


def test_the_cache_is_bounded() -> None:
    registry = CountingRegistry({})
    ids = ids_of(registry)
    for schema_id in range(5000):
        ids.fingerprint(schema_id)
    assert len(ids._known) == 1024
    assert ids.fingerprint(4999) is None
    assert registry.asked == 5000  # the newest is still cached


def test_a_registry_that_is_down_is_not_asked_again_on_every_message() -> None:
    registry = CountingRegistry({}, down=True)
    ids = ids_of(registry)
    for _ in range(3):
        # A ConnectionError: a service's consumer retries it with back-off.
        with pytest.raises(ConnectionError):
            ids.fingerprint(5)
    assert registry.asked == 1


def test_a_password_in_the_registry_url_is_never_shown() -> None:
    with (
        SchemaRegistry("http://lepton:s3cret@127.0.0.1:1/apis/ccompat/v7") as registry,
        pytest.raises(RegistryUnavailableError) as caught,
    ):
        registry.schema(1)
    assert "127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in registry.url
