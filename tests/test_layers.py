"""The package's layers, read from its source: no import cycles, the recording library never
imports the experiment service, and docs/architecture.md's picture of the layers is current (every
module in exactly one layer, no import from a layer above).

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a cycle that
only type checkers see is still two modules that cannot be understood one without the other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "disco_data_logger"
PACKAGE = "disco_data_logger"

# Modules kept importable from their 0.2.0 place; they only re-export the service's names.
COMPATIBILITY_ALIASES = {f"{PACKAGE}.config", f"{PACKAGE}.context"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of this package that ``name`` imports, resolved to module names."""
    is_package = path.name == "__init__.py"
    base = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                prefix = f"{anchor}.{node.module}" if node.module else anchor
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        for target in targets:
            # "from . import x" names a module when x is one; otherwise the package itself.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported_modules(name, path, known) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_a_module_that_imports_it_back():
    graph = import_graph()
    # Packages re-exporting their modules lazily (sharding/__init__) import them by design; a
    # package and its own modules are one unit, so edges from a package to its children and
    # from a module to its parent package are left out.
    pruned = {
        name: {t for t in targets if not t.startswith(name + ".") and not name.startswith(t + ".")}
        for name, targets in graph.items()
    }
    assert cycles(pruned) == []


def test_the_recording_library_never_imports_the_experiment_service():
    graph = import_graph()
    service = f"{PACKAGE}.sharding"
    offenders = {
        name: sorted(t for t in targets if t == service or t.startswith(service + "."))
        for name, targets in graph.items()
        if not (name == service or name.startswith(service + "."))
        and name not in COMPATIBILITY_ALIASES
        and not name.startswith(f"{PACKAGE}.models")
        and name not in {PACKAGE, f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_graph_sees_real_imports():
    """Guard against a parser that finds nothing (and so no cycles)."""
    graph = import_graph()
    assert f"{PACKAGE}.sharding.config" in graph[f"{PACKAGE}.sharding.context"]
    assert f"{PACKAGE}.errors" in graph[f"{PACKAGE}.logger"]


ARCHITECTURE = PACKAGE_ROOT.parent / "docs" / "architecture.md"


def pictured_layers() -> list[tuple[str, set[str]]]:
    """The layers of docs/architecture.md's picture, top first: (title, modules)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    picture = text[text.index("┌─ entry points"):]
    picture = picture[:picture.index("```")]
    layers: list[tuple[str, set[str]]] = []
    for line in picture.splitlines():
        if line.startswith("┌─"):
            title = line.strip("┌─┐ ").split(" ─")[0].strip()
            layers.append((title, set()))
            continue
        prefix = f"{PACKAGE}.sharding." if layers[-1][0].startswith("sharding/") else f"{PACKAGE}."
        for name in re.findall(r"(?<![\w/.])([\w]+)\.py\b", line):
            layers[-1][1].add(prefix + name)
        if re.search(r"(?<![\w/])models/", line):
            layers[-1][1].add(f"{PACKAGE}.models")
    return layers


def layer_of(module: str, layers: list[tuple[str, set[str]]]) -> int | None:
    if module.startswith(f"{PACKAGE}.models."):
        module = f"{PACKAGE}.models"
    found = [i for i, (_title, names) in enumerate(layers) if module in names]
    return found[0] if len(found) == 1 else None


PACKAGES = {PACKAGE, f"{PACKAGE}.sharding"}
"""Packages whose ``__init__`` re-exports their modules (left out, as in the cycle check)."""


def test_the_architecture_picture_names_every_module_once():
    layers = pictured_layers()
    assert len(layers) >= 5, layers
    pictured = [m for _title, names in layers for m in names]
    assert len(pictured) == len(set(pictured)), "a module is in two layers of the picture"
    real = {m for m in modules() if m not in PACKAGES}
    assert {m for m in real if layer_of(m, layers) is None} == set(), \
        "modules missing from docs/architecture.md's picture"
    assert set(pictured) - real - {f"{PACKAGE}.models"} == set(), \
        "the picture names modules that do not exist"


def test_no_module_imports_from_a_layer_above_it():
    layers = pictured_layers()
    upward = []
    for name, targets in import_graph().items():
        if name in PACKAGES:
            continue
        mine = layer_of(name, layers)
        assert mine is not None, name
        for target in targets - PACKAGES:
            theirs = layer_of(target, layers)
            if theirs is not None and theirs < mine:
                upward.append(f"{name} ({layers[mine][0]}) imports {target} "
                              f"({layers[theirs][0]})")
    assert upward == []
