"""A table of bad inputs across configs, data, models, checkpoints, evaluation and the command line.

Each row: what triggers it, the exception type the user gets, and a fragment of its message. Every message is
one line, is raised from mmvicreg's own code (not from inside a dependency), and carries no chained traceback
from a dependency. CLI rows check that ``mmvicreg.cli.main`` returns 2 and prints exactly one line.
"""

import contextlib
import io
import json
import shutil
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmvicreg.cli import main
from mmvicreg.config import ConfigError, load_config
from mmvicreg.data import BadImageError, BranchDataset, build_source, coco_captions, csv_captions, karpathy_captions
from mmvicreg.data import FolderImages, encode, make_loader
from mmvicreg.data.build import format_options
from mmvicreg.evaluation import (
    extract_embeddings,
    knn_classify,
    linear_probe,
    pick_retrieval_branches,
    retrieval_metrics,
)
from mmvicreg.model import JointEmbedding
from mmvicreg.train import CheckpointError, NonFiniteLossError, UnsafeCheckpointError, train
from tests.helpers.configs import tiny_config

TESTS = Path(__file__).parent


class CLIFailed(Exception):
    """Raised by the CLI rows with the one line that ``mmvicreg`` printed."""


# ------------------------------------------------------------------------------------------- helpers


def _cfg(t: Path, **train_options) -> dict:
    cfg = tiny_config(t / "run", **{"max_steps": 2, "checkpoint_every": 2, **train_options})
    cfg["data"]["eval"] = None
    return cfg


def _load(tree_or_path, overrides=()):
    return load_config(tree_or_path, list(overrides), format_keys=format_options)


def _train(tree, overrides=()):
    return train(_load(tree, overrides))


def _edit(t: Path, change) -> dict:
    cfg = _cfg(t)
    change(cfg)
    return cfg


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


def _images(t: Path, names=("a.png", "b.png")) -> Path:
    root = t / "images"
    root.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.new("RGB", (12, 12), (40 * k, 100, 200)).save(root / name)
    return root


def _coco(t: Path, captions) -> Path:
    names = [f"{c}.png" for c in "ab"[: len(captions)]]
    _images(t, names)
    data = {"images": [{"id": k, "file_name": n} for k, n in enumerate(names)],
            "annotations": [{"image_id": k, "caption": c} for k, c in enumerate(captions)]}
    return _write(t / "coco.json", json.dumps(data))


def _csv(t: Path, text: str, encoding="utf-8") -> Path:
    _images(t)
    return _write(t / "captions.csv", text.encode(encoding))


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing an image decoder can use")


def _model_dir(t: Path, assets) -> Path:
    shutil.copytree(assets["model"], t / "model")
    return t / "model"


def _tampered_model(t: Path, assets, name: str, data) -> JointEmbedding:
    _write(_model_dir(t, assets) / name, data)
    return JointEmbedding.from_pretrained(t / "model")


def _resume_from(t: Path, assets, name: str, write) -> dict:
    run = t / "run"
    shutil.copytree(assets["run"], run)
    write(run / "checkpoints" / "step_00000002" / name)
    cfg = _cfg(t, max_steps=4)
    cfg["resume"] = True
    return cfg


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(path: Path) -> None:
    torch.save({"state": _Payload(path.parent / "payload_ran")}, path)


def _cli(*argv) -> None:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main([str(a) for a in argv])
    lines = err.getvalue().strip().splitlines()
    assert rc == 2, (rc, err.getvalue()[-2000:])
    assert len(lines) == 1 and lines[0].startswith("mmvicreg: error: "), err.getvalue()[-2000:]
    raise CLIFailed(lines[0])


def _cli_config(t: Path, cfg: dict) -> Path:
    return _write(t / "cfg.yaml", yaml.safe_dump(cfg))


RNG = np.random.default_rng(0)
X5, X2 = RNG.random((5, 3)), RNG.random((2, 3))


# ------------------------------------------------------------------------------------------- the table

