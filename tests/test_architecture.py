"""The layout's rules, checked on the source: which packages may import which, that no two modules import each
other (directly or round a longer loop), and how big a piece may grow.

Layering (docs/ARCHITECTURE.md): objective, encoders and data import nothing above them; model imports encoders and
data; evaluation's metrics import no model or data code and model-level evaluation no model code (it is
duck-typed); train composes them; cli parses and calls. ``config`` (a package: every ``mmvicreg.config.*`` module
is the config layer), ``choices``, ``files``, ``distributed``, ``devices`` and ``preprocessing`` are leaves anyone
may import.

Cycles: the import graph has one node per module (a package is its ``__init__``) and an edge for every import a
module writes, at the top or inside a function: ``from mmvicreg.model import hub`` is an edge to the module
``mmvicreg.model.hub``, ``from mmvicreg.model import JointEmbedding`` one to ``mmvicreg.model`` (its
``__init__``); imports under ``if TYPE_CHECKING:`` count too. The parent package Python runs before a submodule
is not an edge: a package's ``__init__`` re-exporting its submodules is no cycle, but a submodule importing a
name from its own package's ``__init__`` is.
"""

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmvicreg"
LEAVES = {"config", "choices", "extras", "files", "distributed", "devices", "preprocessing", "version"}
ALLOWED = {
    "choices": set(),
    "files": set(),
    "extras": set(),
    "version": set(),
    "config": {"choices", "files"},
    "distributed": set(),
    "devices": {"choices"},
    "preprocessing": {"choices"},
    "objective": LEAVES,
    "encoders": LEAVES,
    "data": LEAVES,
    "model": LEAVES | {"encoders"},
    "evaluation.metrics": LEAVES,
    "evaluation": LEAVES | {"evaluation.metrics", "data"},
    "train": LEAVES | {"objective", "encoders", "data", "model", "evaluation", "evaluation.metrics"},
    "serve": LEAVES | {"evaluation", "evaluation.metrics", "data"},  # the search service over a loaded index
    "cli": LEAVES | {"objective", "encoders", "data", "model", "evaluation", "evaluation.metrics", "train", "serve"},
    "interop": LEAVES | {"model", "data", "evaluation", "evaluation.metrics"},  # other tools' loader conventions
    "__init__": LEAVES | {"objective", "model", "data"},  # the public names (data: mmvicreg.encode)
    "__main__": {"cli"},
}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def _modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _layer(module: str) -> str:
    """``mmvicreg.evaluation.metrics.knn`` -> ``evaluation.metrics``; ``mmvicreg.data.sources.x`` -> ``data``;
    ``mmvicreg.config.schema`` -> ``config``."""
    parts = module.split(".")[1:] or ["__init__"]
    if parts[:2] == ["evaluation", "metrics"]:
        return "evaluation.metrics"
    return parts[0]


def _own_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _import_statements(path: Path, root: Path = PACKAGE) -> Iterator[tuple[str, list[str]]]:
    """``(module, names)`` of every import of our package in ``path``, top-level or inside functions: ``import a.b``
    gives ``("a.b", [])``, ``from a import x, y`` gives ``("a", ["x", "y"])``, relative imports resolved."""
    own = _own_name(path, root) if root in path.parents else path.stem
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, []) for a in node.names if a.name.split(".")[0] == root.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = own.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] == root.name:
                yield module, [a.name for a in node.names]


def _imports(path: Path) -> set[str]:
    """Every mmvicreg module named by an import in ``path`` (top-level or inside functions)."""
    return {module for module, _ in _import_statements(path)}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: the modules it imports}`` over the package at ``root`` (see the module docstring)."""
    paths = {_own_name(p, root): p for p in _modules(root)}

    def nearest(name: str) -> str | None:  # the module itself, or the package that holds the name
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for own, path in paths.items():
        targets = set()
        for module, names in _import_statements(path, root):
            for name in names or [""]:
                targets.add(f"{module}.{name}" if f"{module}.{name}" in paths else nearest(module))
        graph[own] = {t for t in targets if t is not None and t != own}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import each other, round any loop (a strongly connected component of more than
    one module, by Tarjan's algorithm), as a sorted list; the groups sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(sorted(group) for group in groups)


def loop(graph: Mapping[str, set[str]], group: list[str]) -> list[str]:
    """A shortest loop ``[a, b, ..., a]`` through the group's first module, inside the group (breadth first)."""
    start, group = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def test_no_import_cycle_between_modules():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "modules that import each other: " + "; ".join(
        f"{group} (e.g. {' -> '.join(loop(graph, group))})" for group in found
    )


