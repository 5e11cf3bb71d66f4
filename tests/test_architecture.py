"""The layout's rules, checked on the source: which packages may import which, and how big a piece may grow.

Layering (DESIGN.md): objective, encoders and data import nothing above them; model imports encoders and data;
evaluation's metrics import no model or data code and model-level evaluation no model code (it is duck-typed);
train composes them; cli parses and calls. ``config``, ``choices``, ``files`` and ``distributed`` are leaves
anyone may import.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmvicreg"
LEAVES = {"config", "config_checks", "choices", "files", "distributed", "devices"}
ALLOWED = {
    "choices": set(),
    "files": set(),
    "config": {"choices", "files", "config_checks"},
    "config_checks": {"choices", "config"},
    "distributed": set(),
    "devices": {"choices"},
    "objective": LEAVES,
    "encoders": LEAVES,
    "data": LEAVES,
    "model": LEAVES | {"encoders", "data"},
    "evaluation.metrics": LEAVES,
    "evaluation": LEAVES | {"evaluation.metrics", "data"},
    "train": LEAVES | {"objective", "encoders", "data", "model", "evaluation", "evaluation.metrics"},
    "cli": LEAVES | {"objective", "encoders", "data", "model", "evaluation", "evaluation.metrics", "train"},
    "__init__": LEAVES | {"objective", "model"},
    "__main__": {"cli"},
}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _layer(module: str) -> str:
    """``mmvicreg.evaluation.metrics.knn`` -> ``evaluation.metrics``; ``mmvicreg.data.sources.x`` -> ``data``."""
    parts = module.split(".")[1:] or ["__init__"]
    if parts[:2] == ["evaluation", "metrics"]:
        return "evaluation.metrics"
    return parts[0]


def _own_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _imports(path: Path) -> set[str]:
    """Every mmvicreg module named by an import in ``path`` (top-level or inside functions)."""
    out = set()
    own = _own_name(path) if PACKAGE in path.parents else path.stem
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("mmvicreg"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative import: resolve against this module's package
                base = own.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
                out.add(".".join([*base, node.module]))
            elif node.module.startswith("mmvicreg"):
                out.add(node.module)
    return out


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
        bad.append(f"line {node.lineno}: .{node.attr}")
    assert not bad, f"{path.name} reads private attributes: {bad}"
