"""Schemas stay backward compatible: a new reader reads data written with the previous
committed version of its schema (and with every version kept in schemas/history/).

The rule check (lepton.contract.compatibility) is backed by an empirical one: the old
version's golden vectors, encoded with the old schema, are decoded by fastavro with the new
schema as reader.
"""

from __future__ import annotations

import copy
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import fastavro
import pytest

from lepton.contract import schemas_dir
from lepton.contract.compatibility import check_backward_compatible

SCHEMAS = schemas_dir()
SCHEMA_FILES = sorted(SCHEMAS.glob("*.avsc"))


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )


def previous_version(repo: Path, relative: str) -> tuple[str, str] | None:
    """The most recent committed version of ``relative`` whose text differs from the
    working copy, as (commit, text); None when there is none (a new file).

    In a working tree with an uncommitted edit that is HEAD's version; right after the
    edit is committed it is the version before, so CI checks the same pair as the author.
    """
    if git(repo, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        return None  # no commit yet
    current = (repo / relative).read_text(encoding="utf-8")
    log = git(repo, "log", "--format=%H", "--", relative)
    assert log.returncode == 0, log.stderr
    for commit in log.stdout.split():
        shown = git(repo, "show", f"{commit}:{relative}")
        if shown.returncode != 0:
            continue  # the commit deleted the file
        if shown.stdout != current:
            return commit, shown.stdout
    return None


def decode_with(old: dict[str, Any], new: dict[str, Any], records: list[Any]) -> list[Any]:
    """Encode ``records`` with ``old`` and read them back with ``new`` as reader schema."""
    writer = fastavro.parse_schema(old, named_schemas={})
    reader = fastavro.parse_schema(new, named_schemas={})
    decoded = []
    for record in records:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, writer, record)
        buffer.seek(0)
        decoded.append(fastavro.schemaless_reader(buffer, writer, reader))
    return decoded


@pytest.fixture(scope="module")
def repo() -> Path:
    root = SCHEMAS.parent
    if git(root, "rev-parse", "--show-toplevel").returncode != 0:
        pytest.skip("schemas/ is not inside a git checkout (an installed package)")
    return root


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_schema_reads_data_of_its_previous_committed_version(repo: Path, path: Path) -> None:
    relative = path.relative_to(repo).as_posix()
    new = json.loads(path.read_text(encoding="utf-8"))
    # The checker must at least accept a schema as compatible with itself.
    assert check_backward_compatible(new, new) == []
    found = previous_version(repo, relative)
    if found is None:
        return  # a schema that was never committed differently has nothing to break
    commit, text = found
    old = json.loads(text)
    assert check_backward_compatible(old, new) == [], f"breaks data written at {commit[:10]}"
    old_vectors = git(repo, "show", f"{commit}:schemas/vectors/{path.stem}.json")
    if old_vectors.returncode == 0:
        records = [v["record"] for v in json.loads(old_vectors.stdout)]
        new_fields = {f["name"] for f in new["fields"]}
        for record in decode_with(old, new, records):
            assert set(record) == new_fields


def test_schemas_read_every_version_kept_in_history() -> None:
    # lepton.contract's codec decodes data written with these versions: they must resolve.
    current = {
        f"{s['namespace']}.{s['name']}": s
        for s in (json.loads(p.read_text(encoding="utf-8")) for p in SCHEMA_FILES)
    }
    for path in sorted(SCHEMAS.glob("history/*/*.avsc")):
        old = json.loads(path.read_text(encoding="utf-8"))
        name = f"{old.get('namespace', 'lepton')}.{old['name']}"
        assert name in current, f"{path}: no current schema {name}"
        assert check_backward_compatible(old, current[name]) == [], path


# --- the checker on deliberate pairs ------------------------------------------------------


def record(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "t", "fields": list(fields)}


def enum(*symbols: str, default: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "enum", "name": "E", "symbols": list(symbols)}
    if default is not None:
        schema["default"] = default
    return schema


BASE = record({"name": "a", "type": "int"}, {"name": "s", "type": "string"})
NESTED = record(
    {"name": "inner", "type": record({"name": "x", "type": "int"}, name="Inner")},
    {"name": "again", "type": "Inner"},
)

