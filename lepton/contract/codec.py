"""Avro single-object encoding: the wire format of every Lepton event.

A message value is ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint of the writer schema's
parsing canonical form + the Avro binary body. No registry is needed: the reader finds
the writer schema by its fingerprint. Apache Avro's Java ``BinaryMessageDecoder`` reads
the same bytes (proven by ``tests/integration/test_java_interop.py``).

Schemas are parsed once, when a :class:`Codec` is built; encoding and decoding then cost
a few microseconds per record.

In Python, a ``timestamp-millis`` is an ``int`` of epoch milliseconds: decoding returns
one (turning every timestamp into a ``datetime`` cost a quarter of the decoding time, and
the services compare milliseconds anyway); encoding takes an ``int`` or an aware
``datetime``. Other languages see the logical type the schemas declare.

On topics declared ``sealed``, the value is that encoding sealed for the record's tenant
(:mod:`lepton.contract.sealed`); a codec given a :class:`~lepton.contract.sealed.Keyring`
(:meth:`Codec.keyed`) seals and opens such values.

Registry mode (:meth:`Codec.with_registry`, see :mod:`lepton.contract.registry`): the
codec also reads the schema-registry framing, ``00`` + a 4-byte big-endian schema id +
the same Avro body, resolving the id to one of its schemas; where the ids say so it
writes that framing too.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from lepton.contract._avro import (
    Decoder,
    Encoder,
    Unsupported,
    compile_schema,
    compile_split_decoder,
)
from lepton.contract.sealed import SEALED_MAGIC, Keyring, NotSealedForUsError, SealError
from lepton.errors import MessageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

__all__ = [
    "MAGIC",
    "REGISTRY_MAGIC",
    "Codec",
    "CorruptMessageError",
    "DecodeError",
    "EventSchema",
    "NotForThisReaderError",
    "SchemaIds",
    "SealedMessageError",
    "SplitDecoder",
    "TruncatedMessageError",
    "UnknownFingerprintError",
    "UnknownSchemaError",
    "UnknownSchemaIdError",
    "WrongSchemaError",
    "load_schema_files",
]

MAGIC = b"\xc3\x01"
_HEADER_SIZE = len(MAGIC) + 8
# The schema-registry framing: magic byte 0, then the schema id as 4 bytes big-endian.
REGISTRY_MAGIC = b"\x00"
_REGISTRY_HEADER_SIZE = len(REGISTRY_MAGIC) + 4

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class MessageOrigin:
    """Where a message came from, so that every decoding error can name it."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def __str__(self) -> str:
        if self.topic is None:
            return "<no topic>"
        return f"{self.topic}[{self.partition}]@{self.offset}"


class DecodeError(MessageError, ValueError):
    """Bytes that cannot be read as a Lepton event. Names where the bytes came from."""

    def __init__(self, reason: str, origin: MessageOrigin) -> None:
        super().__init__(f"{reason} (at {origin})")
        self.reason = reason
        self.origin = origin

    def at(self, origin: MessageOrigin) -> DecodeError:
        """The same error, naming where the bytes came from (decoding does not know)."""
        return type(self)(self.reason, origin)


class TruncatedMessageError(DecodeError):
    """Fewer bytes than the header, or a body that ends before the record does."""


class CorruptMessageError(DecodeError):
    """Bytes that are not single-object encoded, or whose body does not match the schema."""


class UnknownFingerprintError(DecodeError):
    """A well-formed header whose schema fingerprint no known schema has."""


class UnknownSchemaIdError(DecodeError):
    """Registry framing whose schema id the registry does not know, or whose schema is
    none of Lepton's."""


class WrongSchemaError(DecodeError):
    """A valid event of another type than the one the topic carries."""


class SealedMessageError(DecodeError):
    """A sealed value that does not open (altered, or sealed with another key)."""


class NotForThisReaderError(SealedMessageError):
    """A value sealed for a tenant whose key this reader does not hold: another tenant's
    answer, which a client skips."""


class UnknownSchemaError(KeyError):
    """An event type name that the codec does not know (a programming error)."""


