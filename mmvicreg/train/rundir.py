"""The run directory: what a run leaves for people to read.

``output_dir/`` holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON record per logged step:
the loss terms, per-branch embedding std and RankMe, learning rate, samples/s), ``data_report.json`` (what the
bad-data policies left out), ``plots/`` (terms, std, RankMe against step; drawn when the ``plot`` extra,
matplotlib, is installed), ``checkpoints/``, the exported ``model/`` and ``eval.json``. Only the main process
writes; every write is atomic (``mmvicreg.files``).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from mmvicreg.config import RunConfig, dump_config
from mmvicreg.data import merge_reports
from mmvicreg.data.protocols import DataReporting
from mmvicreg.extras import import_extra
from mmvicreg.files import atomic_write_json, atomic_write_text, reporting_full_disk
from mmvicreg.model.card import write_model_card
from mmvicreg.objective.diagnostics import embedding_std, rankme

METRICS, EVAL, DATA_REPORT, PLOTS = "metrics.jsonl", "eval.json", "data_report.json", "plots"


class RunDir:
    """The files of one run; a no-op on processes other than the main one."""

    def __init__(self, path: str | Path, is_main: bool, gather: Callable[[list[Any]], list[Any]] | None = None) -> None:
        """``gather`` collects one list item from every process (``accelerator.gather_object``); None: one process."""
        self.path, self.is_main, self.gather = Path(path), is_main, gather
        self._metrics = None

    def start(self, config: RunConfig, step: int, sources: Mapping[str, Any], say: Callable[[str], None]) -> None:
        """Write the config, drop metrics logged after ``step`` (work to be redone on resume), report the data.
        Called on every process (the data report is gathered); only the main one writes."""
        if self.is_main:
            self.path.mkdir(parents=True, exist_ok=True)
            dump_config(config, self.path / "config.yaml")
            truncate_metrics(self.path / METRICS, step)
        self.write_data_report(sources, say)
        if self.is_main:
            self._metrics = open(self.path / METRICS, "a")

    def log(self, record: Mapping[str, Any]) -> None:
        if self._metrics is not None:
            with reporting_full_disk(self.path / METRICS, then="the checkpoints are intact: free space and rerun "
                                                            "with resume=true"):
                self._metrics.write(json.dumps(record) + "\n")
                self._metrics.flush()

    def write_card(self, model: Any, config: Any, metrics: Mapping[str, Any]) -> None:
        """Rewrite the exported model's card with the final evaluation (the export precedes it)."""
        if self.is_main:
            write_model_card(self.path / "model", model, training_config=config.to_dict(), metrics=metrics)

    def write_eval(self, result: Mapping[str, Any]) -> None:
        if self.is_main:
            atomic_write_json(self.path / EVAL, dict(result))

    def write_data_report(self, sources: Mapping[str, Any], say: Callable[[str], None] | None) -> None:
        """``data_report.json``: per source, what ``on_bad_image`` / ``on_bad_caption`` left out on every process
        (``merge_reports`` of the gathered reports); printed by ``say``. Called on every process."""
        report = {k: s.data_report() for k, s in sources.items() if isinstance(s, DataReporting)}
        if self.gather is not None:
            every = self.gather([report])
            report = {k: merge_reports([r[k] for r in every]) for k in report}
        if not self.is_main:
            return
        if say is not None:
            for key, r in report.items():
                reasons = {**r.get("skipped_image_reasons", {}), **r.get("skipped_caption_reasons", {})}
                detail = f" ({', '.join(f'{why}: {n}' for why, n in sorted(reasons.items()))})" if reasons else ""
                captions = f", {r['skipped_captions']} captions" if "skipped_captions" in r else ""
                say(f"data.{key} {r['source']}: {r['samples']} samples; skipped {r['skipped_images']} images"
                    f"{captions}{detail}")
        atomic_write_json(self.path / DATA_REPORT, report)

    def finish(self, model: Any, sources: Mapping[str, Any], config: Any, metrics: Mapping[str, Any] | None) -> None:
        """Export the model (its card holds ``config`` and ``metrics``), close the metrics, rewrite the data
        report, draw the plots. Called on every process."""
        self.write_data_report(sources, None)
        if not self.is_main:
            return
        export = self.path / "model"
        weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        then = "the checkpoints are intact: free space and rerun with resume=true to export again"
        with reporting_full_disk(export, needed=weights, then=then):
            model.save_pretrained(export, training_config=config.to_dict(), metrics=metrics or None)
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        with reporting_full_disk(self.path / PLOTS, then=f"the model is exported to {export}"):
            plot_metrics(self.path)