# (old, new, an example written with old, a phrase the problem must contain)
INCOMPATIBLE = {
    "new field without default": (
        BASE,
        record(*BASE["fields"], {"name": "b", "type": "long"}),
        {"a": 1, "s": "x"},
        "R.b: new field without a default",
    ),
    "type change string -> int": (
        BASE,
        record({"name": "a", "type": "int"}, {"name": "s", "type": "int"}),
        {"a": 1, "s": "x"},
        "R.s: type changed from string to int",
    ),
    "narrowing long -> int": (
        record({"name": "a", "type": "long"}),
        record({"name": "a", "type": "int"}),
        {"a": 1},
        "R.a: type changed from long to int",
    ),
    "enum symbol removed without default": (
        record({"name": "e", "type": enum("x", "y")}),
        record({"name": "e", "type": enum("x")}),
        {"e": "y"},
        "enum symbols ['y'] removed",
    ),
    "union branch removed": (
        record({"name": "u", "type": ["null", "string", "int"]}),
        record({"name": "u", "type": ["null", "string"]}),
        {"u": 5},
        "written int matches no branch",
    ),
    "optional made required": (
        record({"name": "u", "type": ["null", "string"]}),
        record({"name": "u", "type": "string"}),
        {"u": None},
        "R.u: type changed from null to string",
    ),
    "nested record field without default": (
        NESTED,
        record(
            {
                "name": "inner",
                "type": record(
                    {"name": "x", "type": "int"}, {"name": "y", "type": "int"}, name="Inner"
                ),
            },
            {"name": "again", "type": "Inner"},
        ),
        {"inner": {"x": 1}, "again": {"x": 2}},
        "R.inner.y: new field without a default",
    ),
    "array items narrowed": (
        record({"name": "xs", "type": {"type": "array", "items": "double"}}),
        record({"name": "xs", "type": {"type": "array", "items": "float"}}),
        {"xs": [1.5]},
        "R.xs[]: type changed from double to float",
    ),
    "map values changed": (
        record({"name": "m", "type": {"type": "map", "values": "string"}}),
        record({"name": "m", "type": {"type": "map", "values": "boolean"}}),
        {"m": {"k": "v"}},
        "R.m{}: type changed from string to boolean",
    ),
    "record renamed without alias": (
        BASE,
        {**BASE, "name": "S"},
        {"a": 1, "s": "x"},
        "renamed from t.R to t.S",
    ),
}

