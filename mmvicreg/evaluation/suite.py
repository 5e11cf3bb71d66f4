"""An evaluation suite: several tasks on several datasets against several models, resumable, one table out.

A suite file (YAML)::

    models:                                   # name: an export folder / Hub id / open_clip:NAME, or {model, pretrained}
      quickstart: runs/quickstart/model
      clip-random: {model: "open_clip:ViT-B-32"}
    tasks:                                    # name: {task, data sections, the task's options}
      shapes-retrieval: {task: retrieval, data: {format: shapes, split: test}, protocol: 5k}
      digits-knn: {task: knn, train: {format: digits, split: train}, test: {format: digits, split: test}}

Tasks: ``retrieval`` (``data``: captioned; ``protocol``, ``captions_per_image``), ``zeroshot`` (``data``: labelled
images; ``classnames``, ``templates``: lists, or a file of one per line), ``knn`` (``train``, ``test``; ``k``,
``temperature``) and ``linear-probe`` (``train``, ``test``; ``epochs``, ``lr``). Data sections are a run config's
(``format`` and that format's keys). The file is checked whole when it loads (:func:`load_suite`): a wrong key is
one line naming ``tasks.<name>.<key>``. :func:`run_suite` scores every (model, task) pair not yet in
``results.json``, writing that file (atomically) after each, so a killed suite re-run redoes only what was
unfinished; :func:`headline` and :func:`markdown_table` give the models × tasks table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from mmvicreg.choices import did_you_mean

__all__ = ["Suite", "SuiteTask", "headline", "load_suite", "markdown_table", "run_suite"]

TASK_KEYS = {  # task -> (data sections it needs, options it takes)
    "retrieval": (("data",), ("protocol", "captions_per_image")),
    "zeroshot": (("data",), ("classnames", "templates")),
    "knn": (("train", "test"), ("k", "temperature")),
    "linear-probe": (("train", "test"), ("epochs", "lr")),
}
HEADLINES = {"retrieval": "rsum", "zeroshot": "top1", "knn": "top1", "linear-probe": "top1_last"}


@dataclass(frozen=True)
class SuiteTask:
    name: str
    task: str
    data: dict[str, dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    models: dict[str, dict[str, Any]]  # name -> {"model": ref, "pretrained": tag/file or None}
    tasks: list[SuiteTask]


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"suite {where}: {message}")


def _model(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"model": value, "pretrained": None}
    if not isinstance(value, Mapping) or "model" not in value or set(value) - {"model", "pretrained"}:
        raise _fail(f"models.{name}", "give an export folder / Hub id / open_clip:NAME, or {model: ..., "
                                      "pretrained: ...}")
    return {"model": str(value["model"]), "pretrained": value.get("pretrained")}


def _task(name: str, value: Any, base: Path) -> SuiteTask:
    if not isinstance(value, Mapping) or value.get("task") not in TASK_KEYS:
        got = value.get("task") if isinstance(value, Mapping) else value
        hint = did_you_mean(got, TASK_KEYS) if isinstance(got, str) else ""
        raise _fail(f"tasks.{name}.task", f"{got!r} is not a task{hint}; tasks: {', '.join(TASK_KEYS)}")
    sections, options = TASK_KEYS[value["task"]]
    for key in value:
        if key != "task" and key not in sections and key not in options:
            hint = did_you_mean(key, (*sections, *options))
            raise _fail(f"tasks.{name}.{key}", f"not a key of a {value['task']} task{hint}; its keys: "
                                               f"{', '.join((*sections, *options))}")
    data = {}
    for key in sections:
        if not isinstance(value.get(key), Mapping) or "format" not in value[key]:
            raise _fail(f"tasks.{name}.{key}", "needs a data section with a format, e.g. {format: shapes, split: test}")
        data[key] = dict(value[key])
    opts = {k: value[k] for k in options if k in value}
    for key in ("classnames", "templates"):
        if isinstance(opts.get(key), str):  # a file, relative to the suite file
            from mmvicreg.evaluation.zeroshot import read_lines

            opts[key] = read_lines(base / opts[key], f"tasks.{name}.{key}")
    return SuiteTask(name, value["task"], data, opts)


def load_suite(path: str | Path) -> Suite:
    """The suite in ``path``, every entry checked; one ValueError line naming the first wrong key."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"suite file {str(p)!r} does not exist")
    tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    unknown = set(tree) - {"models", "tasks"} if isinstance(tree, Mapping) else {"(not a mapping)"}
    if unknown or not tree.get("models") or not tree.get("tasks"):
        raise _fail(str(p), f"needs `models` and `tasks` mappings{f', not {sorted(unknown)}' if unknown else ''}")
    models = {str(k): _model(str(k), v) for k, v in tree["models"].items()}
    tasks = [_task(str(k), v, p.parent) for k, v in tree["tasks"].items()]
    return Suite(models, tasks)


