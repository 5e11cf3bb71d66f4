"""Faults a long run meets: SIGKILL at random steps, a save that fails half-way, a checkpoint from a stranger.

The kill test drives ``python -m mmvicreg train`` in subprocesses: it kills the run at random steps several
times, resumes it each time with ``resume=true``, and requires the final weights to equal, bit for bit, those
of a run that was never interrupted (CPU, one thread). Set ``MMVICREG_FAULT_SEED`` to replay a kill schedule.
"""

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmvicreg.config import load_config
from mmvicreg.data.build import format_options
from mmvicreg.model import JointEmbedding
from mmvicreg.train import (
    Callback,
    CheckpointError,
    UnsafeCheckpointError,
    latest_checkpoint,
    safe_torch_load,
    train,
    verify_checkpoint,
)
from tests.helpers.cluster import records
from tests.helpers.configs import tiny_config

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("MMVICREG_DEBUG", None)


def _run(tree, overrides=(), **kwargs):
    return train(load_config(tree, list(overrides), format_keys=format_options), **kwargs)


def _config(run: Path, resume: bool = False, **train_options) -> dict:
    """The tiny run without its held-out evaluation (not what these tests are about), 6 steps by default."""
    cfg = tiny_config(run, **{"max_steps": 6, "checkpoint_every": 2, **train_options})
    cfg["data"]["eval"] = None
    cfg["resume"] = resume
    return cfg


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of the uninterrupted 6-step run."""
    run = tmp_path_factory.mktemp("straight") / "run"
    _run(_config(run))
    return _weights(run)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], context: str = "") -> None:
    assert a.keys() == b.keys(), context
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs {context}"


def _step(ckpt: Path | None) -> int:
    return int(ckpt.name.split("_")[1]) if ckpt is not None else 0


# ------------------------------------------------------------------------------------------- kill -9


def _launch(cfg: Path, resume: bool, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mmvicreg", "train", str(cfg)] + (["resume=true"] if resume else [])
    return subprocess.Popen(cmd, env=ENV, cwd=cfg.parent, stdout=log, stderr=subprocess.STDOUT)


def _kill_when(proc: subprocess.Popen, run: Path, target: int, timeout: float = 300.0) -> bool:
    """SIGKILL ``proc`` once metrics.jsonl shows step ``target``; False when it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        logged = records(run)
        if logged and logged[-1]["step"] >= target:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"no step {target} within {timeout}s")


@pytest.mark.timeout(900)
def test_kill_9_at_random_steps_then_resume_gives_identical_weights(tmp_path):
    seed = int(os.environ.get("MMVICREG_FAULT_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    total, every = 48, 8
    cfgs = {}
    for name in ("straight", "killed"):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / name, max_steps=total, checkpoint_every=every)))
        cfgs[name] = cfg
    log = open(tmp_path / "log.txt", "ab")

    straight = _launch(cfgs["straight"], False, log)
    assert straight.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]

    run = tmp_path / "killed"
    kills, seen = [], 0
    # The first kill comes as soon as a step is logged (before the first checkpoint, at step 8); then two more
    # at random steps, each beyond what the killed run had logged (the old lines stay until the run resumes).
    targets = [1, rng.randint(2, 30)]
    targets.append(rng.randint(targets[-1] + 1, total - 4))
    resume = False
    for target in targets:
        target = max(target, seen + 1)
        if target >= total:
            break
        proc = _launch(cfgs["killed"], resume, log)
        if not _kill_when(proc, run, target):
            assert proc.returncode == 0, (tmp_path / "log.txt").read_text()[-3000:]
            break
        seen = records(run)[-1]["step"] if records(run) else 0
        kept = _step(latest_checkpoint(run))
        kills.append((seen, kept))
        # Work lost is at most one checkpoint interval; a kill mid-save leaves at most a .tmp_step_ folder.
        assert seen - kept <= every, f"seed {seed}: killed at step {seen}, last checkpoint {kept}"
        resume = True  # with no checkpoint yet, resume=true starts afresh
    assert kills and kills[0][1] == 0, f"seed {seed}: the first kill {kills} should come before any checkpoint"
    print(f"kill schedule seed {seed}: (last logged step, checkpoint resumed from) = {kills}")

    stale = run / "checkpoints" / ".tmp_step_00000099"  # as a kill in the middle of a save leaves it
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "optimizer.bin").write_bytes(b"half a file")
    last = _launch(cfgs["killed"], True, log)
    assert last.wait(timeout=600) == 0, (tmp_path / "log.txt").read_text()[-3000:]

    _assert_same_weights(_weights(tmp_path / "straight"), _weights(run), f"(seed {seed}, kills {kills})")
    a, b = records(tmp_path / "straight"), records(run)
    assert [r["step"] for r in b] == list(range(1, total + 1))
    for x, y in zip(a, b):  # every step's loss too: the resumed run replayed the same batches and draws
        assert x["loss"] == y["loss"], (seed, kills, x["step"])
    assert not list((run / "checkpoints").glob(".tmp_step_*"))


