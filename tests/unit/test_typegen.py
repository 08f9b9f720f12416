"""The generated event types: in step with schemas/, and mapped as the codec reads Avro."""

from __future__ import annotations

from typing import Any

import pytest

from lepton.bus import Event
from lepton.contract import default_codec, events
from lepton.contract.codec import WrongSchemaError
from lepton.contract.job_events import job_event
from lepton.contract.typegen import generate, generated_module, main

_SMALL_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Parcel",
    "namespace": "test",
    "doc": "A parcel.",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "weight", "type": "double"},
        {"name": "count", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "sent_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "labels", "type": {"type": "map", "values": "long"}},
        {
            "name": "state",
            "type": {"type": "enum", "name": "State", "symbols": ["unknown", "sent"]},
        },
        {
            "name": "origin",
            "type": {
                "type": "record",
                "name": "Place",
                "fields": [{"name": "city", "type": "string"}],
            },
        },
        {"name": "destination", "type": ["null", "test.Place"], "default": None},
        {"name": "value", "type": ["double", "string", "bytes", "boolean"]},
    ],
}


def test_the_checked_in_events_module_is_what_the_generator_writes() -> None:
    # The drift check CI runs: `python -m lepton.contract.typegen --write` after a schema edit.
    assert events.__file__ is not None
    with open(events.__file__) as checked_in:
        assert checked_in.read() == generated_module()
    assert main(["--check"]) == 0


def test_the_first_line_says_the_module_is_generated_and_by_what() -> None:
    first = generated_module().splitlines()[0]
    assert first.startswith("# Generated")
    assert "python -m lepton.contract.typegen --write" in first


def test_avro_types_map_to_python_types_as_the_codec_decodes_them() -> None:
    module = generate([_SMALL_SCHEMA])
    assert 'State = Literal[\n    "unknown",\n    "sent",\n]' in module
    assert "class Place(TypedDict):" in module
    # Nested named types come before the record that uses them.
    assert module.index("class Place(") < module.index("class Parcel(")
    fields = module[module.index("class Parcel(") :].split("\n\n", 1)[1]
    assert fields.splitlines()[:11] == [
        "    id: str",
        "    weight: float",
        "    count: int",
        "    note: NotRequired[str | None]",
        "    sent_at: int",
        "    tags: NotRequired[list[str]]",
        "    labels: dict[str, int]",
        "    state: State",
        "    origin: Place",
        "    destination: NotRequired[Place | None]",
        "    value: float | str | bytes | bool",
    ]
    assert '    Parcel: "test.Parcel",' in module


def test_the_generated_module_compiles_and_names_every_event_type() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(generate([_SMALL_SCHEMA]), "<generated>", "exec"), namespace)
    assert namespace["EVENT_NAMES"] == {namespace["Parcel"]: "test.Parcel"}
    assert set(events.EVENT_NAMES.values()) == set(default_codec().names)


def test_an_unknown_named_type_is_an_error() -> None:
    broken = {"type": "record", "name": "A", "fields": [{"name": "b", "type": "test.Missing"}]}
    with pytest.raises(ValueError, match=r"test\.Missing"):
        generate([broken])


def _event(type_name: str, record: dict[str, Any]) -> Event:
    return Event("t", 0, 7, "k", type_name, record, 0, None)  # type: ignore[arg-type]


def test_record_as_returns_the_record_itself_for_its_event_type() -> None:
    record = job_event("job-1", "queued", "acme", time_ms=5)
    assert _event("lepton.JobEvent", dict(record)).record_as(events.JobEvent) == record


def test_record_as_refuses_another_event_type() -> None:
    with pytest.raises(WrongSchemaError, match=r"lepton\.JobEvent is not a lepton\.JobAssigned"):
        _event("lepton.JobEvent", {}).record_as(events.JobAssigned)


def test_a_job_event_sets_every_field_and_encodes() -> None:
    record = job_event("job-1", "failed", "acme", attempt=2, time_ms=5, reason="oom")
    codec = default_codec()
    assert codec.decode(codec.encode("lepton.JobEvent", record))[1] == record
    assert (record["reason"], record["attempt"], record["node_id"]) == ("oom", 2, None)
    assert len(record) == len(codec.schema("lepton.JobEvent").parsed["fields"])
