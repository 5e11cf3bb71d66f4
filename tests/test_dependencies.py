"""Every third-party package the library imports is a declared dependency (not one that happens to be here): a core
one, or an optional extra's imported only inside the function that needs it (so that importing mmvicreg never
needs the extra)."""

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.helpers import REPO_ROOT


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules(module_level_only: bool = False) -> set[str]:
    modules: set[str] = set()
    for path in (REPO_ROOT / "mmvicreg").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in (tree.body if module_level_only else ast.walk(tree)):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"mmvicreg"}


def _names(requirements) -> set[str]:
    return {_normalise(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in requirements}


def test_every_imported_package_is_a_declared_dependency():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = _names(project["dependencies"])
    extras = _names(r for name, reqs in project["optional-dependencies"].items() if name not in ("test", "dev")
                    for r in reqs)
    at_import = _imported_top_level_modules(module_level_only=True)
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_top_level_modules()):
        names = {_normalise(d) for d in distributions.get(module, [module])}
        if not names & declared and not (names & extras and module not in at_import):
            undeclared[module] = sorted(names)
    assert not undeclared, f"imported by mmvicreg but not in [project] dependencies: {undeclared}"