def log_record(run: Any, out: Any, zs: Mapping[str, torch.Tensor], last_rankme: dict[str, float]) -> dict[str, Any]:
    """The record of one logged step: loss terms averaged over processes, per-branch std and RankMe, the LR.

    RankMe (an SVD) is recomputed every ``train.rankme_every`` steps; ``last_rankme`` carries it in between.
    """
    state, t = run.state, run.config.train
    terms = torch.stack([out.loss, out.invariance, out.variance, out.covariance]).detach().float()
    terms = run.accelerator.reduce(terms, "mean")
    record: dict[str, Any] = {
        "step": state.step,
        "epoch": state.epoch,
        "loss": float(terms[0]),
        "invariance": float(terms[1]),
        "variance": float(terms[2]),
        "covariance": float(terms[3]),
        "lr": float(run.scheduler.get_last_lr()[0]),
    }
    for name, z in zs.items():
        record[f"std/{name}"], record[f"std_min/{name}"] = embedding_std(z)
        if state.step % t.rankme_every == 0 or name not in last_rankme:
            last_rankme[name] = rankme(z)
        record[f"rankme/{name}"] = last_rankme[name]
    for key, value in (getattr(out, "terms", None) or {}).items():  # objective-specific scalars
        record[key] = float(value)
    if state.skipped_nonfinite:
        record["skipped_nonfinite"] = state.skipped_nonfinite
    report = run.train_source.data_report() if isinstance(run.train_source, DataReporting) else {}
    record.update({k: report[k] for k in ("skipped_images", "skipped_captions") if report.get(k)})
    return record


def truncate_metrics(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (work lost since the checkpoint we resume from, to be redone)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the last line of a run killed while writing it
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"train.batch_size": 256, ...}`` of plain values (what trackers accept)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def pyplot() -> Any:
    """matplotlib's ``pyplot`` on its file-only backend (Agg), or one ImportError line naming the ``plot`` extra.

    matplotlib is the optional extra ``mmvicreg[plot]``: imported only when a plot is drawn.
    """
    import_extra("matplotlib", "plot", "plotting needs matplotlib").use("Agg")
    return import_extra("matplotlib.pyplot", "plot", "plotting needs matplotlib")


def save_figure(plt: Any, fig: Any, path: str | Path) -> None:
    """Lay out ``fig`` (with its legend), write it to ``path`` as a PNG atomically, and close it."""
    from mmvicreg.files import atomic_write

    for ax in fig.axes:
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def optional_pyplot(what: str) -> Any | None:
    """``pyplot()`` for a plot that is a by-product (a run's curves, a sweep's panel): without matplotlib, None
    and one line on stderr, once per process, saying ``what`` is left out and how to get it."""
    try:
        return pyplot()
    except ImportError as e:
        _say_once(f"mmvicreg: {what} left out ({e})")
        return None


@functools.cache
def _say_once(line: str) -> None:
    print(line, file=sys.stderr)


def plot_metrics(run_dir: Path) -> None:
    """PNG plots of the loss terms, per-branch std and RankMe against step, from ``metrics.jsonl``; none (and a
    line on stderr) without matplotlib, the ``plot`` extra."""
    path = run_dir / METRICS
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    if not records:
        return
    plt = optional_pyplot(f"the plots {run_dir / PLOTS}")
    if plt is None:
        return
    plots = run_dir / PLOTS
    plots.mkdir(exist_ok=True)
    steps = [r["step"] for r in records]
    groups = {
        "terms": ["loss", "invariance", "variance", "covariance"],
        "std": sorted({k for r in records for k in r if k.startswith(("std/", "std_min/"))}),
        "rankme": sorted({k for r in records for k in r if k.startswith("rankme/")}),
    }
    for name, keys in groups.items():
        if not keys:  # e.g. a supervised run logs no per-branch std or RankMe: no empty plot
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            ax.plot(steps, [r.get(key, float("nan")) for r in records], label=key)
        ax.set_xlabel("step")
        ax.set_title(name)
        if name == "terms":
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots / f"{name}.png", dpi=100)
        plt.close(fig)
