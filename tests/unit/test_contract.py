"""The published contract: schemas, the AsyncAPI document, golden vectors and the codec's
errors. Everything here is what another implementation relies on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml
from fastavro.schema import to_parsing_canonical_form

from lepton.contract import default_codec, schemas_dir
from lepton.contract.codec import (
    Codec,
    CorruptMessageError,
    DecodeError,
    MessageOrigin,
    TruncatedMessageError,
    UnknownFingerprintError,
    WrongSchemaError,
)
from lepton.contract.topics import ALL_TOPICS
from lepton.contract.vector_examples import EXAMPLES
from lepton.contract.vectors import (
    schema_file_stem,
    stale_vector_files,
    to_wire_values,
)

SCHEMA_FILES = sorted(schemas_dir().glob("*.avsc"))
TOPIC_EVENTS = {topic.event for topic in ALL_TOPICS}


def load(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def walk(schema: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every inline type definition (record, enum, array, map, fixed) with its location."""
    if isinstance(schema, list):
        for branch in schema:
            yield from walk(branch, where)
    elif isinstance(schema, dict):
        yield where, schema
        kind = schema["type"]
        if kind == "record":
            for field in schema["fields"]:
                yield from walk(field["type"], f"{where}.{field['name']}")
        elif kind == "array":
            yield from walk(schema["items"], f"{where}[]")
        elif kind == "map":
            yield from walk(schema["values"], f"{where}{{}}")
        elif isinstance(kind, list | dict):
            yield from walk(kind, where)


def fields(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for where, definition in walk(schema, schema["name"]):
        if definition["type"] == "record":
            for field in definition["fields"]:
                yield f"{where}.{field['name']}", field


@pytest.fixture(scope="module")
def codec() -> Codec:
    return default_codec()


def test_there_is_one_schema_file_per_topic_event() -> None:
    names = {f"{load(p).get('namespace')}.{load(p)['name']}" for p in SCHEMA_FILES}
    assert names == TOPIC_EVENTS
    for path in SCHEMA_FILES:
        schema = load(path)
        assert path.stem == schema_file_stem(f"lepton.{schema['name']}"), path


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_schema_is_a_self_contained_documented_record(path: Path) -> None:
    schema = load(path)
    assert schema["type"] == "record"
    assert schema["namespace"] == "lepton"
    # Each file parses alone: no type comes from another file.
    fastavro.parse_schema(schema, named_schemas={})
    undocumented = [
        where
        for where, d in walk(schema, schema["name"])
        if d["type"] in ("record", "enum") and not d.get("doc", "").strip()
    ]
    undocumented += [where for where, field in fields(schema) if not field.get("doc", "").strip()]
    assert undocumented == []


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_schema_follows_the_contract_conventions(path: Path) -> None:
    schema = load(path)
    problems = []
    for where, definition in walk(schema, schema["name"]):
        if definition["type"] == "enum" and definition.get("default") not in definition["symbols"]:
            # Without a default, an old reader fails on a symbol added later.
            problems.append(f"{where}: enum {definition['name']} has no valid default")
        if definition["type"] in ("bytes", "fixed"):
            problems.append(f"{where}: bytes would need an encoding in the JSON vectors")
    for where, field in fields(schema):
        kind = field["type"]
        is_time = field["name"].endswith("_at") or field["name"] == "time"
        if is_time and kind != {"type": "long", "logicalType": "timestamp-millis"}:
            problems.append(f"{where}: a time must be a timestamp-millis long")
        if "default" not in field:
            continue
        default = field["default"]
        # Avro takes a union's default from its first branch; fastavro is more lenient
        # than Java here, so the rule is checked explicitly.
        if isinstance(kind, list) and (default is None) != (kind[0] == "null"):
            problems.append(f"{where}: default {default!r} does not match the first branch")
        if isinstance(kind, dict) and kind["type"] == "enum" and default not in kind["symbols"]:
            problems.append(f"{where}: default {default!r} is not a symbol")
    assert problems == []


def test_no_event_carries_its_own_event_id() -> None:
    # CloudEvents ids travel in Kafka headers (ce_id), never in the body.
    for path in SCHEMA_FILES:
        schema = load(path)
        assert not [w for w, f in fields(schema) if f["name"] in ("event_id", "ce_id", "id")]


# --- the AsyncAPI document ---------------------------------------------------------------


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (schemas_dir() / "asyncapi.yaml").read_text(encoding="utf-8")
    )
    return document


