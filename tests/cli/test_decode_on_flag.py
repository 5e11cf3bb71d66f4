"""``--decode-on``: every eval command that encodes through the one encode path decodes JPEGs on the model's device
when asked (the batched decode runs, the scores agree with the workers'), and the published linear protocol, whose
own transforms decode in its workers, refuses it in one line."""

from __future__ import annotations

import pytest

import mmvicreg.data.preprocess as preprocess
from tests.cli.test_eval_shards import _eval, _labelled_folder, _one_line, model  # noqa: F401  (model: a fixture)


@pytest.fixture
def jpegs(tmp_path) -> list[str]:
    train, test = (_labelled_folder(tmp_path / split, n, seed, ".jpg", (48, 64))
                   for split, n, seed in (("train", 8, 0), ("test", 4, 1)))
    return ["--format", "folder", "--train-images", str(train), "--test-images", str(test)]


@pytest.mark.parametrize("command", [["knn", "--k", "3"], ["linear-probe", "--epochs", "2"]])
def test_decode_on_device_decodes_there_and_scores_as_the_workers(model, jpegs, tmp_path, monkeypatch, command):  # noqa: F811
    batches = []
    real = preprocess.decode_crops
    monkeypatch.setattr(preprocess, "decode_crops", lambda *a, **k: batches.append(1) or real(*a, **k))
    common = ["eval", *command, "--model", str(model), *jpegs]
    workers = _eval(tmp_path / "workers.json", *common, "--decode-on", "workers")
    assert not batches
    device = _eval(tmp_path / "device.json", *common, "--decode-on", "device")
    assert len(batches) >= 2  # the train and the test images went through the batched decode
    a, b = (r["results"]["trained"]["image"] for r in (workers, device))
    scores = [{k: v for k, v in r.items() if k.startswith(("top1", "num_"))} for r in (a, b)]
    assert any(k.startswith("top1") for k in scores[0]) and scores[0] == scores[1]


def test_the_linear_protocol_refuses_decode_on_device_in_one_line(model, jpegs, capsys):  # noqa: F811
    err = _one_line(capsys, ["eval", "linear", "--model", str(model), *jpegs, "--epochs", "1", "--workers", "0",
                             "--no-progress", "--decode-on", "device"])
    assert err == ("mmvicreg: error: decode_on='device': the published linear protocol (eval linear, a 'linear' "
                   "head) decodes with its own transforms in its loader's workers; use --decode-on workers")
