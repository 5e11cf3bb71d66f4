"""One name for one concept across commands: ``--index`` is only ever an index folder (``search``), the FAISS
index kind is ``--index-kind`` (``eval retrieval``, ``index build``), branches are chosen with ``--image-branch``
(repeatable in the image commands) and ``--text-branch``. The old spellings stop with one line naming the new
flag; they never change meaning silently. Parsing only: no model is loaded."""

from __future__ import annotations

import pytest

from mmvicreg.cli import build_parser, main

MODEL = ["--model", "nowhere"]
RETIRED = [
    (["eval", "retrieval", *MODEL, "--format", "shapes", "--branches", "image", "caption"],
     "mmvicreg eval retrieval: error: --branches is now --image-branch IMAGE --text-branch TEXT"),
    (["eval", "retrieval", *MODEL, "--format", "shapes", "--index", "flat"],
     "mmvicreg eval retrieval: error: --index is now --index-kind (the FAISS index kind: exact, flat, ivf, hnsw); "
     "--index names an index folder only in mmvicreg search"),
    (["index", "build", *MODEL, "--out", "idx", "--index", "hnsw"],
     "mmvicreg index build: error: --index is now --index-kind (the FAISS index kind: flat, ivf, hnsw); --index "
     "names an index folder, in mmvicreg search"),
    *((["eval", command, *MODEL, "--format", "digits", "--branch", "cnn"],
       f"mmvicreg eval {command}: error: --branch is now --image-branch (repeatable: --image-branch A "
       f"--image-branch B)") for command in ("knn", "linear-probe", "linear")),
]


@pytest.mark.parametrize("argv, line", RETIRED, ids=lambda v: " ".join(v[:3]) if isinstance(v, list) else "")
def test_old_spellings_answer_with_the_new_flag_in_one_line(argv, line, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == line and not captured.out


def test_the_new_names():
    parse = build_parser().parse_args
    args = parse(["eval", "retrieval", *MODEL, "--format", "shapes", "--image-branch", "a", "--text-branch", "b",
                  "--index-kind", "hnsw"])
    assert (args.image_branch, args.text_branch, args.index_kind) == ("a", "b", "hnsw")
    assert parse(["eval", "retrieval", *MODEL, "--format", "shapes"]).index_kind == "exact"
    for command in ("knn", "linear-probe", "linear"):
        args = parse(["eval", command, *MODEL, "--format", "digits", "--image-branch", "a", "--image-branch", "b"])
        assert args.image_branch == ["a", "b"]
    args = parse(["index", "build", *MODEL, "--out", "o", "--index-kind", "ivf", "--image-branch", "a"])
    assert (args.index_kind, args.image_branch) == ("ivf", "a")
    assert parse(["index", "build", *MODEL, "--out", "o"]).index_kind == "auto"  # flat under 100,000 items
    assert parse(["search", "--index", "folder", "--text", "a dog"]).index == "folder"  # the folder, as before


def test_webdataset_is_an_eval_format():
    parse = build_parser().parse_args
    assert parse(["eval", "retrieval", *MODEL, "--format", "webdataset", "--shards", "s"]).shards == "s"
    args = parse(["eval", "knn", *MODEL, "--format", "webdataset", "--train-shards", "a", "--test-shards", "b"])
    assert (args.train_shards, args.test_shards) == ("a", "b")