CONFIG_ROWS = [
    ("config/unknown-key", lambda t, a: _load({**_cfg(t), "trian": {}}), ConfigError,
     "unknown config key 'trian' (did you mean 'train'?)"),
    ("config/wrong-type", lambda t, a: _load(_cfg(t), ["train.batch_size=big"]), ConfigError,
     "train.batch_size must be int, got str 'big'"),
    ("config/batch-of-one", lambda t, a: _load(_cfg(t), ["train.batch_size=1"]), ConfigError,
     "need at least 2 samples per batch"),
    ("config/bad-choice", lambda t, a: _load(_cfg(t), ["train.on_nonfinite=ignore"]), ConfigError,
     "train.on_nonfinite is 'ignore'; choose one of stop, skip"),
    ("config/no-branches", lambda t, a: _load({**_cfg(t), "branches": {}}), ConfigError, "names no branches"),
    ("config/one-branch", lambda t, a: _load(_edit(t, lambda c: c["branches"].pop("caption"))), ConfigError,
     "compares branches in pairs"),
    ("config/pairs-unknown-branch", lambda t, a: _load(_cfg(t), ["loss.pairs=[[image, text]]"]), ConfigError,
     "loss.pairs names branch 'text', which is not a branch"),
    ("config/unknown-format", lambda t, a: _load(_cfg(t), ["data.train.format=parquet"]), ConfigError,
     "known formats: coco, karpathy"),
    ("config/unknown-data-option", lambda t, a: _load(_cfg(t), ["data.train.num_imgs=3"]), ConfigError,
     "unknown config key 'data.train.num_imgs' for format 'shapes' (did you mean 'data.train.num_images'?)"),
    ("config/missing-file", lambda t, a: _load(t / "none.yaml"), ConfigError, "none.yaml does not exist"),
    ("config/invalid-yaml", lambda t, a: _load(_write(t / "c.yaml", "train: {batch_size: [")), ConfigError,
     "c.yaml is not valid YAML"),
    ("config/yaml-list", lambda t, a: _load(_write(t / "c.yaml", "- 1\n- 2\n")), ConfigError,
     "must hold a YAML mapping at the top level"),
    ("config/override-without-equals", lambda t, a: _load(_cfg(t), ["train.batch_size"]), ConfigError,
     "must look like dotted.key=value"),
    ("config/negative-grad-clip", lambda t, a: _load(_cfg(t), ["train.grad_clip=-1"]), ConfigError,
     "train.grad_clip must be positive, got -1.0"),
    ("config/negative-lr", lambda t, a: _load(_cfg(t), ["train.optimizer.lr=-0.1"]), ConfigError,
     "train.optimizer.lr must be positive"),
    ("config/nan-weight", lambda t, a: _load(_cfg(t), ["loss.variance_weight=.nan"]), ConfigError,
     "loss.variance_weight must be >= 0, got nan"),
    ("config/keep-no-checkpoint", lambda t, a: _load(_cfg(t), ["train.keep_checkpoints=0"]), ConfigError,
     "train.keep_checkpoints must be at least 1"),
    ("config/encoder-not-a-name", lambda t, a: _load(_cfg(t), ["branches.image.encoder=5"]), ConfigError,
     "branches.image.encoder must be a name"),
    ("config/eval-branch-unknown", lambda t, a: _load(_cfg(t), ["eval.branches=[img, caption]"]), ConfigError,
     "eval.branches names 'img', which is not a branch (did you mean 'image'?)"),
    ("config/negative-workers", lambda t, a: _load(_cfg(t), ["data.workers=-1"]), ConfigError,
     "data.workers must be >= 0"),
    ("config/branch-weight-not-number", lambda t, a: _load(_cfg(t), ["branches.image.variance_weight=high"]),
     ConfigError, "branches.image.variance_weight must be a number"),
    ("config/caption-policy-on-generated-data", lambda t, a: _load(_cfg(t), ["data.train.on_bad_caption=ignore"]),
     ConfigError, "unknown config key 'data.train.on_bad_caption' for format 'shapes'"),
    ("train/unknown-tracker", lambda t, a: _train(_cfg(t, trackers=["tensorbored"])), ConfigError,
     "train.trackers names 'tensorbored'; known trackers:"),
    ("train/existing-run-without-resume", lambda t, a: (
        (t / "run" / "checkpoints" / "step_00000002").mkdir(parents=True), _train(_cfg(t))), ConfigError,
     "already holds an earlier run (checkpoints/); set resume=true to continue it, overwrite=true"),
    ("train/batch-larger-than-data", lambda t, a: _train(_cfg(t, batch_size=128)), ConfigError,
     "fewer than one batch of train.batch_size=128"),
    ("train/unknown-encoder", lambda t, a: _train(_cfg(t), ["branches.image.encoder.name=resnet9999"]),
     ValueError, "unknown encoder 'resnet9999'"),
    ("train/non-finite-loss", lambda t, a: _train(_cfg(t), ["loss.eps=-100"]), NonFiniteLossError,
     "non-finite training at step 1: variance = nan"),
]

