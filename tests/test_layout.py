"""The package's shape, as ARCHITECTURE.md states it, checked on every run.

- no import cycles between the package's modules, counting imports inside
  functions (a lazy import only hides a cycle);
- imports inside functions only of optional extras or of libraries that are
  slow to import (so ``import clipbranches_widget`` stays fast);
- the engine never imports the session or the widget;
- modules and classes stay small enough to read whole.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "clipbranches_widget"
# optional extras, imported where they are used (each names its extra when
# missing); everything else, pandas and pyarrow included (scikit-learn loads
# them anyway), is imported at the top of its module
LAZY_OK = {"torch", "torchvision", "open_clip", "duckdb", "pyspark", "matplotlib", "skimage"}
# the package's own __getattr__ loads the widget (anywidget, ipywidgets) on first use
LAZY_INTERNAL_OK = {("clipbranches_widget", "clipbranches_widget.widget")}
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 310  # "about 300"


def _modules():
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


MODULES = _modules()


def _imports(name, path, is_pkg):
    """(target module, imported at top level?, lineno) for every import in the file."""
    tree = ast.parse(path.read_text())
    inside = set()  # imports in a function body (module-level try/if blocks count as top)
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(fn))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [
                f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names
            ]
        else:
            continue
        for t in targets:
            yield t, id(node) not in inside, node.lineno


def _package_edges(include_lazy: bool):
    edges = {m: set() for m in MODULES}
    for m, (f, is_pkg) in MODULES.items():
        for t, top, _ in _imports(m, f, is_pkg):
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            # a module importing its own package's __init__ is how re-exports work
            if t and t != m and not m.startswith(t + ".") and (top or include_lazy):
                edges[m].add(t)
    return edges


def _cycles(edges):
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                on.discard(w)
                comp.append(w)
            on.discard(v)
            if comp:
                found.append(sorted([v, *comp]))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_even_through_lazy_imports():
    edges = _package_edges(include_lazy=True)
    for m, t in LAZY_INTERNAL_OK:
        edges[m].discard(t)
    assert _cycles(edges) == []


def test_function_level_imports_are_optional_or_heavy_dependencies_only():
    bad = []
    for m, (f, is_pkg) in MODULES.items():
        for t, top, line in _imports(m, f, is_pkg):
            if not top and t.split(".")[0] not in LAZY_OK and (m, t) not in LAZY_INTERNAL_OK:
                bad.append(f"{f.relative_to(ROOT)}:{line} imports {t}")
    assert bad == []


def test_the_engine_never_imports_the_session_or_the_widget():
    edges = _package_edges(include_lazy=True)
    banned = {
        "clipbranches_widget.session",
        "clipbranches_widget.widget",
        "clipbranches_widget.thumbnails",
        "clipbranches_widget.evaluation",
    }
    bad = {
        m: sorted(t for t in ts if t in banned or t.startswith("clipbranches_widget.evaluation."))
        for m, ts in edges.items()
        if m.startswith("clipbranches_widget.engine")
    }
    assert {m: t for m, t in bad.items() if t} == {}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_classes_are_small_enough_to_read_whole(name):
    path = MODULES[name][0]
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path.name}: {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"{name}.{node.name}: {size} lines"


def test_importing_the_package_loads_no_torch_and_no_widget():
    code = (
        "import sys, clipbranches_widget; "
        "print(sorted(m for m in ('torch', 'open_clip', 'anywidget') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip() == "[]"
