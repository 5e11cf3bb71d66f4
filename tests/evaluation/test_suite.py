"""``mmvicreg eval suite``: the file is checked whole, an interrupted suite resumes without redoing finished
entries, and a real suite over two models (an mmvicreg export, a random-init open_clip model) writes its table."""

import json

import pytest
import yaml

from mmvicreg.cli import main
from mmvicreg.evaluation.suite import load_suite, markdown_table, run_suite
from tests.helpers import REPO_ROOT
from tests.helpers.models import register_tiny_open_clip


def _write(tmp_path, tree):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


SHAPES = {"format": "shapes", "split": "test", "num_images": 20, "size": 32}
OBJECTS = {"format": "shape_objects", "split": "test", "num_images": 48, "size": 32}


@pytest.mark.parametrize("task, message", [
    ({"task": "retrievl", "data": SHAPES}, "tasks.t.task: 'retrievl' is not a task (did you mean 'retrieval'?)"),
    ({"task": "retrieval", "data": SHAPES, "protocl": "1k"}, "tasks.t.protocl: not a key of a retrieval task"),
    ({"task": "knn", "train": SHAPES}, "tasks.t.test: needs a data section with a format"),
])
def test_a_wrong_suite_is_one_line_naming_the_key(tmp_path, task, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_suite(_write(tmp_path, {"models": {"m": "x"}, "tasks": {"t": task}}))


def test_an_interrupted_suite_redoes_only_what_was_unfinished(tmp_path):
    suite = load_suite(_write(tmp_path, {"models": {"a": "x", "b": "y"},
                                         "tasks": {"r": {"task": "retrieval", "data": SHAPES},
                                                   "z": {"task": "zeroshot", "data": OBJECTS}}}))
    calls = []

    def score(model, task):
        calls.append((model, task.name))
        if len(calls) == 3 and not resumed:
            raise KeyboardInterrupt  # killed during the third entry
        return {"rsum": 10.0 * len(calls)} if task.task == "retrieval" else {"top1": 1.0 * len(calls)}

    resumed = False
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path / "out", lambda ref, pretrained: ref, score, log=lambda _: None)
    first = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(first) == ["a/r", "a/z"]
    resumed, calls = True, []
    results = run_suite(suite, tmp_path / "out", lambda ref, pretrained: ref, score, log=lambda _: None)
    assert calls == [("y", "r"), ("y", "z")]  # model a's entries were kept, not redone
    assert {k: results[k] for k in first} == first and len(results) == 4
    table = markdown_table(suite, results)
    assert "| a | 10.0 | 2.0 |" in table and "| b | 10.0 | 2.0 |" in table


def test_suite_over_an_export_and_an_open_clip_model(tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(REPO_ROOT / "examples" / "quickstart.yaml"), f"output_dir={run}", "train.max_steps=3",
                 "train.batch_size=16", "train.progress=false", "data.eval=null"]) == 0
    clip = register_tiny_open_clip(tmp_path)
    path = _write(tmp_path, {
        "models": {"quickstart": str(run / "model"), "clip-random": {"model": f"open_clip:{clip}"}},
        "tasks": {"shapes": {"task": "retrieval", "data": SHAPES},
                  "objects": {"task": "zeroshot", "data": OBJECTS, "templates": ["a {}"]}},
    })
    out = tmp_path / "out"
    assert main(["eval", "suite", str(path), "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == ["clip-random/objects", "clip-random/shapes", "quickstart/objects", "quickstart/shapes"]
    assert results["quickstart/shapes"]["result"]["num_images"] == 20
    assert results["clip-random/objects"]["result"]["classes"] == 48
    table = (out / "results.md").read_text()
    assert table.startswith("| model | shapes (rsum) | objects (top1) |") and "| clip-random |" in table
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_a_rerun_with_other_encoding_settings_is_refused_in_one_line(tmp_path):
    """Finished entries are kept on a re-run: a re-run asking for another precision or decode must not mix them."""
    suite = load_suite(_write(tmp_path, {"models": {"a": "x"}, "tasks": {"r": {"task": "retrieval", "data": SHAPES}}}))

    def run(**settings):
        return run_suite(suite, tmp_path / "out", lambda ref, pretrained: ref, lambda m, t: {"rsum": 1.0},
                         log=lambda _: None, settings=settings)

    run(precision="fp32", decode_on="workers")
    run(precision="fp32", decode_on="workers")  # the same flags finish it
    with pytest.raises(ValueError, match=r"holds results scored with other settings \(decode_on: 'workers' there, "
                                         r"'device' now\); give another --out"):
        run(precision="fp32", decode_on="device")
