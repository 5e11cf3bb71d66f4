"""``mmvicreg eval suite SUITE.yaml --out DIR``: every task of a suite against every model, resumable.

    mmvicreg eval suite examples/suite.yaml --out runs/suite [--device cuda] [--precision bf16]

Writes ``DIR/results.json`` (one entry per model and task, written as each finishes: a re-run skips finished
entries), ``DIR/results.md`` (models × tasks, each cell the task's headline number) and ``DIR/results.png``
(the same as grouped bars; needs the ``plot`` extra). The suite file's format is
:mod:`mmvicreg.evaluation.suite`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmvicreg.cli.common import add_encoding_arguments, branches_of, encoding, image_text_branches, load_model


def _scorer(args: argparse.Namespace):
    """``score(model, task)``: the task's evaluation function on its data sections, with the command's encoding."""
    from mmvicreg.data import build_source
    from mmvicreg.evaluation.model_level import evaluate_knn, evaluate_linear_probe, evaluate_retrieval
    from mmvicreg.evaluation.zeroshot import evaluate_zeroshot

    enc = encoding(args)

    def score(model: Any, task: Any) -> dict[str, Any]:
        o = task.options
        if task.task == "retrieval":
            source = build_source(task.data["data"], "test")
            return evaluate_retrieval(model, source, list(image_text_branches(model, None, None, "retrieval")),
                                      protocol=o.get("protocol", "5k"),
                                      captions_per_image=o.get("captions_per_image", 5), **enc)
        if task.task == "zeroshot":
            image, text = image_text_branches(model, None, None, "zero-shot (the class prompts)")
            return evaluate_zeroshot(model, build_source(task.data["data"], "test"), image, text,
                                     classnames=o.get("classnames"), templates=o.get("templates"), **enc)
        train, test = build_source(task.data["train"], "train"), build_source(task.data["test"], "test")
        image = _first_image(model)
        if task.task == "knn":
            return evaluate_knn(model, train, test, image, ks=tuple(o.get("k", (20, 200))),
                                temperature=o.get("temperature", 0.07), **enc)
        return evaluate_linear_probe(model, train, test, image, epochs=o.get("epochs"), lr=o.get("lr"), **enc)

    return score


def _first_image(model: Any) -> str:
    images = branches_of(model, "image")
    if not images:
        raise ValueError(f"k-NN and linear probes score an image branch; this model has {list(model.branch_names)}")
    return images[0]


def _plot(suite: Any, results: dict[str, Any], path: Path) -> None:
    from mmvicreg.train.rundir import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(suite.tasks), 3.5))
    width = 0.8 / max(1, len(suite.models))
    for i, name in enumerate(suite.models):
        values = [results.get(f"{name}/{t.name}", {}).get("headline", float("nan")) for t in suite.tasks]
        ax.bar([j + i * width for j in range(len(suite.tasks))], values, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(suite.tasks))], [t.name for t in suite.tasks],
                  rotation=20, ha="right")
    ax.set_ylabel("headline (rsum or top-1 %)")
    save_figure(plt, fig, path)


def run_suite_command(args: argparse.Namespace) -> dict[str, Any]:
    """Load the suite (checked whole first), score what is not yet scored, write the table and the plot."""
    from mmvicreg.evaluation.suite import load_suite, markdown_table, run_suite
    from mmvicreg.files import atomic_write_text

    suite = load_suite(args.suite)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for results.json, results.md and results.png")
    # what changes the numbers (precision "auto" is bf16 on CUDA); workers, batch size and progress do not
    settings = {"device": args.device, "precision": args.precision, "decode_on": args.decode_on}
    results = run_suite(suite, out, lambda ref, pretrained: load_model(ref, args.device, pretrained), _scorer(args),
                        settings=settings)
    table = markdown_table(suite, results)
    atomic_write_text(out / "results.md", table)
    print(table)
    if not args.no_plot:
        _plot(suite, results, out / "results.png")
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}" + ("" if args.no_plot else f", {out / 'results.png'}"))
    return results


def add_suite_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``eval suite``: the suite file, the output folder and the encoding options."""
    p.add_argument("suite", help="the suite file (YAML: models and tasks; see examples/suite.yaml)")
    p.add_argument("--out", required=True, help="folder for results.json (kept between runs), results.md, results.png")
    add_encoding_arguments(p)
    p.add_argument("--no-plot", action="store_true", help="do not draw results.png (no matplotlib needed)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="do not show progress bars")
