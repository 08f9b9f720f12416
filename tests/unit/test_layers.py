"""The import graph of lepton/, services included, follows the layers declared here.

A layer may import only the layers it names (each declared before it), and those it names
as lazy only inside a function; a private module (``_name``) is imported only from inside
its package. Imports under ``TYPE_CHECKING`` count: they are still a dependency a reader
must follow. A service imports lepton's layers below the SDK and never another service; a
lepton module that only one service uses belongs in that service.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = "lepton.services"


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]  # a module belongs to the layer whose prefix matches it longest
    imports: tuple[str, ...] = ()
    imports_lazily: tuple[str, ...] = ()  # only inside a function: optional at run time


_BELOW_SDK = ("errors", "extras", "config", "contract", "scheduling", "bus", "runtime", "data")

LAYERS = (
    Layer("errors", ("lepton.errors",)),
    # which optional parts of the distribution are installed ([server], [local])
    Layer("extras", ("lepton.extras",), ("errors",)),
    Layer("config", ("lepton.config",), ("errors",)),
    Layer("contract", ("lepton.contract",), ("errors", "config")),
    Layer("scheduling", ("lepton.scheduling",), ("errors", "config", "contract")),
    Layer("bus", ("lepton.bus",), ("errors", "config", "contract")),
    Layer("devstack", ("lepton.devstack",), ("errors", "extras", "config", "contract")),
    Layer("runtime", ("lepton.runtime",), ("errors", "config", "contract", "bus"), ("devstack",)),
    # runtime: migrations; contract: its bounds on quoted text
    Layer("data", ("lepton.data",), ("errors", "config", "contract", "runtime")),
    Layer("testing", ("lepton.testing",), ("errors", "config", "contract", "bus", "runtime")),
    # lazily: only lepton.sdk.local, which runs the services on this machine
    Layer("sdk", ("lepton.sdk",), _BELOW_SDK, ("devstack",)),
    Layer("cli", ("lepton.cli",), (*_BELOW_SDK, "devstack", "sdk")),
    # lepton/__init__.py: the SDK's names and every layer's errors
    Layer("package", ("lepton",), (*_BELOW_SDK, "sdk")),
    Layer("main", ("lepton.__main__",), ("cli",)),
    Layer("services", (SERVICES,), _BELOW_SDK),
)

# Imports that break a rule today, each with the change that removes it. The test fails
# when one of them is gone, so that this list only shrinks.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


# Modules one service imports that stay in lepton on purpose, and why.
SHARED_THROUGH_THE_DATABASE = {
    # The catalog's schema: ingest writes it, lepton.data.catalog reads what it creates.
    "lepton.data.tables",
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the package, for a name that is not a module)
    path: Path
    line: int
    lazy: bool  # inside a function

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((ROOT / "lepton").rglob("*.py"))}


class _Collector(ast.NodeVisitor):
    def __init__(self, source: str, path: Path, modules: dict[str, Path]) -> None:
        self.source, self.path, self.modules = source, path, modules
        self.package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.stmt) -> None:
        if target.partition(".")[0] == "lepton":
            self.found.append(Import(self.source, target, self.path, node.lineno, self.depth > 0))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*package, *([node.module] if node.module else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.modules else base, node)


def _imports() -> list[Import]:
    modules = _modules()
    found: list[Import] = []
    for name, path in modules.items():
        collector = _Collector(name, path, modules)
        collector.visit(ast.parse(path.read_text(), str(path)))
        found += collector.found
    return found


def _layer_of(module: str) -> Layer:
    matches = [
        (len(prefix), layer)
        for layer in LAYERS
        for prefix in layer.modules
        if module == prefix or (module.startswith(prefix + ".") and prefix != "lepton")
    ]
    assert matches, f"{module} is in no declared layer: add it to LAYERS"
    return max(matches, key=lambda match: match[0])[1]


def _service_of(module: str) -> str | None:
    if not module.startswith(SERVICES + "."):
        return None
    return ".".join(module.split(".")[:3])


def _private_package(module: str) -> str | None:
    """The package a private module (``_name``) belongs to, for a private module."""
    parts = module.split(".")
    private = [i for i, part in enumerate(parts) if part.startswith("_") and part[:2] != "__"]
    return ".".join(parts[: private[0]]) if private else None


def _broken_rule(found: Import) -> str | None:
    package = _private_package(found.target)
    if package and not (found.source == package or found.source.startswith(package + ".")):
        return f"a private module of {package}"
    source, target = _layer_of(found.source), _layer_of(found.target)
    if source is target:
        source_service, target_service = _service_of(found.source), _service_of(found.target)
        if source_service != target_service:
            return f"{source_service} imports another service, {target_service}"
        return None
    if target.name in source.imports:
        return None
    if target.name in source.imports_lazily:
        return None if found.lazy else f"{source.name} may import {target.name} only lazily"
    return f"layer {source.name} may not import layer {target.name}"


def test_layers_are_declared_lowest_first() -> None:
    declared: set[str] = set()
    for layer in LAYERS:
        for below in (*layer.imports, *layer.imports_lazily):
            assert below in declared, f"{layer.name} imports {below}, not declared before it"
        declared.add(layer.name)


def test_every_import_follows_the_layers() -> None:
    broken = {}
    for found in _imports():
        rule = _broken_rule(found)
        if rule is not None:
            broken[found.source, found.target] = f"{found.where()}: {found.target} ({rule})"
    unexpected = sorted(why for key, why in broken.items() if key not in KNOWN_VIOLATIONS)
    assert not unexpected, "imports across the layers:\n" + "\n".join(unexpected)
    fixed = KNOWN_VIOLATIONS - broken.keys()
    assert not fixed, f"no longer violations, remove them from KNOWN_VIOLATIONS: {fixed}"


def test_no_lepton_module_serves_one_service_alone() -> None:
    users: defaultdict[str, set[str]] = defaultdict(set)
    for found in _imports():
        if (
            found.target.startswith("lepton")
            and not found.target.startswith(SERVICES)
            and found.source != found.target
        ):
            users[found.target].add(_service_of(found.source) or "lepton")
    alone = sorted(
        f"{module} (only {next(iter(who))} imports it: move it there)"
        for module, who in users.items()
        if len(who) == 1 and "lepton" not in who and module not in SHARED_THROUGH_THE_DATABASE
    )
    assert not alone, "\n".join(alone)