DATA_ROWS = [
    ("data/missing-caption-file", lambda t, a: csv_captions(t / "missing.csv", t), FileNotFoundError,
     "missing.csv does not exist"),
    ("data/invalid-json", lambda t, a: coco_captions(_write(t / "c.json", '{"images": ['), t), ValueError,
     "c.json is not valid JSON"),
    ("data/json-not-coco", lambda t, a: coco_captions(_write(t / "c.json", "[1, 2]"), t), ValueError,
     "c.json is not a COCO captions file"),
    ("data/coco-not-utf8", lambda t, a: coco_captions(_write(t / "c.json", json.dumps(
        {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": "un café"}]},
        ensure_ascii=False).encode("latin-1")), _images(t)), ValueError,
     "(not UTF-8: 'un caf\\udce9'). The caption file is not UTF-8 text: re-encode it"),
    ("data/csv-not-utf8", lambda t, a: csv_captions(_csv(t, "image,caption\na.png,crème\nb.png,ok\n", "latin-1"),
                                                     t / "images"), ValueError,
     "1 of 2 captions of csv captions.csv are unusable, e.g. image 'a.png' caption #0 (not UTF-8"),
    ("data/csv-empty-caption", lambda t, a: csv_captions(_csv(t, 'image,caption\na.png,""\nb.png,ok\n'),
                                                          t / "images"), ValueError,
     "image 'a.png' caption #0 (empty). Fix the captions or pass on_bad_caption='skip'"),
    ("data/coco-null-caption", lambda t, a: coco_captions(_coco(t, [None, "fine"]), t / "images"), ValueError,
     "image 0 caption #0 (empty)"),
    ("data/karpathy-blank-caption", lambda t, a: karpathy_captions(_write(t / "k.json", json.dumps({"images": [
        {"filename": "a.png", "split": "test", "sentences": [{"raw": "   "}]}]})), _images(t), "test"), ValueError,
     "1 of 1 captions of karpathy k.json:test are unusable"),
    ("data/bad-caption-policy", lambda t, a: csv_captions(_csv(t, "image,caption\na.png,x\n"), t / "images",
                                                           on_bad_caption="ignore"), ValueError,
     "on_bad_caption must be one of error, skip; got 'ignore'"),
    ("data/bad-image-policy", lambda t, a: csv_captions(_csv(t, "image,caption\na.png,x\n"), t / "images",
                                                         on_bad_image="drop"), ValueError,
     "on_bad_image must be one of error, skip"),
    ("data/corrupt-image", lambda t, a: (_csv(t, "image,caption\na.png,x\nb.png,y\n"),
                                         _corrupt(t / "images" / "b.png"),
                                         csv_captions(t / "captions.csv", t / "images")[1]), BadImageError,
     "cannot decode image "),
    ("data/corrupt-image-verified", lambda t, a: (_csv(t, "image,caption\na.png,x\nb.png,y\n"),
                                                  _corrupt(t / "images" / "b.png"),
                                                  csv_captions(t / "captions.csv", t / "images", verify=True)),
     BadImageError, "1 of 2 images of csv captions.csv are unusable, e.g. "),
    ("data/every-image-corrupt", lambda t, a: (_csv(t, "image,caption\na.png,x\nb.png,y\n"),
                                               _corrupt(t / "images" / "a.png"), _corrupt(t / "images" / "b.png"),
                                               csv_captions(t / "captions.csv", t / "images",
                                                            on_bad_image="skip")[0]), BadImageError,
     "every one of its 2 images failed to load"),
    ("data/missing-image", lambda t, a: csv_captions(_write(t / "c.csv", "image,caption\na.png,x\nzz.png,y\n"),
                                                      _images(t)), FileNotFoundError,
     "1 of 2 images of csv c.csv are unusable, e.g. "),
    ("data/empty-folder", lambda t, a: (Path(t / "empty").mkdir(), FolderImages(t / "empty")), ValueError,
     "no images"),
    ("data/csv-wrong-column", lambda t, a: csv_captions(_csv(t, "image,text\na.png,x\n"), t / "images"),
     ValueError, "has no caption column 'caption'; its columns are ['image', 'text']"),
    ("data/format-needs-option", lambda t, a: build_source({"format": "csv"}), ValueError,
     "format 'csv' needs the option(s) captions"),
    ("data/format-unknown-option", lambda t, a: build_source({"format": "shapes", "root": "x"}), ValueError,
     "format 'shapes' does not take option(s) ['root']"),
    ("data/karpathy-unknown-split", lambda t, a: karpathy_captions(_write(t / "k.json", '{"images": []}'), t,
                                                                    "dev"), ValueError,
     "unknown Karpathy split 'dev'"),
    ("data/branch-reads-absent-field", lambda t, a: BranchDataset(
        build_source({"format": "shapes", "num_images": 4, "size": 16}, "test"),
        {"x": ("label", lambda v: v, None)})[0], KeyError,
     "branch 'x' reads field 'label', but samples of this source have"),
    ("data/loader-batch-too-big", lambda t, a: make_loader(
        build_source({"format": "shapes", "num_images": 4, "size": 16}, "test"), {"x": ("caption", len, None)},
        batch_size=8, train=True),
     ValueError, "fewer than one training batch of 8"),
]

MODEL_ROWS = [
    ("model/not-a-directory", lambda t, a: JointEmbedding.from_pretrained(t / "nope"), FileNotFoundError,
     "nope is not a directory; pass the folder written by save_pretrained"),
    ("model/missing-weights", lambda t, a: (_model_dir(t, a) / "model.safetensors").unlink()
     or JointEmbedding.from_pretrained(t / "model"), FileNotFoundError,
     "model.safetensors is missing"),
    ("model/config-not-json", lambda t, a: _tampered_model(t, a, "config.json", '{"branches": '), ValueError,
     "config.json is not an mmvicreg model config (JSONDecodeError"),
    ("model/config-branches-list", lambda t, a: _tampered_model(t, a, "config.json", '{"branches": []}'),
     ValueError, "'branches' must map branch names to mappings"),
    ("model/config-unknown-encoder", lambda t, a: _tampered_model(t, a, "config.json", json.dumps(
        {"branches": {"a": {"encoder": {"name": "zzz"}, "expander": "8"}}})), ValueError, "unknown encoder 'zzz'"),
    ("model/truncated-weights", lambda t, a: _tampered_model(
        t, a, "model.safetensors", (a["model"] / "model.safetensors").read_bytes()[:-64]), ValueError,
     "model.safetensors could not be read as safetensors weights"),
    ("model/pickle-as-weights", lambda t, a: (_model_dir(t, a), _evil(t / "model" / "model.safetensors"),
                                              JointEmbedding.from_pretrained(t / "model")), ValueError,
     "could not be read as safetensors weights"),
    ("model/weights-of-other-shapes", lambda t, a: _tampered_model(
        t, a, "model.safetensors", (a["other"] / "model.safetensors").read_bytes()), ValueError,
     "tensor(s) have other shapes, e.g. size mismatch for branches.image.expander"),
    ("model/weights-missing-a-branch", lambda t, a: _tampered_model(t, a, "config.json", json.dumps(
        {"branches": {**json.loads((a["model"] / "config.json").read_text())["branches"],
                      "extra": {"encoder": {"name": "test_vit", "image_size": 16, "patch_size": 8},
                                "expander": "8", "field": "image"}}})), ValueError,
     "does not match"),
    ("model/tokenizer-corrupt", lambda t, a: _tampered_model(t, a, "tokenizers/caption/mmvicreg_tokenizer.json",
                                                             "{"), ValueError,
     "the tokenizer of branch 'caption' in"),
    ("model/encode-unknown-branch", lambda t, a: encode(a["net"], "text", ["x"]), KeyError,
     "no branch 'text'; this model's branches: image, caption"),
    ("model/encode-one-string", lambda t, a: encode(a["net"], "caption", "a red circle"), TypeError,
     "wrap the single str in a list"),
    ("model/caption-to-image-branch", lambda t, a: encode(a["net"], "image", ["a red circle"]), TypeError,
     "is a caption routed to an image branch?"),
    ("model/forward-wrong-shape", lambda t, a: a["net"]({"image": torch.zeros(2, 3)}), ValueError,
     "needs images (batch, 3, H, W), uint8 as the loader makes them or float normalised, got torch.float32 tensor of shape (2, 3)"),
    ("model/forward-unknown-key", lambda t, a: a["net"]({"txt": torch.zeros(2, 3)}), KeyError,
     "batch has keys ['txt'] that are not branches"),
]

CHECKPOINT_ROWS = [
    ("checkpoint/crafted-pickle", lambda t, a: _train(_resume_from(t, a, "custom_checkpoint_1.pkl", _evil)),
     UnsafeCheckpointError, "custom_checkpoint_1.pkl: its pickle asks for the callable io.open"),
    ("checkpoint/truncated-optimizer", lambda t, a: _train(_resume_from(
        t, a, "optimizer.bin", lambda p: p.write_bytes(p.read_bytes()[:100]))), CheckpointError,
     "optimizer.bin is damaged and cannot be read"),
]

EVAL_ROWS = [
    ("eval/k-larger-than-train", lambda t, a: knn_classify(X5, np.arange(5), X2, np.arange(2), ks=(10,)),
     ValueError, "k = 10 exceeds the 5 training features"),
    ("eval/nan-features", lambda t, a: knn_classify(np.full((5, 3), np.nan), np.arange(5), X2, np.arange(2),
                                                    ks=(1,)), ValueError, "has NaN or infinite values in 5 row(s)"),
    ("eval/float-labels", lambda t, a: knn_classify(X5, np.arange(5.0), X2, np.arange(2), ks=(1,)), TypeError,
     "train_labels has dtype torch.float64; it must hold integers"),
    ("eval/width-mismatch", lambda t, a: knn_classify(X5, np.arange(5), RNG.random((2, 4)), np.arange(2),
                                                      ks=(1,)), ValueError, "their widths 3 and 4 differ"),
    ("eval/caption-owner-out-of-range", lambda t, a: retrieval_metrics(X5, RNG.random((10, 3)), np.arange(10)),
     ValueError, "text_to_image[5] = 5 is out of range"),
    ("eval/probe-zero-epochs", lambda t, a: linear_probe(X5, np.arange(5), X2, np.arange(2), epochs=0),
     ValueError, "epochs must be a positive integer, got 0"),
    ("eval/extract-returns-list", lambda t, a: extract_embeddings(lambda b: [1, 2], list(range(4)),
                                                                  progress=False), TypeError,
     "encode_fn must return a torch.Tensor or numpy.ndarray, got list"),
    ("eval/extract-nothing", lambda t, a: extract_embeddings(lambda b: torch.zeros(len(b), 2), [],
                                                             progress=False), ValueError, "nothing to encode"),
    ("eval/retrieval-without-text-branch", lambda t, a: pick_retrieval_branches(JointEmbedding.from_config(
        {k: {**tiny_config("u")["branches"]["image"]} for k in ("v1", "v2")})), ValueError,
     "retrieval needs an image branch and a text branch"),
]

CLI_ROWS = [
    ("cli/train-missing-config", lambda t, a: _cli("train", t / "none.yaml"), CLIFailed,
     "mmvicreg: error: config file"),
    ("cli/train-unknown-override", lambda t, a: _cli("train", _cli_config(t, _cfg(t)), "train.batchsize=3"),
     CLIFailed, "unknown config key 'train.batchsize' (did you mean 'train.batch_size'?)"),
    ("cli/train-crafted-checkpoint", lambda t, a: _cli(
        "train", _cli_config(t, _resume_from(t, a, "optimizer.bin", _evil))), CLIFailed,
     "optimizer.bin: its pickle asks for the callable io.open"),
    ("cli/eval-missing-model", lambda t, a: _cli("eval", "retrieval", "--model", t / "nope", "--format", "shapes"),
     CLIFailed, "is not a directory; pass the folder written by save_pretrained"),
    ("cli/eval-coco-without-captions", lambda t, a: _cli("eval", "retrieval", "--model", a["model"], "--format",
                                                         "coco"), CLIFailed, "--format coco needs --captions"),
    ("cli/eval-folder-without-roots", lambda t, a: _cli("eval", "knn", "--model", a["model"], "--format",
                                                        "folder"), CLIFailed, "needs --train-images and --test-images"),
    ("cli/eval-knn-on-text-branch", lambda t, a: _cli("eval", "knn", "--model", a["model"], "--format", "digits",
                                                      "--image-branch", "caption"), CLIFailed,
     "--image-branch 'caption' is a text branch; k-NN and linear probes score image branches: ['image']"),
]

ROWS = CONFIG_ROWS + DATA_ROWS + MODEL_ROWS + CHECKPOINT_ROWS + EVAL_ROWS + CLI_ROWS


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A saved tiny model, one with a narrower image expander, and a 2-step run with a checkpoint."""
    root = tmp_path_factory.mktemp("assets")
    captions = ["a red circle", "two blue squares", "a green cross"]
    torch.manual_seed(0)
    branches = tiny_config("u")["branches"]
    net = JointEmbedding.from_config(branches, captions=captions)
    net.save_pretrained(root / "model")
    other = {**branches, "image": {**branches["image"], "expander": "16"}}
    JointEmbedding.from_config(other, captions=captions).save_pretrained(root / "other")
    with contextlib.redirect_stdout(io.StringIO()):
        _train(_cfg(root))
    return {"model": root / "model", "other": root / "other", "run": root / "run", "net": net}


def test_the_table_is_big_enough():
    assert len(ROWS) >= 30
    assert len({row[0] for row in ROWS}) == len(ROWS)
    assert {row[0].split("/")[0] for row in ROWS} >= {"config", "train", "data", "model", "checkpoint", "eval",
                                                      "cli"}


def _own_frame(filename: str) -> bool:
    """Raised by mmvicreg (or by the test's CLI helper), not from inside a dependency."""
    path = Path(filename).resolve()
    return "site-packages" not in path.parts and (
        "mmvicreg" in path.parts or path.parent == TESTS.resolve()
    )


@pytest.mark.parametrize("trigger, error, fragment", [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_bad_input_gives_one_clear_line(tmp_path, assets, trigger, error, fragment):
    with contextlib.redirect_stdout(io.StringIO()):
        with pytest.raises(error) as info:
            trigger(tmp_path, assets)
    exc = info.value
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    assert fragment in message, message
    assert "\n" not in message.strip(), message
    last = traceback.extract_tb(exc.__traceback__)[-1]
    assert _own_frame(last.filename), f"raised inside a dependency: {last.filename}:{last.lineno}: {message}"
    # no dependency traceback chained under it ("During handling of the above exception ...")
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), repr(exc.__context__)
    assert not list(tmp_path.rglob("payload_ran"))  # a crafted pickle never ran


# ------------------------------------------------------------------------------------------- dirty data in a run


def test_dirty_data_is_skipped_and_counted_in_the_run(tmp_path, capsys):
    """A corrupt image, an empty caption and a caption that is not UTF-8, under the skip policies."""
    root = tmp_path / "data"
    names = [f"{k:02d}.png" for k in range(20)]
    _images(root, names)
    _corrupt(root / "images" / "03.png")
    rows = [f"{n},a picture number {k}".encode() for k, n in enumerate(names)]
    rows[5] = b"05.png,"  # empty caption: image 05 has no other, so it is left out too
    rows[7] = "07.png,un café noir".encode("latin-1")  # the file is no longer UTF-8
    rows.append(b"07.png,a second caption of seven")
    _write(root / "captions.csv", b"image,caption\n" + b"\n".join(rows) + b"\n")
    cfg = _cfg(tmp_path, max_steps=3, batch_size=8, checkpoint_every=3)
    cfg["data"]["train"] = {"format": "csv", "captions": str(root / "captions.csv"), "images": str(root / "images"),
                            "on_bad_caption": "error"}
    with pytest.raises(ValueError, match="2 of 21 captions of csv captions.csv are unusable"):
        _train(cfg)

    cfg["data"]["train"].update(on_bad_caption="skip", on_bad_image="skip")
    _train(cfg, ["train.max_steps=4"])  # one epoch of 19 samples / 8 = 2 steps: the corrupt image is met
    out = capsys.readouterr().out
    assert "data.train csv captions.csv: 19 samples; skipped 1 images, 2 captions (empty: 1, no usable caption: 1, " \
           "not UTF-8: 1)" in out
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())["train"]
    assert report["skipped_captions"] == 2 and report["skipped_caption_reasons"] == {"empty": 1, "not UTF-8": 1}
    assert report["skipped_image_reasons"] == {"no usable caption": 1, "corrupt": 1}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["skipped_captions"] == 2 and records[-1]["skipped_images"] == 2
