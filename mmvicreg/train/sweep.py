"""Sweeps: many ordinary runs of one config, each with its own overrides, and a table of what they scored.

A sweep folder holds ``sweep.json`` (the config, the search and the metric: a rerun must ask for the same sweep),
one run directory per trial (``trial_000/`` ...: an ordinary ``mmvicreg train`` output directory, with its
``eval.json``) and, after every trial, ``sweep.csv``, ``sweep.md`` and ``sweep.png`` (the metric against each swept
key). A trial is finished when its run directory has ``eval.json``; a killed sweep started again skips finished
trials and resumes unfinished ones from their last checkpoint (``resume=true``).

Two searches: a **grid** (``key=v1,v2,...``: the Cartesian product, values parsed as YAML) and **Optuna**
(``key=low:high[:log]``, an optional extra: ``pip install 'mmvicreg[sweep]'``). Optuna's study lives in the folder
(``optuna.db``, SQLite), so a sweep started again continues its study; a trial a kill interrupted is marked failed
and asked again with the same values, resuming in its folder. Trials run as separate processes, ``jobs`` at a time.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from mmvicreg.extras import import_extra
from mmvicreg.files import atomic_write_json, atomic_write_text

SPEC, TABLE_CSV, TABLE_MD, PLOT, STUDY = "sweep.json", "sweep.csv", "sweep.md", "sweep.png", "optuna.db"


@dataclass
class Search:
    """What to vary: ``grid`` (key -> values) or ``ranges`` (key -> (low, high, log)) with ``trials`` Optuna trials."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, list[Any]] = field(default_factory=dict)
    trials: int | None = None


def _value(text: str) -> Any:
    """A value from the command line: an int, a float (``1e-4`` too, which YAML 1.1 leaves a string), else YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["train.lr=0.1,0.3", ...]`` -> ``{"train.lr": [0.1, 0.3]}``; each value is a number or YAML.

    Keys joined by ``+`` take the same value in every trial (``branches.image.expander+branches.caption.expander=
    512-512,1024-1024``: two branches whose embeddings must keep one width)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid {item!r} must look like dotted.key=v1,v2,... (e.g. loss.gamma=0.5,1)")
        grid[key] = [_value(v) for v in values.split(",")]
    return grid


def parse_ranges(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["train.lr=1e-4:1e-2:log"]`` -> ``{"train.lr": [0.0001, 0.01, True]}``; integer bounds search integers."""
    ranges: dict[str, list[Any]] = {}
    for item in items:
        key, sep, spec = item.partition("=")
        parts = spec.split(":")
        if not sep or not key or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
            raise ValueError(f"--optuna {item!r} must look like dotted.key=low:high or dotted.key=low:high:log")
        low, high = (_value(p) for p in parts[:2])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            raise ValueError(f"--optuna {item!r}: low and high must be numbers with low < high")
        ranges[key] = [low, high, len(parts) == 3]
    return ranges


def grid_trials(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def metric_of(result: dict[str, Any], metric: str) -> float:
    """``metric`` (a dotted key) in a run's ``eval.json``; a missing one raises naming those there are."""
    value: Any = result
    for part in metric.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"eval.json has no {metric!r}; it has {', '.join(sorted(_flat(result)))}")
        value = value[part]
    return float(value)


