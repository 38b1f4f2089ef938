"""The package's shape: imports point one way (no cycle, lazy imports included), no private name
crosses a module boundary, and the core never imports napari or Qt."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_casper"
#: the GUI layer: the npe2 hooks and the dock widgets; everything else is the Qt-free core
GUI_MODULES = ("napari_casper._widgets", "napari_casper._reader", "napari_casper._writer", "napari_casper._sample_data")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` for every import statement, function-local ones too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            out.append((module, [alias.name for alias in node.names], node.lineno))
    return out


def internal_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg import module`` counts as the module)."""
    modules = all_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for module, names, _ in imports_of(path, name):
            if not module.startswith("napari_casper"):
                continue
            targets = {f"{module}.{n}" for n in names if f"{module}.{n}" in modules} or {module}
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != name and target in modules:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = internal_graph()
    assert sum(len(v) for v in graph.values()) > 100  # the graph was really built
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_name_crosses_a_module():
    offenders = []
    for name, path in all_modules().items():
        for module, names, line in imports_of(path, name):
            if not module.startswith("napari_casper"):
                continue
            private_parts = [p for p in module.split(".") if p.startswith("_") and p != "_widgets"]
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_parts or private_names:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} {module} {private_names}")
    assert not offenders, "\n".join(offenders)


def test_core_never_imports_napari_or_qt():
    offenders = []
    for name, path in all_modules().items():
        if name.startswith(GUI_MODULES):
            continue
        for module, _, line in imports_of(path, name):
            if module.split(".")[0] in {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt"}:
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("package", ["casper", "casper.batch", "evaluate", "io", "display", "histology", "regions", "runtime", "cli"])
def test_each_concern_is_a_package(package):
    assert (PACKAGE / package.replace(".", "/") / "__init__.py").is_file()


def test_no_module_at_the_root_but_the_hooks():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "_reader.py", "_sample_data.py", "_writer.py", "errors.py"]


def test_architecture_doc_names_every_core_module():
    """docs/architecture.md's map stays true: every core module is named there."""
    import re

    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    words = set(re.findall(r"[A-Za-z_]+", doc))
    missing = [
        name
        for name, path in all_modules().items()
        if not name.startswith("napari_casper._widgets") and path.stem != "__init__" and path.stem not in words
    ]
    assert not missing, f"modules missing from docs/architecture.md: {missing}"


def test_widgets_import_only_their_own_package_and_common():
    """A dock widget's package never reaches into another widget's package (shared code lives in common/)."""
    offenders = []
    for name, path in all_modules().items():
        parts = name.split(".")
        if len(parts) < 4 or parts[1] != "_widgets":
            continue
        own = ".".join(parts[:3])
        for module, _, line in imports_of(path, name):
            if module.startswith("napari_casper._widgets.") and not module.startswith((own, "napari_casper._widgets.common")):
                offenders.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not offenders, "\n".join(offenders)