def headline(task: str, result: Mapping[str, Any]) -> float:
    """The one number of a task's result in the table: retrieval rsum, else top-1 (k-NN: at its smallest k)."""
    if task == "knn":  # the smallest k's top-1
        ks = sorted(int(k.split("_k")[1]) for k in result if k.startswith("top1_k"))
        return float(result[f"top1_k{ks[0]}"])
    return float(result[HEADLINES[task]])


def check_settings(path: Path, settings: dict[str, Any], scored: bool) -> None:
    """Write ``settings`` to ``path``, or refuse when the entries already scored there were scored with others."""
    from mmvicreg.files import atomic_write_json

    kept = json.loads(path.read_text()) if path.exists() else None
    if scored and kept is not None and kept != settings:
        changed = ", ".join(f"{k}: {kept.get(k)!r} there, {settings.get(k)!r} now"
                            for k in sorted(set(kept) | set(settings)) if kept.get(k) != settings.get(k))
        raise ValueError(f"{path.parent} holds results scored with other settings ({changed}); give another --out, "
                         f"or the same flags to finish it")
    atomic_write_json(path, settings)


def run_suite(
    suite: Suite, out: str | Path, load: Callable[[str, str | None], Any], score: Callable[..., dict[str, Any]],
    log: Callable[[str], None] = print, settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every (model, task) pair not yet in ``out/results.json``; returns the results.

    ``load(ref, pretrained)`` gives a model; ``score(model, task)`` a task's result (the command line binds them to
    the evaluation functions). Each finished pair is written at once (write, then rename), so an interrupted suite
    keeps what it finished and a re-run skips it. ``settings`` (the encoding: precision, decode_on, ...) are kept
    in ``out/settings.json``: a re-run with other settings is refused (its entries would mix the two), one line.
    """
    from mmvicreg.files import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    check_settings(out / "settings.json", dict(settings or {}), bool(results))
    for model_name, spec in suite.models.items():
        todo = [t for t in suite.tasks if f"{model_name}/{t.name}" not in results]
        if not todo:
            log(f"{model_name}: every task already scored (kept from {path})")
            continue
        model = load(spec["model"], spec["pretrained"])
        for task in todo:
            log(f"{model_name} / {task.name} ({task.task}) ...")
            result = score(model, task)
            results[f"{model_name}/{task.name}"] = {"model": model_name, "task": task.name, "kind": task.task,
                                                    "headline": headline(task.task, result), "result": result}
            atomic_write_json(path, results)
    return results


def markdown_table(suite: Suite, results: Mapping[str, Any]) -> str:
    """Models × tasks, each cell the task's headline number (retrieval: rsum; the others: top-1 %)."""
    head = "| model | " + " | ".join(f"{t.name} ({HEADLINES[t.task]})" for t in suite.tasks) + " |"
    rows = [head, "|---|" + "---|" * len(suite.tasks)]
    for name in suite.models:
        cells = [results.get(f"{name}/{t.name}", {}).get("headline") for t in suite.tasks]
        rows.append(f"| {name} | " + " | ".join("" if c is None else f"{c:.1f}" for c in cells) + " |")
    return "\n".join(rows) + "\n"