class SchemaIds(Protocol):
    """Schema-registry ids of a codec's schemas (:class:`lepton.contract.registry.RegistryIds`)."""

    def fingerprint(self, schema_id: int) -> bytes | None:
        """The single-object fingerprint of the schema with ``schema_id``; None when the
        registry has no such id. Raises when the registry cannot be asked now."""
        ...

    def writer_id(self, name: str) -> int | None:
        """The id to frame records of the current schema ``name`` with; None to write
        single-object encoding."""
        ...


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One parsed schema with its canonical form and single-object header."""

    name: str
    parsed: dict[str, Any]
    readable: dict[str, Any]  # the same schema, decoding timestamps to int milliseconds
    canonical: str
    fingerprint: bytes

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any]) -> EventSchema:
        # Keep fastavro's "already parsed" hint: without it, every read and write would
        # parse the schema again (fastavro#444), ten times the cost of the record itself.
        parsed = fastavro.parse_schema(dict(definition))
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise ValueError("an event schema is one Avro record")
        canonical = to_parsing_canonical_form(parsed)
        # fastavro already returns the little-endian bytes the spec asks for: do not reverse.
        fp = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        readable = fastavro.parse_schema(_without_timestamp_types(dict(definition)))
        assert isinstance(readable, dict)
        return cls(
            name=parsed["name"],
            parsed=parsed,
            readable=readable,
            canonical=canonical,
            fingerprint=fp,
        )

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


@dataclass(frozen=True, slots=True)
class SplitDecoder:
    """One schema's record decoded in two parts (see :meth:`Codec.split_decoder`).

    ``head(data, len(header))`` reads the fields before the split and returns them with
    the position where they ended; ``tail(data, that position)`` reads the rest. Bytes
    are this schema's only if they start with ``header``, and a record only if the tail
    ends at the end of the bytes: the caller checks both. Malformed bytes raise
    ``IndexError``, ``ValueError`` or ``struct.error``, not :class:`DecodeError`: this is
    a fast path, and :meth:`Codec.decode` is the one that explains what was wrong.
    """

    header: bytes
    head: Decoder
    tail: Decoder


_TIMESTAMP_TYPES = frozenset({"timestamp-millis"})


def _without_timestamp_types(schema: Any) -> Any:
    """A copy of ``schema`` whose timestamps are plain longs (same canonical form)."""
    if isinstance(schema, list):
        return [_without_timestamp_types(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: _without_timestamp_types(value)
        for key, value in schema.items()
        if not (key == "logicalType" and value in _TIMESTAMP_TYPES)
    }


def load_schema_files(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Read ``.avsc`` files as JSON; each file holds one self-contained record schema."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(paths)]


class Codec:
    """Encodes and decodes events of a fixed set of schemas.

    ``schemas`` are the current (reader) schemas. ``history`` are earlier versions of the
    same records: data written with them is still decoded, resolved to the current schema,
    so that a new reader reads old data.
    """

    def __init__(
        self,
        schemas: Iterable[Mapping[str, Any]],
        history: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._by_name: dict[str, EventSchema] = {}
        self._headers: dict[str, bytes] = {}
        # Compiled for the current schemas (see lepton.contract._avro); fastavro does the rest.
        self._encoders: dict[str, Encoder] = {}
        self._decoders: dict[bytes, Decoder] = {}
        # fingerprint -> (writer schema, reader schema)
        self._by_fingerprint: dict[bytes, tuple[EventSchema, EventSchema]] = {}
        for definition in schemas:
            schema = EventSchema.from_definition(definition)
            self._by_name[schema.name] = schema
            self._headers[schema.name] = schema.header
            self._by_fingerprint[schema.fingerprint] = (schema, schema)
            try:
                encoder, decoder = compile_schema(schema.parsed, schema.header)
            except Unsupported:
                continue
            self._encoders[schema.name] = encoder
            self._decoders[schema.fingerprint] = decoder
        for definition in history:
            old = EventSchema.from_definition(definition)
            current = self._by_name.get(old.name)
            if current is None:
                raise ValueError(f"history schema {old.name} has no current version")
            self._by_fingerprint.setdefault(old.fingerprint, (old, current))
        self._keyring: Keyring | None = None
        self._registry: SchemaIds | None = None

    def keyed(self, keyring: Keyring) -> Codec:
        """This codec, sealing and opening sealed values with ``keyring`` (the schemas and
        compiled coders are shared, not copied)."""
        keyed = copy.copy(self)
        keyed._keyring = keyring
        return keyed

    def with_registry(self, ids: SchemaIds) -> Codec:
        """This codec, also reading registry-framed values (and writing them where ``ids``
        give a writer id), like :meth:`keyed` sharing the schemas."""
        framed = copy.copy(self)
        framed._registry = ids
        return framed

    def seal(self, tenant: str, value: bytes) -> bytes:
        """An encoded value sealed for ``tenant`` (:class:`~lepton.contract.sealed.SealError`
        when this codec holds no key that can)."""
        if self._keyring is None:
            raise SealError(f"cannot seal a record for tenant {tenant!r}: this codec holds no keys")
        return self._keyring.seal(tenant, value)

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def schema(self, name: str) -> EventSchema:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownSchemaError(name) from None

    def split_decoder(self, name: str, at: str) -> SplitDecoder:
        """Decoders of the current schema ``name``'s fields before the field ``at`` and of
        the rest (raises :class:`~lepton.contract._avro.Unsupported` if it cannot be compiled).

        For a reader of many records whose leading fields rarely change: bytes that begin
        as an earlier record's did, up to where its head ended, have that head.
        """
        schema = self.schema(name)
        head, tail = compile_split_decoder(schema.parsed, at)
        return SplitDecoder(schema.header, head, tail)

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Single-object encode ``record`` with the current schema called ``name``."""
        encoder = self._encoders.get(name)
        if encoder is not None:
            encoded = encoder(record)
        else:
            schema = self.schema(name)
            buffer = io.BytesIO()
            buffer.write(self._headers[name])
            fastavro.schemaless_writer(buffer, schema.parsed, record)
            encoded = buffer.getvalue()
        if self._registry is not None:
            schema_id = self._registry.writer_id(name)
            if schema_id is not None:
                return REGISTRY_MAGIC + schema_id.to_bytes(4, "big") + encoded[_HEADER_SIZE:]
        return encoded

    def decode(
        self,
        data: bytes | None,
        *,
        expected: str | None = None,
        origin: MessageOrigin | None = None,
    ) -> tuple[str, Record]:
        """Decode single-object bytes; returns the event type's full name and the record.

        With ``expected``, an event of any other type is a :class:`WrongSchemaError`.
        """
        where = origin or MessageOrigin()
        if data is None:
            raise CorruptMessageError("empty message value (a tombstone?)", where)
        if data[:2] == SEALED_MAGIC:
            data = self._open(data, where)
        if data[:1] == REGISTRY_MAGIC and self._registry is not None:
            data = self._from_registry_framing(data, self._registry, where)
        if len(data) < _HEADER_SIZE:
            raise TruncatedMessageError(
                f"{len(data)} bytes is shorter than the {_HEADER_SIZE}-byte header", where
            )
        if data[:2] != MAGIC:
            raise CorruptMessageError(
                f"not Avro single-object encoding: starts with {data[:2].hex()}, not c301", where
            )
        found = self._by_fingerprint.get(data[2:_HEADER_SIZE])
        if found is None:
            raise UnknownFingerprintError(
                f"unknown schema fingerprint {data[2:_HEADER_SIZE].hex()}", where
            )
        writer, reader = found
        if expected is not None and reader.name != expected:
            raise WrongSchemaError(f"expected {expected}, got {reader.name}", where)
        try:
            decoded, end = self._decode_body(data, writer, reader)
        except (EOFError, IndexError, struct.error):
            # fastavro's compiled reader signals reading past the end with IndexError.
            raise TruncatedMessageError(
                f"body ends before the {writer.name} record does (truncated, or a length "
                "inside it is corrupt)",
                where,
            ) from None
        except (ValueError, UnicodeDecodeError, OverflowError, TypeError) as exc:
            raise CorruptMessageError(f"body is not a valid {writer.name}: {exc}", where) from exc
        if end != len(data):
            raise CorruptMessageError(
                f"{len(data) - end} bytes left over after the {writer.name} record", where
            )
        return reader.name, decoded

    def _from_registry_framing(self, data: bytes, ids: SchemaIds, where: MessageOrigin) -> bytes:
        """Registry-framed bytes as the single-object encoding of the same body."""
        if len(data) < _REGISTRY_HEADER_SIZE:
            raise TruncatedMessageError(
                f"{len(data)} bytes is shorter than the {_REGISTRY_HEADER_SIZE}-byte registry "
                "header",
                where,
            )
        schema_id = int.from_bytes(data[1:_REGISTRY_HEADER_SIZE], "big")
        found = ids.fingerprint(schema_id)
        if found is None:
            raise UnknownSchemaIdError(
                f"schema id {schema_id} is not in the schema registry", where
            )
        if found not in self._by_fingerprint:
            raise UnknownSchemaIdError(
                f"schema id {schema_id} of the schema registry is none of Lepton's schemas", where
            )
        return MAGIC + found + data[_REGISTRY_HEADER_SIZE:]

    def _open(self, data: bytes, where: MessageOrigin) -> bytes:
        try:
            if self._keyring is None:
                raise NotSealedForUsError("a sealed value, and this reader holds no keys")
            return self._keyring.open(data)
        except NotSealedForUsError as exc:
            raise NotForThisReaderError(str(exc), where) from None
        except SealError as exc:
            raise SealedMessageError(str(exc), where) from None

    def _decode_body(
        self, data: bytes, writer: EventSchema, reader: EventSchema
    ) -> tuple[Record, int]:
        decoder = self._decoders.get(writer.fingerprint) if writer is reader else None
        if decoder is not None:
            return decoder(data, _HEADER_SIZE)
        body = io.BytesIO(data)
        body.seek(_HEADER_SIZE)
        decoded = fastavro.schemaless_reader(
            body, writer.readable, None if writer is reader else reader.readable
        )
        assert isinstance(decoded, dict)  # the schema is a record
        return decoded, body.tell()