def test_resume_true_with_no_checkpoint_starts_fresh_and_ignores_debris(tmp_path, straight):
    """What a run killed before its first checkpoint leaves: a config, a torn metrics line, a half save."""
    run = tmp_path / "run"
    (run / "checkpoints" / ".tmp_step_00000002").mkdir(parents=True)
    (run / "checkpoints" / ".tmp_step_00000002" / "model.safetensors").write_bytes(b"\x00" * 10)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "lo')
    _run(_config(run, resume=True))
    assert [r["step"] for r in records(run)] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]
    _assert_same_weights(straight, _weights(run))


# ------------------------------------------------------------------------------------------- failed saves


def _half_then_fail(real):
    """A writer that writes half of what it should, then fails as a full disk does."""

    def write(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)):
            data = Path(f).read_bytes()
            Path(f).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


class _FullDiskAtStep4(Callback):
    """The checkpoint of step 4 meets a full disk half-way through one of its writers."""

    def __init__(self, monkeypatch, writer):
        self.monkeypatch, self.writer = monkeypatch, writer

    def on_checkpoint_start(self, step):
        import accelerate.utils.other as acc_other

        if step != 4:
            return
        if self.writer == "torch.save":
            self.monkeypatch.setattr(torch, "save", _half_then_fail(torch.save))
        else:
            self.monkeypatch.setattr(acc_other, "safe_save_file", _half_then_fail(acc_other.safe_save_file))


@pytest.mark.parametrize("writer", ["torch.save", "safetensors"])
def test_a_save_failing_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch, writer, straight):
    run = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        _run(_config(run), callbacks=[_FullDiskAtStep4(monkeypatch, writer)])
    monkeypatch.undo()
    msg = str(info.value)
    assert "could not write the checkpoint of step 4" in msg and "No space left on device" in msg
    assert "step_00000002, is intact" in msg and "resume=true" in msg
    assert latest_checkpoint(run).name == "step_00000002"
    assert not list((run / "checkpoints").glob(".tmp_step_*"))  # the half-written folder is gone
    verify_checkpoint(latest_checkpoint(run))  # and the previous one reads back whole

    _run(_config(run, resume=True))
    _assert_same_weights(straight, _weights(run))


def _tiny_model(seed: int) -> JointEmbedding:
    torch.manual_seed(seed)
    branches = {k: v for k, v in tiny_config("unused")["branches"].items()}
    return JointEmbedding.from_config(branches, captions=["a red circle", "two blue squares", "a green cross"])


@pytest.mark.parametrize("fail", ["weights", "config", "tokenizer"])
def test_an_export_failing_midway_keeps_the_previous_export(tmp_path, monkeypatch, fail):
    import safetensors.torch

    from mmvicreg.encoders.text_tokenizers import TextTokenizer

    old = _tiny_model(0)
    old.save_pretrained(tmp_path / "model")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "model").rglob("*") if p.is_file()}
    new = _tiny_model(1)
    if fail == "weights":
        monkeypatch.setattr(safetensors.torch, "save_file", _half_then_fail(safetensors.torch.save_file))
    elif fail == "config":
        real_write = Path.write_text

        def write_text(self, data, *args, **kwargs):
            if self.name == "config.json":
                real_write(self, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(self, data, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
    else:
        def broken_save(self, directory):
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "tokenizer.json").write_text('{"half":')
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(TextTokenizer, "save", broken_save)
    with pytest.raises(OSError, match=r"could not write .*model: the disk is full \(.* free on "):
        new.save_pretrained(tmp_path / "model")
    monkeypatch.undo()
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "model").rglob("*") if p.is_file()}
    assert after == before  # not one byte of the previous export changed, no temporary file left behind
    loaded = JointEmbedding.from_pretrained(tmp_path / "model")
    _assert_same_weights(old.state_dict(), loaded.state_dict())