# Breaks that Avro itself would accept, but that change what the numbers mean.
STRICTER = {
    "logical type changed": (
        record({"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}),
        record({"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}}),
        "logical type changed from timestamp-millis to timestamp-micros",
    ),
}

COMPATIBLE = {
    "field added with default": (
        BASE,
        record(*BASE["fields"], {"name": "b", "type": ["null", "string"], "default": None}),
        {"a": 1, "s": "x"},
    ),
    "field removed": (BASE, record({"name": "a", "type": "int"}), {"a": 1, "s": "x"}),
    "int -> long -> double": (
        record({"name": "a", "type": "int"}, {"name": "b", "type": "long"}),
        record({"name": "a", "type": "long"}, {"name": "b", "type": "double"}),
        {"a": 1, "b": 2},
    ),
    "string -> bytes": (
        record({"name": "s", "type": "string"}),
        record({"name": "s", "type": "bytes"}),
        {"s": "x"},
    ),
    "enum symbol added": (
        record({"name": "e", "type": enum("x")}),
        record({"name": "e", "type": enum("x", "y")}),
        {"e": "x"},
    ),
    "enum symbol removed, reader has a default": (
        record({"name": "e", "type": enum("unknown", "x", "y", default="unknown")}),
        record({"name": "e", "type": enum("unknown", "x", default="unknown")}),
        {"e": "y"},
    ),
    "value made optional": (
        record({"name": "s", "type": "string"}),
        record({"name": "s", "type": ["null", "string"]}),
        {"s": "x"},
    ),
    "union widened": (
        record({"name": "u", "type": ["null", "int"]}),
        record({"name": "u", "type": ["null", "string", "long"]}),
        {"u": 3},
    ),
    "nested record field added with default": (
        NESTED,
        record(
            {
                "name": "inner",
                "type": record(
                    {"name": "x", "type": "int"},
                    {"name": "y", "type": "int", "default": 0},
                    name="Inner",
                ),
            },
            {"name": "again", "type": "Inner"},
        ),
        {"inner": {"x": 1}, "again": {"x": 2}},
    ),
    "field renamed with alias": (
        BASE,
        record({"name": "a", "type": "int"}, {"name": "text", "type": "string", "aliases": ["s"]}),
        {"a": 1, "s": "x"},
    ),
    "array and map values widened": (
        record(
            {"name": "xs", "type": {"type": "array", "items": "float"}},
            {"name": "m", "type": {"type": "map", "values": "int"}},
        ),
        record(
            {"name": "xs", "type": {"type": "array", "items": "double"}},
            {"name": "m", "type": {"type": "map", "values": "long"}},
        ),
        {"xs": [1.5], "m": {"k": 1}},
    ),
}


@pytest.mark.parametrize(
    ("old", "new", "example", "problem"), INCOMPATIBLE.values(), ids=list(INCOMPATIBLE)
)
def test_incompatible_changes_are_reported(
    old: dict[str, Any], new: dict[str, Any], example: dict[str, Any], problem: str
) -> None:
    problems = check_backward_compatible(old, new)
    assert any(problem in p for p in problems), problems
    # Avro's own resolution fails on the same data: the check is not inventing problems.
    with pytest.raises((fastavro.read.SchemaResolutionError, ValueError, TypeError)):
        decode_with(old, new, [example])


@pytest.mark.parametrize(("old", "new", "problem"), STRICTER.values(), ids=list(STRICTER))
def test_changes_of_meaning_are_reported(
    old: dict[str, Any], new: dict[str, Any], problem: str
) -> None:
    assert any(problem in p for p in check_backward_compatible(old, new))


@pytest.mark.parametrize(("old", "new", "example"), COMPATIBLE.values(), ids=list(COMPATIBLE))
def test_compatible_changes_pass(
    old: dict[str, Any], new: dict[str, Any], example: dict[str, Any]
) -> None:
    assert check_backward_compatible(old, new) == []
    (decoded,) = decode_with(old, new, [example])
    assert set(decoded) == {f["name"] for f in new["fields"]}


def test_recursive_types_terminate() -> None:
    node = record(
        {"name": "value", "type": "int"},
        {"name": "next", "type": ["null", "Node"], "default": None},
        name="Node",
    )
    wider = copy.deepcopy(node)
    wider["fields"][0]["type"] = "long"
    assert check_backward_compatible(node, wider) == []
    assert check_backward_compatible(wider, node) == ["t.Node.value: type changed from long to int"]


# --- the real schemas, deliberately broken -------------------------------------------------


def real(stem: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{stem}.avsc").read_text(encoding="utf-8"))
    return schema


def test_breaking_a_real_schema_is_caught() -> None:
    old = real("job_event")
    added = copy.deepcopy(old)
    added["fields"].append({"name": "cluster", "type": "string", "doc": "d"})
    assert check_backward_compatible(old, added) == [
        "lepton.JobEvent.cluster: new field without a default"
    ]

    no_default = copy.deepcopy(old)
    kind = next(f for f in no_default["fields"] if f["name"] == "kind")["type"]
    kind["symbols"].remove("lost")
    del kind["default"]
    assert check_backward_compatible(old, no_default) == [
        "lepton.JobEvent.kind: enum symbols ['lost'] removed and the new enum has no default"
    ]

    nested = real("job_requested")
    narrowed = copy.deepcopy(nested)
    demand = next(f for f in narrowed["fields"] if f["name"] == "demand")["type"]
    demand["fields"][0]["type"] = "string"
    assert check_backward_compatible(nested, narrowed) == [
        "lepton.JobRequested.demand.cpu_millicores: type changed from int to string"
    ]


def test_the_git_history_check_finds_a_break(tmp_path: Path) -> None:
    """The repository may have no history for a schema yet; prove the history plumbing on
    a scratch repository: commit v1, then v2, then edit v3 in the working tree."""
    git(tmp_path, "init", "--quiet")
    path = tmp_path / "schemas" / "r.avsc"
    path.parent.mkdir()

    def commit(schema: dict[str, Any]) -> None:
        path.write_text(json.dumps(schema), encoding="utf-8")
        assert git(tmp_path, "add", "schemas/r.avsc").returncode == 0
        done = git(
            tmp_path,
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "--quiet",
            "-m",
            "v",
        )
        assert done.returncode == 0, done.stderr

    v1 = BASE
    v2 = record(*BASE["fields"], {"name": "b", "type": "long", "default": 0})
    commit(v1)
    commit(v2)
    # Committed and unchanged: the pair to check is (v1, v2).
    found = previous_version(tmp_path, "schemas/r.avsc")
    assert found is not None
    assert json.loads(found[1]) == v1
    assert check_backward_compatible(json.loads(found[1]), v2) == []
    # An uncommitted breaking edit is checked against HEAD's version, and fails.
    v3 = record(*v2["fields"], {"name": "c", "type": "long"})
    path.write_text(json.dumps(v3), encoding="utf-8")
    found = previous_version(tmp_path, "schemas/r.avsc")
    assert found is not None
    assert json.loads(found[1]) == v2
    assert check_backward_compatible(json.loads(found[1]), v3) == [
        "t.R.c: new field without a default"
    ]
