"""The package's modules import each other without cycles.

The graph is read from the source with ``ast``, not by importing it. What counts as an
edge:

- every import executed when the module is imported: module-level statements, including
  those inside module-level ``if``/``try`` blocks;
- not the imports under ``if TYPE_CHECKING:``: they never run, and annotations are
  strings (``from __future__ import annotations``);
- not the imports inside functions: they run on first use, which is how optional
  dependencies and rarely used parts are loaded lazily. They cannot hide a cycle among
  the modules that must build on one another, though: `test_settings_core_has_no_lazy_imports`
  forbids them there;
- ``from package import name`` is an edge to ``package.name`` when that is a module,
  else to ``package``. A submodule's implicit import of its parent package is not an
  edge (Python runs the parent's ``__init__`` first, whatever the child imports).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import backend_kit

PACKAGE_DIR = Path(backend_kit.__file__).parent

# The settings stack, bottom first: each may import only those before it.
SETTINGS_CORE = (
    "backend_kit._secrets",
    "backend_kit._redact",
    "backend_kit._sources",
    "backend_kit._settings",
    "backend_kit._active",
    "backend_kit._class_import",
)


def _module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _module_level_imports(block)
            for handler in node.handlers:
                yield from _module_level_imports(handler.body)
        elif isinstance(node, (ast.With, ast.For, ast.While)):
            yield from _module_level_imports(node.body)


def _function_level_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    yield inner


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The package's modules that *node*, found in *module*, imports."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in MODULES:
                yield alias.name
        return
    if node.level:
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if base not in MODULES:
        return
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        yield candidate if candidate in MODULES else base


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = {
            target
            for node in _module_level_imports(tree.body)
            for target in _targets(module, node)
            if target != module
        }
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk, each as the path that closes it."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def test_the_walk_sees_the_package() -> None:
    graph = import_graph()
    assert len(graph) >= 40
    # A few edges known to exist: the walk resolves relative and absolute imports.
    assert "backend_kit._redact" in graph["backend_kit._settings"]
    assert "backend_kit._settings" in graph["backend_kit._active"]
    assert "backend_kit._active" in graph["backend_kit._cache._default"]


def test_the_walk_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_settings_core_has_no_lazy_imports() -> None:
    """Within the settings stack, each module imports only those below it, at the top."""
    for position, module in enumerate(SETTINGS_CORE):
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        lazy = sorted({t for node in _function_level_imports(tree) for t in _targets(module, node)})
        assert lazy == [], f"{module} imports {lazy} inside a function"
        above = set(SETTINGS_CORE[position:])
        upward = import_graph()[module] & above
        assert upward == set(), f"{module} imports {sorted(upward)}, which build on it"
