"""Interoperability with Apache Avro's Java library, proven rather than assumed.

One JVM launch handles every schema: Java decodes the golden vectors' bytes (written by our
codec) with ``BinaryMessageDecoder``, which finds the schema by the fingerprint in the
header, and encodes the same records with ``BinaryMessageEncoder``, which our codec then
decodes. Java also parses every ``.avsc`` with its stricter parser (defaults validated).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lepton.contract import default_codec, schemas_dir
from lepton.contract.vector_examples import EXAMPLES
from lepton.contract.vectors import build_vectors, schema_file_stem, to_wire_values

pytestmark = pytest.mark.integration

JAVA_SOURCE = Path(__file__).parent / "java" / "AvroInterop.java"
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class AvroJson:
    """Turns a record of plain values into Avro's JSON encoding, which wraps every non-null
    union value as ``{"<branch type name>": value}``."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def convert(self, schema: Any, value: Any, namespace: str = "") -> Any:
        schema = self._resolve(schema, namespace)
        if isinstance(schema, list):
            if value is None:
                assert "null" in schema
                return None
            branch = self._branch_for(schema, value, namespace)
            return {self._branch_name(branch, namespace): self.convert(branch, value, namespace)}
        if isinstance(schema, str):
            return value
        kind = schema["type"]
        if kind == "record":
            inner = self._full_name(schema, namespace).rpartition(".")[0]
            return {
                field["name"]: self.convert(field["type"], value[field["name"]], inner)
                for field in schema["fields"]
            }
        if kind == "array":
            return [self.convert(schema["items"], item, namespace) for item in value]
        if kind == "map":
            return {k: self.convert(schema["values"], v, namespace) for k, v in value.items()}
        return value  # enum symbols and primitives with a logical type are plain

    def _branch_for(self, union: list[Any], value: Any, namespace: str) -> Any:
        """The branch a value belongs to (as fastavro picks it when writing)."""
        branches = [b for b in union if b != "null"]
        if len(branches) == 1:
            return branches[0]
        python_types = {
            "boolean": bool,
            "long": int,
            "int": int,
            "double": float,
            "float": float,
            "string": str,
        }
        for branch in branches:
            resolved = self._resolve(branch, namespace)
            wanted = python_types.get(resolved) if isinstance(resolved, str) else None
            # bool is an int in Python: an int branch must not take True or False.
            if wanted is not None and isinstance(value, wanted):
                if wanted is int and isinstance(value, bool):
                    continue
                return branch
        raise AssertionError(f"no branch of {union} for {value!r}")

    def _full_name(self, schema: dict[str, Any], namespace: str) -> str:
        name: str = schema["name"]
        ns = schema.get("namespace", namespace)
        return name if "." in name or not ns else f"{ns}.{name}"

    def _resolve(self, schema: Any, namespace: str) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            return self.named.get(f"{namespace}.{schema}", self.named.get(schema))
        if isinstance(schema, dict) and schema["type"] in ("record", "enum"):
            self.named.setdefault(self._full_name(schema, namespace), schema)
        return schema

    def _branch_name(self, branch: Any, namespace: str) -> str:
        resolved = self._resolve(branch, namespace)
        if isinstance(resolved, str):
            return resolved
        if resolved["type"] in ("record", "enum"):
            return self._full_name(resolved, namespace)
        return str(resolved["type"])  # array, map, or a primitive with a logical type


def avro_json(name: str, record: dict[str, Any]) -> Any:
    path = schemas_dir() / f"{schema_file_stem(name)}.avsc"
    return AvroJson().convert(json.loads(path.read_text(encoding="utf-8")), record)


@pytest.fixture(scope="module")
def java_batch(java_classpath: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Compiles AvroInterop once and returns a function that runs one batch through it."""
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.fail("Java 17 (java and javac) is needed on PATH for the interop test")
    build = tmp_path_factory.mktemp("avro-interop")
    classpath = os.pathsep.join(str(jar) for jar in java_classpath)
    compiled = subprocess.run(
        ["javac", "-cp", classpath, "-d", str(build), str(JAVA_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stderr

    def run(lines: list[tuple[str, Path, str]]) -> list[tuple[str, str]]:
        source, target = build / "in.tsv", build / "out.tsv"
        source.write_text(
            "".join(f"{op}\t{path}\t{payload}\n" for op, path, payload in lines), encoding="utf-8"
        )
        done = subprocess.run(
            [
                "java",
                "-cp",
                os.pathsep.join([str(build), classpath]),
                "AvroInterop",
                str(source),
                str(target),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        results = [tuple(line.split("\t", 1)) for line in target.read_text("utf-8").splitlines()]
        assert len(results) == len(lines)
        return results  # type: ignore[return-value]

    return run


def test_java_and_lepton_read_each_others_bytes(java_batch: Any) -> None:
    codec = default_codec()
    cases = [
        (name, stem, vector)
        for stem, vectors in build_vectors().items()
        for name in [n for n in EXAMPLES if schema_file_stem(n) == stem]
        for vector in vectors
    ]
    assert {name for name, _, _ in cases} == set(EXAMPLES)
    lines = []
    for name, stem, vector in cases:
        avsc = schemas_dir() / f"{stem}.avsc"
        lines.append(("decode", avsc, vector["bytes_hex"]))
        payload = json.dumps(avro_json(name, vector["record"]), ensure_ascii=False)
        lines.append(("encode", avsc, payload))
    # A negative control: Java must refuse a fingerprint it does not know, or accepting
    # ours would prove nothing about the fingerprints agreeing.
    first = bytes.fromhex(cases[0][2]["bytes_hex"])
    tampered = first[:2] + bytes([first[2] ^ 0x01]) + first[3:]
    lines.append(("decode", schemas_dir() / f"{cases[0][1]}.avsc", tampered.hex()))

    results = java_batch(lines)

    failures = []
    for index, (name, _, vector) in enumerate(cases):
        label = f"{name}: {vector['description']}"
        (d_status, d_out), (e_status, e_out) = results[2 * index], results[2 * index + 1]
        if d_status != "ok":
            failures.append(f"Java could not decode ours, {label}: {d_out}")
        elif json.loads(d_out) != avro_json(name, vector["record"]):
            failures.append(f"Java decoded ours differently, {label}: {d_out}")
        if e_status != "ok":
            failures.append(f"Java could not encode, {label}: {e_out}")
            continue
        java_bytes = bytes.fromhex(e_out)
        decoded_name, record = codec.decode(java_bytes, expected=name)
        if decoded_name != name or to_wire_values(record) != vector["record"]:
            failures.append(f"we decoded Java's bytes differently, {label}")
        # Avro leaves the order of map entries to the writer (Java's HashMap differs from
        # our insertion order), so bytes are compared with our encoding of the same
        # entries in Java's order; for records without maps that is the golden vector.
        if codec.encode(name, record) != java_bytes:
            failures.append(f"Java encoded the same record to other bytes, {label}")
    assert failures == []
    status, message = results[-1]
    assert status == "error"
    assert "MissingSchemaException" in message