def follow(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        assert part in node, f"unresolved {ref}"
        node = node[part]
    return node


def test_asyncapi_lists_exactly_the_topics_with_their_messages(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    channels = {c["address"]: c for c in asyncapi["channels"].values()}
    assert set(channels) == {t.name for t in ALL_TOPICS} | {"{topic}.dlq"}
    for topic in ALL_TOPICS:
        channel = channels[topic.name]
        (message,) = [follow(asyncapi, m["$ref"]) for m in channel["messages"].values()]
        assert message["name"] == topic.event
        payload = message["payload"]
        assert payload["schemaFormat"] == "application/vnd.apache.avro+json;version=1.9.0"
        avsc = load(schemas_dir() / payload["schema"]["$ref"])
        assert f"{avsc['namespace']}.{avsc['name']}" == topic.event
        assert message["bindings"]["kafka"]["key"]["description"].startswith(topic.key)
        assert channel["bindings"]["kafka"]["partitions"] == topic.partitions
        assert follow(asyncapi, message["headers"]["$ref"]) is follow(
            asyncapi, "#/components/schemas/CloudEventHeaders"
        )
    dead_letters = channels["{topic}.dlq"]
    assert dead_letters["parameters"]["topic"]["enum"] == [t.name for t in ALL_TOPICS]


def test_asyncapi_operations_name_a_producer_and_a_consumer_per_channel(
    asyncapi: dict[str, Any],
) -> None:
    actions: dict[str, set[str]] = {key: set() for key in asyncapi["channels"]}
    for op_id, operation in asyncapi["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        follow(asyncapi, channel_ref)
        channel_key = channel_ref.rsplit("/", 1)[1]
        for message in operation["messages"]:
            # An operation's messages must be messages of its own channel.
            assert message["$ref"].startswith(f"{channel_ref}/messages/"), op_id
            follow(asyncapi, message["$ref"])
        assert op_id.split(".")[0] == operation["tags"][0]["name"]
        actions[channel_key].add(operation["action"])
    assert {key: sorted(a) for key, a in actions.items()} == {
        key: ["receive", "send"] for key in actions
    }


def test_asyncapi_documents_the_headers(asyncapi: dict[str, Any]) -> None:
    schemas = asyncapi["components"]["schemas"]
    assert set(schemas["CloudEventHeaders"]["required"]) == {
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_specversion",
        "traceparent",
        "content-type",
    }
    dlq = schemas["DeadLetterHeaders"]
    assert set(dlq["required"]) <= set(dlq["properties"])
    assert {"dlq_error_type", "dlq_error_message", "dlq_source_topic"} <= set(dlq["required"])


# --- golden vectors ----------------------------------------------------------------------


def crc64_avro(data: bytes) -> bytes:
    """The Avro specification's Rabin fingerprint, written out independently of fastavro,
    so that the vectors' headers do not rest on the library they are meant to check."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_vector_files_are_exactly_what_the_codec_produces() -> None:
    directory = schemas_dir() / "vectors"
    assert {p.stem for p in directory.glob("*.json")} == {p.stem for p in SCHEMA_FILES}
    # Regenerate with `lepton contract vectors --write` only for a deliberate change.
    assert stale_vector_files(directory) == []


@pytest.mark.parametrize("name", sorted(EXAMPLES), ids=schema_file_stem)
def test_vectors_round_trip(name: str, codec: Codec) -> None:
    path = schemas_dir() / "vectors" / f"{schema_file_stem(name)}.json"
    vectors = json.loads(path.read_text(encoding="utf-8"))
    assert len(vectors) >= 2
    # At least one example exercises non-ASCII text (the seed's 普通住宅, B区 …).
    assert any(not json.dumps(v["record"], ensure_ascii=False).isascii() for v in vectors)
    schema = codec.schema(name)
    header = b"\xc3\x01" + crc64_avro(schema.canonical.encode())
    for vector in vectors:
        data = bytes.fromhex(vector["bytes_hex"])
        assert data.startswith(header), vector["description"]
        decoded_name, record = codec.decode(data, expected=name)
        assert decoded_name == name
        assert to_wire_values(record) == vector["record"], vector["description"]
        assert codec.encode(name, vector["record"]) == data


def test_canonical_form_matches_the_specification_example() -> None:
    # From the Avro specification: the canonical form strips docs and defaults and
    # orders the attributes, which is what the fingerprint is computed over.
    schema = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "namespace": "a",
            "doc": "d",
            "fields": [{"name": "f", "type": "int", "default": 1, "doc": "x"}],
        },
        _write_hint=False,
    )
    canonical = to_parsing_canonical_form(schema)
    assert canonical == '{"name":"a.R","type":"record","fields":[{"name":"f","type":"int"}]}'


# --- codec errors ------------------------------------------------------------------------

ORIGIN = MessageOrigin("lepton.node.heartbeats", 3, 42)


@pytest.fixture(scope="module")
def heartbeat() -> bytes:
    codec = default_codec()
    return codec.encode("lepton.NodeHeartbeat", EXAMPLES["lepton.NodeHeartbeat"][1][1])


@pytest.mark.parametrize(
    ("mangle", "error", "reason"),
    [
        (lambda b: b[:5], TruncatedMessageError, "shorter than the 10-byte header"),
        (lambda b: b[:-1], TruncatedMessageError, "body ends before"),
        (lambda b: b"\x00\x01" + b[2:], CorruptMessageError, "not Avro single-object"),
        (lambda b: b[:2] + bytes([b[2] ^ 0xFF]) + b[3:], UnknownFingerprintError, "fingerprint"),
        (lambda b: b + b"\x00", CorruptMessageError, "1 bytes left over"),
    ],
    ids=["truncated-header", "truncated-body", "bad-magic", "unknown-fingerprint", "trailing"],
)
def test_decode_errors_are_specific_and_name_the_origin(
    heartbeat: bytes, mangle: Any, error: type[DecodeError], reason: str, codec: Codec
) -> None:
    with pytest.raises(error) as caught:
        codec.decode(mangle(heartbeat), origin=ORIGIN)
    assert type(caught.value) is error
    assert reason in str(caught.value)
    assert "lepton.node.heartbeats[3]@42" in str(caught.value)
    assert caught.value.origin == ORIGIN


def test_a_valid_event_of_another_type_is_a_wrong_schema_error(
    heartbeat: bytes, codec: Codec
) -> None:
    with pytest.raises(WrongSchemaError, match=r"expected lepton\.JobEvent.*\[3\]@42"):
        codec.decode(heartbeat, expected="lepton.JobEvent", origin=ORIGIN)
    # The same bytes are fine where they belong: the error is about the type, not the bytes.
    assert codec.decode(heartbeat, expected="lepton.NodeHeartbeat")[0] == "lepton.NodeHeartbeat"


def test_a_tombstone_is_a_corrupt_message(codec: Codec) -> None:
    with pytest.raises(CorruptMessageError, match="tombstone"):
        codec.decode(None, origin=ORIGIN)
