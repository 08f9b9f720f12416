"""Generates ``lepton/contract/events.py``: one TypedDict per Avro record in ``schemas/``.

TypedDicts because the codec already decodes records to dicts and encodes dicts: the types
cost nothing at run time, and mypy checks every field name a producer writes or a handler
reads. A ``timestamp-millis`` is an ``int`` of epoch milliseconds, as the codec decodes it.
A field with a default is ``NotRequired``: producers may leave it out, and the decoder
always fills it in.

    python -m lepton.contract.typegen --write   # regenerate after editing a schema
    python -m lepton.contract.typegen --check   # exit 1 if events.py is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = ["generate", "generated_module", "main"]

COMMAND = "python -m lepton.contract.typegen --write"
_LINE_LENGTH = 100
_PRIMITIVES = {
    "null": "None",
    "boolean": "bool",
    "int": "int",
    "long": "int",
    "float": "float",
    "double": "float",
    "string": "str",
    "bytes": "bytes",
}


class _Generator:
    """Walks schemas depth first, so a named type is emitted before its first use."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.named: set[str] = set()

    def type_of(self, schema: Any, namespace: str) -> str:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            full = schema if "." in schema else f"{namespace}.{schema}"
            if full not in self.named:
                raise ValueError(f"{full} is used before it is defined")
            return full.rsplit(".", 1)[1]
        if isinstance(schema, list):
            branches = [self.type_of(branch, namespace) for branch in schema]
            # Optional first reads best: `str | None` rather than `None | str`.
            branches.sort(key=lambda branch: branch == "None")
            return " | ".join(branches)
        kind = schema["type"]
        if kind == "array":
            return f"list[{self.type_of(schema['items'], namespace)}]"
        if kind == "map":
            return f"dict[str, {self.type_of(schema['values'], namespace)}]"
        if kind in ("record", "enum"):
            return self.define(schema, namespace)
        if kind in _PRIMITIVES:  # a primitive with a logical type: the codec returns its base
            return _PRIMITIVES[kind]
        raise ValueError(f"unsupported Avro type {kind!r}")

    def define(self, schema: Mapping[str, Any], namespace: str) -> str:
        name = schema["name"]
        namespace = schema.get("namespace", namespace)
        full = name if "." in name else f"{namespace}.{name}"
        short = full.rsplit(".", 1)[1]
        if full in self.named:  # schema files each repeat the named types they share
            return short
        if schema["type"] == "enum":
            self.named.add(full)
            symbols = "".join(f"    {json.dumps(symbol)},\n" for symbol in schema["symbols"])
            doc = _docstring(schema.get("doc", full), "")
            self.blocks.append(f"{short} = Literal[\n{symbols}]\n{doc}")
            return short
        fields = [
            f"    {field['name']}: {self._field_type(field, namespace)}\n"
            for field in schema["fields"]
        ]
        self.named.add(full)  # after its fields: Avro records cannot refer to themselves here
        docstring = _docstring(schema.get("doc", full), "    ") + "\n"
        self.blocks.append(f"class {short}(TypedDict):\n{docstring}{''.join(fields)}")
        return short

    def _field_type(self, field: Mapping[str, Any], namespace: str) -> str:
        annotation = self.type_of(field["type"], namespace)
        return f"NotRequired[{annotation}]" if "default" in field else annotation


def _docstring(text: str, indent: str) -> str:
    """A docstring wrapped to the line length, as ruff would leave it."""
    if len(indent) + len(text) + 6 <= _LINE_LENGTH:
        return f'{indent}"""{text}"""\n'
    lines = textwrap.wrap(text, _LINE_LENGTH - len(indent))
    body = "".join(f"{indent}{line}\n" for line in lines)
    return f'{indent}"""\n{body}{indent}"""\n'


def generate(schemas: Sequence[Mapping[str, Any]]) -> str:
    """The module text for ``schemas`` (top-level record schemas, in the given order)."""
    generator = _Generator()
    events = [(generator.define(schema, ""), _full_name(schema)) for schema in schemas]
    names = "".join(f"    {short}: {json.dumps(full)},\n" for short, full in events)
    exported = ["EVENT_NAMES", *sorted(name.rsplit(".", 1)[1] for name in generator.named)]
    exports = "".join(f"    {json.dumps(name)},\n" for name in exported)
    return (
        f"# Generated from schemas/*.avsc by `{COMMAND}`; do not edit.\n"
        '"""Typed events: one TypedDict per Avro record, one Literal per enum."""\n\n'
        "from __future__ import annotations\n\n"
        "from typing import Any, Final, Literal, NotRequired, TypedDict\n\n"
        f"__all__ = [\n{exports}]\n\n\n"
        + "\n\n".join(generator.blocks)
        + "\n\n# The Avro full name of each event type, for Event.record_as.\n"
        + f"EVENT_NAMES: Final[dict[Any, str]] = {{\n{names}}}\n"
    )


def _full_name(schema: Mapping[str, Any]) -> str:
    name: str = schema["name"]
    return name if "." in name else f"{schema.get('namespace', '')}.{name}".lstrip(".")


def _load(paths: Iterable[Path]) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(paths)]


def generated_module() -> str:
    """What ``events.py`` should hold for the schemas of this checkout."""
    from lepton.contract import schemas_dir

    return generate(_load(schemas_dir().glob("*.avsc")))


def _target() -> Path:
    return Path(__file__).resolve().parent / "events.py"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton.contract.typegen")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="regenerate events.py")
    action.add_argument("--check", action="store_true", help="exit 1 if events.py is stale")
    arguments = parser.parse_args(argv)
    expected = generated_module()
    target = _target()
    if arguments.write:
        target.write_text(expected)
        return 0
    if target.read_text() != expected:
        print(f"{target} is out of date with schemas/: run `{COMMAND}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
