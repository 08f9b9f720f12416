"""Avro binary encoders and decoders compiled from a schema into straight-line Python.

Why: fastavro's compiled reader fetches every byte through a Python method call
(``fo.read(1)``) and dispatches on the schema's type names at each value; its writer
validates every branch of a union it considers. Those were the largest single costs of
the scheduler (a quarter of its time went to encoding job events). A function generated
once per schema, which knows each field's type, reads and writes the same bytes two to
four times faster.

Scope: one schema's own data (writer schema = reader schema). Reading data written with
another version of a schema (resolution) stays with fastavro, as does any schema with a
construct :func:`compile_schema` does not take (it raises :class:`Unsupported`). The
output is proven byte for byte against fastavro by ``tests/unit/test_avro.py``.

Field names and enum symbols enter the generated source only through ``repr``, never as
identifiers: the source is built from our own schema files, and even so a hostile name
could not become code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from fastavro._logical_writers_py import prepare_timestamp_millis  # type: ignore[attr-defined]

__all__ = ["Decoder", "Encoder", "Unsupported", "compile_schema", "compile_split_decoder"]

Encoder = Callable[[Mapping[str, Any]], bytes]
Decoder = Callable[[bytes, int], tuple[dict[str, Any], int]]

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


class Unsupported(ValueError):
    """The schema uses something the compiler does not generate code for."""


# ---------------------------------------------------------------------- run-time helpers


_ONE_BYTE = [bytes([n]) for n in range(128)]


def _long_bytes(value: int) -> bytes:
    if not isinstance(value, int):
        raise TypeError(f"an int is required, not {type(value).__name__}")
    if not _LONG_RANGE[0] <= value <= _LONG_RANGE[1]:
        raise OverflowError(f"{value} does not fit in an Avro long")
    n = (value << 1) ^ (value >> 63)
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _utf8(value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"a str is required, not {type(value).__name__}")
    return value.encode()


def _timestamp_millis(value: Any) -> Any:
    """Epoch milliseconds of a datetime, as fastavro counts them; anything else as it is."""
    return prepare_timestamp_millis(value, None) if isinstance(value, datetime) else value


_RUNTIME: dict[str, Any] = {
    "_long_bytes": _long_bytes,
    "_utf8": _utf8,
    "_ts": _timestamp_millis,
    "_unpack_d": struct.Struct("<d").unpack_from,
    "_unpack_f": struct.Struct("<f").unpack_from,
    "_pack_d": struct.Struct("<d").pack,
    "_pack_f": struct.Struct("<f").pack,
    "_Mapping": Mapping,
    "_INT_MIN": _INT_RANGE[0],
    "_INT_MAX": _INT_RANGE[1],
    "_LONG_MIN": _LONG_RANGE[0],
    "_LONG_MAX": _LONG_RANGE[1],
}


# ----------------------------------------------------------------------------- compiling


class _Source:
    """Lines of generated Python, with fresh local names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self._count = 0

    def name(self, prefix: str = "v") -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def constant(self, value: Any) -> str:
        name = self.name("_c")
        self.constants[name] = value
        return name

    def add(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def define(self, signature: str, label: str) -> Any:
        """Compile the lines as the body of ``def <signature>:`` and return the function."""
        name = signature.partition("(")[0]
        source = f"def {signature}:\n" + "\n".join(self.lines) + "\n"
        scope = dict(_RUNTIME) | self.constants
        exec(compile(source, f"<avro {label}>", "exec"), scope)  # noqa: S102
        return scope[name]


class _Builder:
    """What the reader and the writer compilers share: named types and the source."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.src = _Source()


def _type_of(schema: Any, named: dict[str, Any]) -> Any:
    """The schema with named references replaced by their definitions."""
    if isinstance(schema, str) and schema in named:
        return named[schema]
    if isinstance(schema, dict) and schema.get("type") in named and len(schema) == 1:
        return named[schema["type"]]
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        kind = schema["type"]
        return kind if isinstance(kind, str) else _kind(kind)
    return str(schema)


def _register(schema: Any, named: dict[str, Any]) -> None:
    """Collect every named type (records, enums, fixed) by full name."""
    if isinstance(schema, list):
        for branch in schema:
            _register(branch, named)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            named[schema["name"]] = schema
            for field in schema.get("fields", ()):
                _register(field["type"], named)
        elif kind == "array":
            _register(schema["items"], named)
        elif kind == "map":
            _register(schema["values"], named)
        elif isinstance(kind, (dict, list)):
            _register(kind, named)


# ------------------------------------------------------------------------------ decoding


class _DecoderBuilder(_Builder):
    def long(self, depth: int, target: str) -> None:
        """A zig-zag varint, inline: a function call per value cost as much as the rest."""
        add = self.src.add
        add(depth, "b = buf[pos]")
        add(depth, "pos += 1")
        add(depth, "if b < 128:")
        add(depth + 1, f"{target} = (b >> 1) ^ -(b & 1)")
        add(depth, "else:")
        add(depth + 1, "n = b & 127")
        add(depth + 1, "shift = 7")
        add(depth + 1, "while True:")
        add(depth + 2, "b = buf[pos]")
        add(depth + 2, "pos += 1")
        add(depth + 2, "n |= (b & 127) << shift")
        add(depth + 2, "if b < 128:")
        add(depth + 3, "break")
        add(depth + 2, "shift += 7")
        add(depth + 2, "if shift > 63:")
        add(depth + 3, "raise ValueError('a varint longer than ten bytes')")
        add(depth + 1, "n &= 0xFFFFFFFFFFFFFFFF")  # ten bytes hold 70 bits; Avro keeps 64
        add(depth + 1, f"{target} = (n >> 1) ^ -(n & 1)")

    def sized(self, depth: int, target: str, text: bool) -> None:
        n = self.src.name("n")
        self.long(depth, n)
        add = self.src.add
        add(depth, f"end = pos + {n}")
        add(depth, f"if {n} < 0 or end > size:")
        add(depth + 1, f"raise IndexError(f'a length of {{{n}}} at {{pos}} runs past the end')")
        add(depth, f"{target} = buf[pos:end]{'.decode()' if text else ''}")
        add(depth, "pos = end")

    def value(self, schema: Any, depth: int, target: str) -> None:
        schema = _type_of(schema, self.named)
        kind = _kind(schema)
        add = self.src.add
        if isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
            self.value(schema["type"], depth, target)
        elif kind == "null":
            add(depth, f"{target} = None")
        elif kind == "boolean":
            add(depth, f"{target} = buf[pos] != 0")
            add(depth, "pos += 1")
        elif kind in ("int", "long"):
            self.long(depth, target)
        elif kind == "double":
            add(depth, f"{target}, = _unpack_d(buf, pos)")
            add(depth, "pos += 8")
        elif kind == "float":
            add(depth, f"{target}, = _unpack_f(buf, pos)")
            add(depth, "pos += 4")
        elif kind in ("string", "bytes"):
            self.sized(depth, target, text=kind == "string")
        elif kind == "enum":
            symbols = self.src.constant(tuple(schema["symbols"]))
            index = self.src.name("i")
            self.long(depth, index)
            add(depth, f"if not 0 <= {index} < {len(schema['symbols'])}:")
            add(depth + 1, f"raise ValueError(f'enum index {{{index}}} out of range')")
            add(depth, f"{target} = {symbols}[{index}]")
        elif kind in ("array", "map"):
            self.block(schema, kind, depth, target)
        elif kind == "union":
            self.union(schema, depth, target)
        elif kind in ("record", "error"):
            self.record(schema, depth, target)
        else:
            raise Unsupported(f"cannot compile a reader for {kind}")

    def block(self, schema: dict[str, Any], kind: str, depth: int, target: str) -> None:
        if kind == "array" and _kind(_type_of(schema["items"], self.named)) == "null":
            raise Unsupported("an array of nulls")  # its items take no bytes at all
        add = self.src.add
        count, skipped, item, key = (self.src.name(p) for p in ("n", "s", "x", "k"))
        add(depth, f"{target} = []" if kind == "array" else f"{target} = {{}}")
        add(depth, "while True:")
        self.long(depth + 1, count)
        add(depth + 1, f"if {count} == 0:")
        add(depth + 2, "break")
        add(depth + 1, f"if {count} < 0:")
        add(depth + 2, f"{count} = -{count}")
        self.long(depth + 2, skipped)  # the block's size in bytes: not needed
        # Every item takes a byte at least: a hostile count fails here, not after a
        # long loop.
        add(depth + 1, f"if {count} > size - pos:")
        add(depth + 2, f"raise IndexError(f'{{{count}}} items at {{pos}} cannot fit')")
        add(depth + 1, f"for _ in range({count}):")
        if kind == "array":
            self.value(schema["items"], depth + 2, item)
            add(depth + 2, f"{target}.append({item})")
        else:
            self.sized(depth + 2, key, text=True)
            self.value(schema["values"], depth + 2, item)
            add(depth + 2, f"{target}[{key}] = {item}")

    def union(self, branches: list[Any], depth: int, target: str) -> None:
        add = self.src.add
        index = self.src.name("i")
        self.long(depth, index)
        for number, branch in enumerate(branches):
            add(depth, f"{'if' if number == 0 else 'elif'} {index} == {number}:")
            self.value(branch, depth + 1, target)
        add(depth, "else:")
        add(depth + 1, f"raise ValueError(f'union branch {{{index}}} out of range')")

    def record(
        self,
        schema: dict[str, Any],
        depth: int,
        target: str,
        fields: slice = slice(None),
    ) -> None:
        names = []
        for field in schema["fields"][fields]:
            local = self.src.name("f")
            self.value(field["type"], depth, local)
            names.append((field["name"], local))
        self.src.add(depth, f"{target} = {{{', '.join(f'{k!r}: {v}' for k, v in names)}}}")


def _compile_decoder(
    schema: dict[str, Any], named: dict[str, Any], fields: slice = slice(None)
) -> Decoder:
    """A decoder of the record's ``fields`` (all of them by default) into a dict."""
    builder = _DecoderBuilder(named)
    builder.src.add(1, "size = len(buf)")
    builder.record(schema, 1, "record", fields)
    builder.src.add(1, "return record, pos")
    decoder: Decoder = builder.src.define("decode(buf, pos)", f"reader {schema['name']}")
    return decoder


# ------------------------------------------------------------------------------ encoding

# Which Python values each branch of a union takes, in fastavro's terms (the first
# branch, in schema order, whose check passes is written).
_BRANCH_CHECKS = {
    "null": "{v} is None",
    "boolean": "isinstance({v}, bool)",
    "int": "isinstance({v}, int) and _INT_MIN <= {v} <= _INT_MAX",
    "long": "isinstance({v}, int) and _LONG_MIN <= {v} <= _LONG_MAX",
    "float": "isinstance({v}, (int, float))",
    "double": "isinstance({v}, (int, float))",
    "string": "isinstance({v}, str)",
    "bytes": "isinstance({v}, (bytes, bytearray))",
    "array": "isinstance({v}, (list, tuple))",
    "map": "isinstance({v}, _Mapping)",
    "record": "isinstance({v}, _Mapping)",
}


class _EncoderBuilder(_Builder):
    def value(self, schema: Any, depth: int, source: str) -> None:
        schema = _type_of(schema, self.named)
        kind = _kind(schema)
        add = self.src.add
        logical = schema.get("logicalType") if isinstance(schema, dict) else None
        if isinstance(schema, dict) and isinstance(schema["type"], (dict, list)):
            self.value(schema["type"], depth, source)
        elif kind == "null":
            add(depth, f"if {source} is not None:")
            add(depth + 1, f"raise ValueError(f'{{{source}!r}} is not null')")
        elif kind == "boolean":
            add(depth, f"out += b'\\x01' if {source} else b'\\x00'")
        elif kind in ("int", "long"):
            if logical == "timestamp-millis":
                add(depth, f"out += _long_bytes(_ts({source}))")
            else:
                add(depth, f"out += _long_bytes({source})")
        elif kind == "double":
            add(depth, f"out += _pack_d({source})")
        elif kind == "float":
            add(depth, f"out += _pack_f({source})")
        elif kind in ("string", "bytes"):
            encoded = self.src.name("e")
            add(
                depth,
                f"{encoded} = _utf8({source})" if kind == "string" else f"{encoded} = {source}",
            )
            add(depth, f"out += _long_bytes(len({encoded}))")
            add(depth, f"out += {encoded}")
        elif kind == "enum":
            indexes = self.src.constant(
                {s: _long_bytes(i) for i, s in enumerate(schema["symbols"])}
            )
            add(depth, f"out += {indexes}[{source}]")
        elif kind in ("array", "map"):
            self.block(schema, kind, depth, source)
        elif kind == "union":
            self.union(schema, depth, source)
        elif kind in ("record", "error"):
            self.record(schema, depth, source)
        else:
            raise Unsupported(f"cannot compile a writer for {kind}")

    def block(self, schema: dict[str, Any], kind: str, depth: int, source: str) -> None:
        add = self.src.add
        add(depth, f"if {source}:")
        add(depth + 1, f"out += _long_bytes(len({source}))")
        if kind == "array":
            item = self.src.name("x")
            add(depth + 1, f"for {item} in {source}:")
            self.value(schema["items"], depth + 2, item)
        else:
            key, item, encoded = self.src.name("k"), self.src.name("x"), self.src.name("e")
            add(depth + 1, f"for {key}, {item} in {source}.items():")
            add(depth + 2, f"{encoded} = _utf8({key})")
            add(depth + 2, f"out += _long_bytes(len({encoded}))")
            add(depth + 2, f"out += {encoded}")
            self.value(schema["values"], depth + 2, item)
        add(depth, "out += b'\\x00'")

    def union(self, branches: list[Any], depth: int, source: str) -> None:
        resolved = [_type_of(branch, self.named) for branch in branches]
        kinds = [_kind(branch) for branch in resolved]
        takes_mappings = [k for k in kinds if k in ("map", "record", "error")]
        if len(takes_mappings) > 1 or any(k not in _BRANCH_CHECKS and k != "enum" for k in kinds):
            raise Unsupported(f"cannot compile a writer for the union {kinds}")
        add = self.src.add
        for number, (branch, kind) in enumerate(zip(resolved, kinds, strict=True)):
            if kind == "enum":
                symbols = self.src.constant(frozenset(branch["symbols"]))
                check = f"isinstance({source}, str) and {source} in {symbols}"
            else:
                check = _BRANCH_CHECKS["record" if kind == "error" else kind].format(v=source)
            add(depth, f"{'if' if number == 0 else 'elif'} {check}:")
            add(depth + 1, f"out += {_long_bytes(number)!r}")
            if kind != "null":
                self.value(branch, depth + 1, source)
        add(depth, "else:")
        expected = self.src.constant(f"is not one of the union's branches {kinds}")
        add(depth + 1, f"raise ValueError(f'{{{source}!r}} {{{expected}}}')")

    def record(self, schema: dict[str, Any], depth: int, source: str) -> None:
        for field in schema["fields"]:
            local = self.src.name("f")
            default = field.get("default")
            if default is None:
                self.src.add(depth, f"{local} = {source}.get({field['name']!r})")
            else:
                fallback = self.src.constant(default)
                self.src.add(depth, f"{local} = {source}.get({field['name']!r}, {fallback})")
            self.value(field["type"], depth, local)


def _compile_encoder(schema: dict[str, Any], named: dict[str, Any], header: bytes) -> Encoder:
    builder = _EncoderBuilder(named)
    header_name = builder.src.constant(header)
    builder.src.add(1, f"out = bytearray({header_name})")
    builder.value(schema, 1, "record")
    builder.src.add(1, "return bytes(out)")
    encoder: Encoder = builder.src.define("encode(record)", f"writer {schema['name']}")
    return encoder


def compile_schema(schema: dict[str, Any], header: bytes = b"") -> tuple[Encoder, Decoder]:
    """An encoder (record -> ``header`` + body) and a decoder ((bytes, start) -> (record,
    end)) for a parsed record schema. Raises :class:`Unsupported` for what it cannot do."""
    named: dict[str, Any] = {}
    _register(schema, named)
    return _compile_encoder(schema, named, header), _compile_decoder(schema, named)


def compile_split_decoder(schema: dict[str, Any], at: str) -> tuple[Decoder, Decoder]:
    """Two decoders of a parsed record schema: of the fields before the field ``at``, and
    of the rest. One after the other they read what the whole record's decoder reads.

    For a reader that sees many records whose leading fields repeat (a node's heartbeats):
    when a body's bytes up to where the first part ended are the ones already decoded,
    those fields are known without reading them, and only the rest is decoded.
    """
    names = [field["name"] for field in schema["fields"]]
    if at not in names:
        raise ValueError(f"{schema['name']} has no field {at!r}")
    split = names.index(at)
    named: dict[str, Any] = {}
    _register(schema, named)
    return (
        _compile_decoder(schema, named, slice(None, split)),
        _compile_decoder(schema, named, slice(split, None)),
    )