def _flat(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"] if isinstance(v, (int, float)) else []
    return out


class Sweep:
    """A sweep folder: run the trials of ``search`` on ``config``, ``jobs`` at a time; write table and plot.

    ``overrides`` apply to every trial (e.g. ``train.max_steps=400``). ``runner(cmd, log)`` runs one trial's command
    (a list for ``subprocess``) writing its output to ``log``, and returns the exit status: tests replace it.
    """

    def __init__(self, folder: str | os.PathLike, config: str | os.PathLike, search: Search, metric: str = "rsum",
                 overrides: Sequence[str] = (), jobs: int = 1, direction: str = "maximize",
                 runner: Callable[[list[str], Path], int] | None = None) -> None:
        if not search.grid and not search.ranges:
            raise ValueError("a sweep needs --grid key=v1,v2,... or --optuna key=low:high with --trials N")
        if search.ranges and not search.trials:
            raise ValueError("an Optuna sweep needs --trials N (how many runs to try)")
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1; got {jobs}")
        self.folder, self.config = Path(folder), Path(config)
        if not self.config.is_file():
            raise FileNotFoundError(f"sweep config {self.config} does not exist; pass a YAML config (see examples/)")
        self.search, self.metric, self.overrides, self.jobs = search, metric, list(overrides), jobs
        self.direction = direction
        # each trial's share of the cores: two torch processes each spinning on every core run 30x slower
        self.runner = runner or _ProcessRunner(max(1, (os.cpu_count() or 1) // jobs))
        self._lock = threading.Lock()
        self._check_folder()

    def _spec(self) -> dict[str, Any]:
        return {"config": str(self.config.resolve()), "search": asdict(self.search), "metric": self.metric,
                "overrides": self.overrides, "direction": self.direction}

    def _check_folder(self) -> None:
        path = self.folder / SPEC
        if path.exists():
            saved = json.loads(path.read_text())
            if saved != self._spec():
                raise ValueError(f"{self.folder} holds another sweep ({path}); give a new folder, or the same "
                                 f"config, search, metric and overrides to resume it")
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, self._spec())

    # -- one trial ------------------------------------------------------------------------------------------
    def trial_dir(self, number: int) -> Path:
        return self.folder / f"trial_{number:03d}"

    def run_trial(self, number: int, values: dict[str, Any]) -> float:
        """Run (or resume, or just read) trial ``number`` with ``values``; its metric."""
        out = self.trial_dir(number)
        done = out / "eval.json"
        if not done.exists():
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "trial.json", {"number": number, "values": values})
            keys = [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
                    for tied, v in values.items() for k in tied.split("+")]
            cmd = [sys.executable, "-m", "mmvicreg", "train", str(self.config), *self.overrides, *keys,
                   f"output_dir={out}", "resume=true"]
            status = self.runner(cmd, out / "sweep.log")
            if status != 0 or not done.exists():
                raise RuntimeError(f"trial {number} ({values}) failed (exit {status}); see {out / 'sweep.log'}")
        return metric_of(json.loads(done.read_text()), self.metric)

    # -- the searches ---------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Every trial of the search (finished ones are read, not rerun); the rows of the table."""
        if self.search.grid:
            trials = grid_trials(self.search.grid)
            with ThreadPoolExecutor(self.jobs) as pool:
                list(pool.map(lambda nv: self._guarded(*nv), enumerate(trials)))
        else:
            self._optuna()
        return self.write_table()

    def _guarded(self, number: int, values: dict[str, Any]) -> float | None:
        try:
            return self.run_trial(number, values)
        finally:
            with self._lock:
                self.write_table()

    def _optuna(self) -> None:
        optuna = import_extra("optuna", "sweep", "an Optuna sweep needs optuna")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{self.folder / STUDY}"
        before = len(optuna.create_study(study_name="sweep", storage=storage, load_if_exists=True,
                                         direction=self.direction).get_trials(deepcopy=False))
        # seeded by the trials so far: a resumed study draws new values, not the first run's again
        study = optuna.create_study(study_name="sweep", storage=storage, load_if_exists=True,
                                    direction=self.direction, sampler=optuna.samplers.TPESampler(seed=before))
        stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
        for t in stale:  # interrupted by a kill: fail it, ask the same values again (its folder resumes)
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(t.params)
        finished = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))

        def objective(trial: Any) -> float:
            values = {k: (trial.suggest_int if all(isinstance(b, int) for b in (lo, hi)) else trial.suggest_float)(
                k, lo, hi, log=log) for k, (lo, hi, log) in self.search.ranges.items()}
            return self._guarded(self._unfinished_with(values, trial.number), values)

        if self.search.trials > finished:
            study.optimize(objective, n_trials=self.search.trials - finished, n_jobs=self.jobs, catch=(RuntimeError,))

    def _unfinished_with(self, values: dict[str, Any], number: int) -> int:
        """The number of an unfinished trial folder with these ``values`` (a killed trial resumes there), else
        ``number``."""
        for path in sorted(self.folder.glob("trial_*/trial.json")):
            trial = json.loads(path.read_text())
            if trial["values"] == values and not (path.parent / "eval.json").exists():
                return trial["number"]
        return number

    # -- the report -----------------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One row per trial folder: its number, values, metric (None until finished), steps and median
        training samples/s."""
        rows = []
        for path in sorted(self.folder.glob("trial_*/trial.json")):
            trial = json.loads(path.read_text())
            done = path.parent / "eval.json"
            result = json.loads(done.read_text()) if done.exists() else None
            rows.append({"trial": trial["number"], **trial["values"],
                         self.metric: metric_of(result, self.metric) if result else None,
                         "step": result.get("step") if result else None,
                         "samples_per_s": _median_rate(path.parent / "metrics.jsonl") if result else None})
        return rows

    def write_table(self) -> list[dict[str, Any]]:
        """``sweep.csv``, ``sweep.md`` (best first) and ``sweep.png``; the rows."""
        rows = self.rows()
        if not rows:
            return rows
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(self.folder / TABLE_CSV, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        sign = -1 if self.direction == "maximize" else 1
        ranked = sorted(rows, key=lambda r: (r[self.metric] is None, sign * (r[self.metric] or 0)))
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in ranked]
        atomic_write_text(self.folder / TABLE_MD, "\n".join(lines) + "\n")
        plot_sweep(rows, [k for k in keys if k not in ("trial", self.metric, "step", "samples_per_s")], self.metric,
                   self.folder / PLOT)
        return rows


def _median_rate(metrics: Path) -> float | None:
    """The median logged ``samples_per_s`` of a run after its first window (start-up), or None."""
    if not metrics.exists():
        return None
    rates = [json.loads(line).get("samples_per_s") for line in metrics.read_text().splitlines() if line.strip()]
    rates = sorted(r for r in rates[1:] if r is not None)
    return rates[len(rates) // 2] if rates else None


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot_sweep(rows: list[dict[str, Any]], keys: list[str], metric: str, path: Path) -> None:
    """One panel per swept key: the metric of every finished trial against that key's value; none (and a line on
    stderr) without matplotlib, the ``plot`` extra."""
    from mmvicreg.train.rundir import optional_pyplot

    plt = optional_pyplot(f"the sweep plot {path}")
    if plt is None:
        return
    done = [r for r in rows if r[metric] is not None]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4 * max(1, len(keys)), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [r.get(key) for r in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        xs = values if numeric else [str(v) for v in values]
        ax.scatter(xs, [r[metric] for r in done])
        if numeric and values and min(values) > 0 and max(values) / min(values) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class _ProcessRunner:
    """Runs a trial's command with its output in ``log`` and ``threads`` intra-op threads (OMP/MKL/torch)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __call__(self, cmd: list[str], log: Path) -> int:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        with open(log, "a") as out:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode


__all__ = ["Search", "Sweep", "grid_trials", "metric_of", "parse_grid", "parse_ranges", "plot_sweep"]