# ------------------------------------------------------------------------------------------- strangers' files


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for any code a crafted pickle could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real two-step run with one checkpoint, to copy and tamper with."""
    run = tmp_path_factory.mktemp("origin") / "run"
    _run(_config(run, max_steps=2))
    return run


def _tampered(checkpoint: Path, tmp_path: Path, name: str, write) -> tuple[dict, Path]:
    run = tmp_path / "run"
    shutil.copytree(checkpoint, run)
    write(run / "checkpoints" / "step_00000002" / name)
    return _config(run, resume=True, max_steps=4), run


def _evil(marker: Path, fmt: str):
    def write(path: Path) -> None:
        if fmt == "torch.save":  # a zip archive with data.pkl inside, as torch.save writes
            torch.save({"state": _Payload(marker)}, path)
        else:  # a bare pickle, which torch.load also reads
            import pickle

            path.write_bytes(pickle.dumps(_Payload(marker), protocol=2))

    return write


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
@pytest.mark.parametrize("name", ["optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl",
                                  "custom_checkpoint_1.pkl"])
def test_a_crafted_checkpoint_pickle_is_refused_and_never_runs(checkpoint, tmp_path, name, fmt):
    marker = tmp_path / "payload_ran"
    cfg, run = _tampered(checkpoint, tmp_path, name, _evil(marker, fmt))
    with pytest.raises(UnsafeCheckpointError) as info:
        _run(cfg)
    msg = str(info.value)
    assert msg.startswith(f"refused to load {run / 'checkpoints' / 'step_00000002' / name}: ")
    assert "could run code" in msg and "weights_only=True" in msg
    assert not marker.exists()
    assert latest_checkpoint(run).name == "step_00000002"


def test_the_payload_is_real_accelerate_alone_would_run_it(checkpoint, tmp_path):
    """Why verify first: Accelerate reads custom states with weights_only=False, which runs the payload."""
    from accelerate.checkpointing import load_custom_state

    from mmvicreg.train import TrainState

    marker = tmp_path / "payload_ran"
    _, run = _tampered(checkpoint, tmp_path, "custom_checkpoint_1.pkl", _evil(marker, "torch.save"))
    load_custom_state(TrainState(), str(run / "checkpoints" / "step_00000002"), 1)
    assert marker.exists()


@pytest.mark.parametrize("name, damage, fragment", [
    ("optimizer.bin", lambda p: p.write_bytes(p.read_bytes()[:200]), "is damaged and cannot be read"),
    ("optimizer.bin", lambda p: p.write_bytes(random.Random(0).randbytes(4096)), "is damaged and cannot be read"),
    ("random_states_0.pkl", lambda p: p.unlink(), "lacks random_states_0.pkl, which this run.s configuration expects"),
    ("random_states_0.pkl", lambda p: torch.save({"step": 3}, p), "does not hold the random-number states"),
    ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:-100]), "is not a readable safetensors file"),
])
def test_a_damaged_checkpoint_is_named_not_silently_skipped(checkpoint, tmp_path, name, damage, fragment):
    cfg, run = _tampered(checkpoint, tmp_path, name, damage)
    with pytest.raises(CheckpointError, match=fragment) as info:
        _run(cfg)
    assert str(run / "checkpoints" / "step_00000002") in str(info.value)


def test_checkpoint_files_all_load_weights_only(checkpoint):
    """Every pickle mmvicreg writes into a checkpoint reads back under weights_only=True."""
    ckpt = latest_checkpoint(checkpoint)
    verify_checkpoint(ckpt)
    assert safe_torch_load(ckpt / "custom_checkpoint_1.pkl") == {"step": 2, "epoch": 0, "batch": 2,
                                                                  "skipped_nonfinite": 0}


def test_a_pickle_posing_as_exported_weights_is_refused(tmp_path):
    marker = tmp_path / "payload_ran"
    _tiny_model(0).save_pretrained(tmp_path / "model")
    torch.save({"w": _Payload(marker)}, tmp_path / "model" / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors could not be read as safetensors weights"):
        JointEmbedding.from_pretrained(tmp_path / "model")
    assert not marker.exists()


def test_embedding_cache_never_unpickles(tmp_path):
    from mmvicreg.evaluation.extract import extract_embeddings

    marker = tmp_path / "payload_ran"
    cache = tmp_path / "emb.npy"
    np.save(cache, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning, match="cannot read the embedding cache"):
        out = extract_embeddings(lambda b: torch.ones(len(b), 3), list(range(5)), cache=cache, progress=False)
    assert out.shape == (5, 3) and not marker.exists()
    assert np.load(cache, allow_pickle=False).shape == (5, 3)  # overwritten with plain numbers