def test_the_cycle_check_can_fail(tmp_path):
    """A planted package: a loop through a function-level import and a relative one is found; an ``__init__``
    re-exporting its submodules is not a cycle; a submodule importing its own package's ``__init__`` is."""
    root = tmp_path / "mmvicreg"
    (root / "a").mkdir(parents=True)
    files = {
        "__init__.py": "from mmvicreg.a import x\n",
        "a/__init__.py": "from mmvicreg.a.x import f\nfrom .y import g\n",
        "a/x.py": "import os\n\ndef f():\n    from mmvicreg.a.y import g\n    return g\n",
        "a/y.py": "from . import z\n\ndef g():\n    return 1\n",
        "a/z.py": "from mmvicreg.a import x as again\n",
        "leaf.py": "from mmvicreg.a import f\n",
        "b.py": "import mmvicreg.leaf\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(root)
    assert graph["mmvicreg.a.x"] == {"mmvicreg.a.y"} and graph["mmvicreg.a.y"] == {"mmvicreg.a.z"}
    assert graph["mmvicreg"] == {"mmvicreg.a.x"} and graph["mmvicreg.b"] == {"mmvicreg.leaf"}
    assert graph["mmvicreg.leaf"] == {"mmvicreg.a"}
    assert cycles(graph) == [["mmvicreg.a.x", "mmvicreg.a.y", "mmvicreg.a.z"]]
    assert loop(graph, cycles(graph)[0]) == ["mmvicreg.a.x", "mmvicreg.a.y", "mmvicreg.a.z", "mmvicreg.a.x"]
    (root / "a" / "z.py").write_text("from mmvicreg.a import f\n")  # the package __init__, which imports x
    assert cycles(import_graph(root)) == [["mmvicreg.a", "mmvicreg.a.x", "mmvicreg.a.y", "mmvicreg.a.z"]]
    (root / "a" / "z.py").write_text("")
    assert cycles(import_graph(root)) == []
    synthetic = {"p": {"q"}, "q": {"p", "r"}, "r": {"s"}, "s": {"t"}, "t": {"r"}, "u": {"p"}}
    assert cycles(synthetic) == [["p", "q"], ["r", "s", "t"]]
    assert loop(synthetic, ["r", "s", "t"]) == ["r", "s", "t", "r"]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    own = _own_name(path)
    layer = _layer(own) if own != "mmvicreg" else "__init__"
    if path.name == "__main__.py":
        layer = "__main__"
    bad = []
    for module in _imports(path):
        target = _layer(module) if module != "mmvicreg" else "__init__"
        if target != layer and target not in ALLOWED[layer]:
            bad.append(module)
    assert not bad, f"{own} ({layer}) imports {bad}; {layer} may import only {sorted(ALLOWED[layer])}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_sizes(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name} has {len(text.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines in {path.name}: {long}"


def test_the_rules_catch_a_violation(tmp_path):
    """The checks above can fail: a data module importing train is caught, and so is a long function."""
    bad = tmp_path / "mod.py"
    bad.write_text("from mmvicreg.train import train\n\ndef f():\n" + "    x = 1\n" * 90)
    assert "mmvicreg.train" in _imports(bad)
    assert "train" not in ALLOWED["data"]
    (func,) = [n for n in ast.walk(ast.parse(bad.read_text())) if isinstance(n, ast.FunctionDef)]
    assert func.end_lineno - func.lineno + 1 > MAX_FUNCTION_LINES


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_attribute_of_another_library_is_read(path):
    """``x._name`` is allowed only on our own objects: ``self``, ``cls``, autograd's ``ctx``, or our modules."""
    own_modules = {"mmvicreg"}
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls", "ctx", *own_modules}:
            continue
        if node.attr in {"_replace", "_make", "_asdict", "_fields"}:  # NamedTuple's public API
            continue
        if node.attr == "_logging" and isinstance(node.value, ast.Name) and node.value.id == "torch":
            continue  # torch._logging.set_logs is torch's documented switch (pytorch.org/docs/stable/logging.html)
        bad.append(f"line {node.lineno}: .{node.attr}")
    assert not bad, f"{path.name} reads private attributes: {bad}"
