"""Backward compatibility of Avro schemas: can a reader holding the new schema read every
record written with the old one?

The check follows the schema resolution rules of the Avro specification, with the new
schema as reader and the old one as writer: a field the reader adds needs a default, a
field the reader drops is skipped, numbers may widen (int -> long -> float -> double),
string and bytes convert both ways, every writer union branch must match a reader branch,
and a writer enum symbol the reader lacks needs a reader enum default. It is stricter than
Avro in two places, because in both the bytes would still decode but mean something else:
a named type must keep its full name (or list the old one in its aliases), and a changed
logical type (timestamp-millis -> timestamp-micros) is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["check_backward_compatible"]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
# writer type -> reader types that can read it (besides itself).
_PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def check_backward_compatible(old: Any, new: Any) -> list[str]:
    """Problems that stop ``new`` (reader) from reading data written with ``old`` (writer).

    Both are schemas in their JSON form (as parsed from ``.avsc``). Empty when compatible.
    """
    return _Resolver(_Names.of(old), _Names.of(new)).check(old, new, "")


class _Names:
    """The named types of one schema by full name, with their namespaces resolved."""

    def __init__(self) -> None:
        self.types: dict[str, Mapping[str, Any]] = {}

    @classmethod
    def of(cls, schema: Any) -> _Names:
        names = cls()
        names._collect(schema, "")
        return names

    def _collect(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
            return
        if not isinstance(schema, Mapping):
            return
        kind = schema.get("type")
        if kind in _NAMED:
            full = _full_name(schema["name"], schema.get("namespace", namespace))
            self.types[full] = schema
            for field in schema.get("fields", ()):
                # Types defined inside a record inherit its namespace.
                self._collect(field["type"], full.rpartition(".")[0])
        elif kind == "array":
            self._collect(schema["items"], namespace)
        elif kind == "map":
            self._collect(schema["values"], namespace)
        else:
            self._collect(kind, namespace)

    def resolve(self, schema: Any, namespace: str) -> Any:
        """A reference becomes its definition; a ``{"type": <type>}`` wrapper is unwrapped,
        except around a primitive, whose attributes carry the logical type."""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return schema
            for candidate in (_full_name(schema, namespace), schema):
                if candidate in self.types:
                    return self.types[candidate]
            raise ValueError(f"unknown type {schema!r}")
        if isinstance(schema, Mapping):
            kind = schema.get("type")
            if isinstance(kind, str) and kind in _PRIMITIVES | _NAMED | {"array", "map"}:
                return schema
            return self.resolve(kind, namespace)
        return schema

    def full_name(self, schema: Mapping[str, Any]) -> str:
        for full, definition in self.types.items():
            if definition is schema:
                return full
        raise ValueError(f"named type {schema.get('name')!r} was not collected")


def _full_name(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema["type"]
    return "record" if kind == "error" else str(kind)


def _describe(schema: Any) -> str:
    kind = _kind(schema)
    if isinstance(schema, Mapping) and kind in _NAMED:
        return f"{kind} {schema['name']}"
    return kind


class _Resolver:
    def __init__(self, writer: _Names, reader: _Names) -> None:
        self.writer = writer
        self.reader = reader
        # Recursive types: a pair already being compared is assumed compatible, which is
        # sound because its problems are reported where the comparison started.
        self.in_progress: set[tuple[str, str]] = set()

    def check(
        self, writer: Any, reader: Any, path: str, ns: tuple[str, str] = ("", "")
    ) -> list[str]:
        """``ns`` holds the writer's and the reader's enclosing namespaces, against which
        short type references resolve."""
        w_ns, r_ns = ns
        w = self.writer.resolve(writer, w_ns)
        r = self.reader.resolve(reader, r_ns)
        w_kind, r_kind = _kind(w), _kind(r)
        where = path or "<root>"

        if r_kind == "union":
            branches = w if w_kind == "union" else [w]
            problems = []
            for branch in branches:
                if not any(not self.check(branch, option, path, (w_ns, r_ns)) for option in r):
                    problems.append(
                        f"{where}: written {_describe(self.writer.resolve(branch, w_ns))} "
                        "matches no branch of the new union"
                    )
            return problems
        if w_kind == "union":
            # Every branch the writer may have used must resolve to the reader's type.
            return [p for branch in w for p in self.check(branch, r, path, (w_ns, r_ns))]

        if w_kind in _PRIMITIVES and r_kind in _PRIMITIVES:
            if w_kind != r_kind and r_kind not in _PROMOTIONS.get(w_kind, frozenset()):
                return [f"{where}: type changed from {w_kind} to {r_kind}"]
            w_logical = w.get("logicalType") if isinstance(w, Mapping) else None
            r_logical = r.get("logicalType") if isinstance(r, Mapping) else None
            if w_logical != r_logical:
                return [f"{where}: logical type changed from {w_logical} to {r_logical}"]
            return []
        if w_kind != r_kind:
            return [f"{where}: type changed from {_describe(w)} to {_describe(r)}"]

        if r_kind == "array":
            return self.check(w["items"], r["items"], f"{path}[]", (w_ns, r_ns))
        if r_kind == "map":
            return self.check(w["values"], r["values"], f"{path}{{}}", (w_ns, r_ns))

        w_name, r_name = self.writer.full_name(w), self.reader.full_name(r)
        aliases = {_full_name(a, r_name.rpartition(".")[0]) for a in r.get("aliases", ())}
        if w_name != r_name and w_name not in aliases:
            return [f"{where}: {r_kind} renamed from {w_name} to {r_name} without an alias"]
        if r_kind == "enum":
            return self._enum(w, r, where)
        if r_kind == "fixed":
            if w["size"] != r["size"]:
                return [f"{where}: fixed size changed from {w['size']} to {r['size']}"]
            return []
        return self._record(w, r, path, w_name, r_name)

    def _enum(self, writer: Mapping[str, Any], reader: Mapping[str, Any], where: str) -> list[str]:
        removed = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if removed and "default" not in reader:
            return [f"{where}: enum symbols {removed} removed and the new enum has no default"]
        return []

    def _record(
        self,
        writer: Mapping[str, Any],
        reader: Mapping[str, Any],
        path: str,
        w_name: str,
        r_name: str,
    ) -> list[str]:
        pair = (w_name, r_name)
        if pair in self.in_progress:
            return []
        self.in_progress.add(pair)
        prefix = path or r_name
        w_ns, r_ns = w_name.rpartition(".")[0], r_name.rpartition(".")[0]
        written = {field["name"]: field for field in writer["fields"]}
        problems = []
        for field in reader["fields"]:
            source = next(
                (
                    written[name]
                    for name in (field["name"], *field.get("aliases", ()))
                    if name in written
                ),
                None,
            )
            field_path = f"{prefix}.{field['name']}"
            if source is None:
                if "default" not in field:
                    problems.append(f"{field_path}: new field without a default")
                continue
            problems.extend(self.check(source["type"], field["type"], field_path, (w_ns, r_ns)))
        self.in_progress.discard(pair)
        return problems
