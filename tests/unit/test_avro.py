"""The compiled Avro codec (lepton.contract._avro) against fastavro, byte for byte.

Every schema of the contract, with its golden vectors and with random records drawn from
the schema itself; then hostile bytes, which must fail only with the errors the codec
turns into decode errors.
"""

from __future__ import annotations

import io
import random
import string
import struct
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from lepton.contract import default_codec
from lepton.contract._avro import Unsupported, compile_schema, compile_split_decoder
from lepton.contract.codec import EventSchema
from lepton.contract.vector_examples import EXAMPLES

CODEC = default_codec()
NAMES = CODEC.names
# What a corrupt body may raise inside the compiled reader (the codec names each one).
BODY_ERRORS = (IndexError, ValueError, UnicodeDecodeError, OverflowError, TypeError, struct.error)


def fastavro_encode(schema: EventSchema, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    return buffer.getvalue()


def fastavro_decode(schema: EventSchema, body: bytes) -> tuple[Any, int]:
    buffer = io.BytesIO(body)
    return fastavro.schemaless_reader(buffer, schema.readable, None), buffer.tell()


class Draw:
    """Random valid data for a parsed schema."""

    def __init__(self, seed: int, named: dict[str, Any]) -> None:
        self.rng = random.Random(seed)
        self.named = named

    def text(self) -> str:
        alphabet = string.ascii_letters + "区节点-_ é"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, 12)))

    def value(self, schema: Any) -> Any:
        rng = self.rng
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, list):
            return self.value(rng.choice(schema))
        kind = schema["type"] if isinstance(schema, dict) else schema
        if isinstance(kind, (dict, list)):
            return self.value(kind)
        if kind in self.named:
            return self.value(self.named[kind])
        match kind:
            case "null":
                return None
            case "boolean":
                return rng.random() < 0.5
            case "int":
                return rng.choice([0, -1, 63, 64, -65, rng.randint(-(2**31), 2**31 - 1)])
            case "long":
                return rng.choice([0, 1, -64, 8191, rng.randint(-(2**63), 2**63 - 1)])
            case "double" | "float":
                return rng.choice([0.0, -1.5, 3.25, 1e300 if kind == "double" else 2.5])
            case "string":
                return self.text()
            case "bytes":
                return rng.randbytes(rng.randint(0, 40))
            case "enum":
                return rng.choice(schema["symbols"])
            case "array":
                return [self.value(schema["items"]) for _ in range(rng.randint(0, 3))]
            case "map":
                return {self.text(): self.value(schema["values"]) for _ in range(rng.randint(0, 3))}
            case "record":
                return {f["name"]: self.value(f["type"]) for f in schema["fields"]}
        raise AssertionError(f"no draw for {kind}")


def named_types(schema: dict[str, Any]) -> dict[str, Any]:
    named: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum"):
                named[node["name"]] = node
            for field in node.get("fields", ()):
                walk(field["type"])
            for key in ("items", "values"):
                if key in node:
                    walk(node[key])
            if isinstance(node.get("type"), (dict, list)):
                walk(node["type"])

    walk(schema)
    return named


@pytest.mark.parametrize("name", NAMES)
def test_golden_vectors_encode_and_decode_as_fastavro_does(name: str) -> None:
    schema = CODEC.schema(name)
    encode, decode = compile_schema(schema.parsed)
    for _label, record in EXAMPLES[name]:
        body = encode(record)
        assert body == fastavro_encode(schema, record)
        assert decode(body, 0) == fastavro_decode(schema, body)


@pytest.mark.parametrize("name", NAMES)
def test_random_records_encode_and_decode_as_fastavro_does(name: str) -> None:
    schema = CODEC.schema(name)
    encode, decode = compile_schema(schema.parsed, b"HDR")
    draw = Draw(seed=len(name), named=named_types(schema.parsed))
    for _ in range(300):
        record = draw.value(schema.parsed)
        expected = fastavro_encode(schema, record)
        assert encode(record) == b"HDR" + expected
        assert decode(b"HDR" + expected, 3) == (
            fastavro_decode(schema, expected)[0],
            3 + len(expected),
        )


@pytest.mark.parametrize("name", NAMES)
def test_a_record_split_at_any_field_reads_as_the_whole(name: str) -> None:
    schema = CODEC.schema(name)
    draw = Draw(seed=len(name) + 1, named=named_types(schema.parsed))
    records = [draw.value(schema.parsed) for _ in range(20)]
    for field in schema.parsed["fields"]:
        head, tail = compile_split_decoder(schema.parsed, field["name"])
        for record in records:
            body = fastavro_encode(schema, record)
            leading, middle = head(body, 0)
            rest, end = tail(body, middle)
            assert (leading | rest, end) == fastavro_decode(schema, body)
            assert list(leading) + list(rest) == [f["name"] for f in schema.parsed["fields"]]


def test_a_split_at_a_field_the_record_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="no field 'nope'"):
        compile_split_decoder(CODEC.schema("lepton.NodeHeartbeat").parsed, "nope")


@pytest.mark.parametrize("name", NAMES)
def test_hostile_bytes_fail_with_body_errors_or_read_what_fastavro_reads(name: str) -> None:
    schema = CODEC.schema(name)
    _, decode = compile_schema(schema.parsed)
    rng = random.Random(7)
    draw = Draw(seed=3, named=named_types(schema.parsed))
    for _ in range(200):
        body = bytearray(fastavro_encode(schema, draw.value(schema.parsed)))
        for _ in range(rng.randint(1, 3)):
            if body and rng.random() < 0.7:
                body[rng.randrange(len(body))] = rng.randrange(256)
            else:
                del body[rng.randrange(len(body) + 1) :]
        try:
            ours = decode(bytes(body), 0)
        except BODY_ERRORS:
            continue
        try:
            theirs = fastavro_decode(schema, bytes(body))
        except Exception:
            continue
        assert ours == theirs


def test_a_missing_field_takes_its_default_and_a_wrong_type_is_refused() -> None:
    schema = CODEC.schema("lepton.NodeHeartbeat")
    encode, decode = compile_schema(schema.parsed)
    record = dict(EXAMPLES["lepton.NodeHeartbeat"][0][1])
    del record["interval_ms"]  # default 1000
    assert decode(encode(record), 0)[0]["interval_ms"] == 1000
    with pytest.raises(TypeError):
        encode(record | {"sequence": "seven"})
    with pytest.raises(ValueError, match="not one of the union"):
        encode(record | {"gpu_type": 3})


def test_what_it_cannot_compile_is_said() -> None:
    nulls = {
        "type": "record",
        "name": "N",
        "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}],
    }
    with pytest.raises(Unsupported):
        compile_schema(fastavro.parse_schema(nulls))


def test_an_aware_datetime_is_written_as_fastavro_writes_it() -> None:
    schema = CODEC.schema("lepton.NodeHeartbeat")
    encode, _ = compile_schema(schema.parsed)
    record = dict(EXAMPLES["lepton.NodeHeartbeat"][1][1])
    record["sent_at"] = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC)
    assert encode(record) == fastavro_encode(schema, record)
