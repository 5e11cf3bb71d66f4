"""Who may write a run folder: the lock, an earlier run, what a resumed run may change, a full disk, file modes."""

import os
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

from mmvicreg.cli import main
from mmvicreg.config import ConfigError, load_config
from mmvicreg.data.build import format_options
from mmvicreg.train import train
from mmvicreg.train.runfolder import LOCK_FILE
from tests.helpers.configs import tiny_config


def _run(tree, overrides=()):
    return train(load_config(tree, list(overrides), format_keys=format_options))


def _cli(tmp_path, tree, capsys, *overrides):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    code = main(["train", str(path), *overrides])
    return code, capsys.readouterr().err.strip()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-step run (checkpoint, export, eval.json); tests copy it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    _run(tiny_config(run, max_steps=2, checkpoint_every=2))
    return run


def _copy(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


def _files(folder):
    """Every file of the run but the lock (it records its latest holder)."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != LOCK_FILE}


def test_a_second_run_on_a_locked_folder_stops_at_once_naming_the_first(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(  # a run in progress: another process holds the folder's lock
        [sys.executable, "-c", "import sys, time; from mmvicreg.train.runfolder import RunFolderLock; "
         "lock = RunFolderLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = _cli(tmp_path, tiny_config(run, max_steps=2), capsys)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{run} is in use by another run" in err and f'"pid": {holder.pid}' in err
    assert not (run / "config.yaml").exists() and not (run / "metrics.jsonl").exists()
    _run(tiny_config(run, max_steps=2, checkpoint_every=2))  # its holder killed, the lock is gone with it


def test_a_finished_run_without_checkpoints_is_refused_not_replaced(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    shutil.rmtree(run / "checkpoints")
    before = _files(run)
    code, err = _cli(tmp_path, tiny_config(run, max_steps=2, seed=1), capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "already holds an earlier run (config.yaml, metrics.jsonl" in err and "overwrite=true" in err
    code, err = _cli(tmp_path, tiny_config(run, max_steps=2, seed=1), capsys, "resume=true")
    assert code == 2 and "holds a finished run" in err and "no checkpoint to resume from" in err
    assert _files(run) == before  # model, config, metrics, eval.json: not one byte changed


def test_overwrite_replaces_the_run_files_and_nothing_else(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "notes.txt").write_text("mine")
    old_eval = (run / "eval.json").read_bytes()
    tree = tiny_config(run, max_steps=3, checkpoint_every=3)
    tree["data"]["eval"] = None  # the new run has no evaluation: the old eval.json must not stay beside it
    _run(tree, ["overwrite=true"])
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "eval.json").exists() and old_eval
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")) == ["step_00000003"]
    with pytest.raises(ConfigError, match="resume=true and overwrite=true ask for opposite things"):
        load_config(tree, ["overwrite=true", "resume=true"], format_keys=format_options)


@pytest.mark.parametrize("override, named", [
    ("train.batch_size=8", "train.batch_size 16 -> 8"),
    ("train.optimizer.name=sgd", "train.optimizer.name 'adamw' -> 'sgd'"),
    ("train.seed=3", "train.seed 0 -> 3"),
    ("loss.name=infonce", "loss.name 'vicreg' -> 'infonce'"),
    ("data.train.num_images=80", "data.train.num_images 64 -> 80"),
])
def test_resume_refuses_a_setting_it_cannot_change_naming_it(finished, tmp_path, capsys, override, named):
    run = _copy(finished, tmp_path)
    before = _files(run)
    code, err = _cli(tmp_path, tiny_config(run, max_steps=4, checkpoint_every=2), capsys, "resume=true", override)
    assert code == 2 and len(err.splitlines()) == 1
    assert "cannot change in a resumed run" in err and named in err and "step_00000002" in err
    assert "incomplete" not in err and "remove" not in err
    assert _files(run) == before


def test_resume_applies_and_logs_what_may_change(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    _run(tiny_config(run, max_steps=4, checkpoint_every=2, log_every=2), ["resume=true"])
    out = capsys.readouterr().out
    assert "resume: train.max_steps 2 -> 4 (applied)" in out and "resume: train.log_every 1 -> 2 (applied)" in out
    saved = yaml.safe_load((run / "checkpoints" / "step_00000004" / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 4 and saved["train"]["log_every"] == 2


def test_a_resumed_run_trains_at_its_new_learning_rate(finished, tmp_path, capsys):
    """A changed lr takes effect: after the resume, the logged rates are those of a run that had it throughout."""
    import json

    run = _copy(finished, tmp_path)
    new = {"name": "adamw", "lr": 0.01, "weight_decay": 0.05}
    resumed = tiny_config(run, max_steps=5, checkpoint_every=2, optimizer=new, warmup_steps=1)
    _run(resumed, ["resume=true"])
    assert "resume: train.optimizer.lr 0.001 -> 0.01 (applied)" in capsys.readouterr().out
    straight = tiny_config(tmp_path / "straight", max_steps=5, checkpoint_every=2, optimizer=new, warmup_steps=1)
    _run(straight)
    rates = [{r["step"]: r["lr"] for r in map(json.loads, (p / "metrics.jsonl").read_text().splitlines())}
             for p in (run, tmp_path / "straight")]
    assert [rates[0][s] for s in (3, 4, 5)] == [rates[1][s] for s in (3, 4, 5)]
    assert rates[0][2] != rates[1][2]  # the first two steps ran at the old rate


def test_a_full_disk_at_the_export_is_one_line_naming_the_file_and_the_space(tmp_path, capsys, monkeypatch):
    import safetensors.torch

    real = safetensors.torch.save_file

    def full_at_export(tensors, filename, *args, **kwargs):
        if "staging" in str(filename):  # the export (checkpoints go through Accelerate's own save)
            raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full_at_export)
    run = tmp_path / "run"
    code, err = _cli(tmp_path, tiny_config(run, max_steps=2, checkpoint_every=2), capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"could not write {run / 'model'}: the disk is full" in err and "free on" in err and "needed" in err
    assert "resume=true" in err and (run / "checkpoints" / "step_00000002").is_dir()
    monkeypatch.undo()
    assert main(["train", str(tmp_path / "cfg.yaml"), "resume=true"]) == 0  # as the message says
    assert (run / "model" / "model.safetensors").is_file()


def test_exports_and_checkpoints_are_readable_by_the_group(finished):
    umask = os.umask(0)
    os.umask(umask)
    assert umask & 0o040 == 0  # the test machine's umask lets the group read
    for folder in (finished / "model", finished / "checkpoints" / "step_00000002"):
        for path in [folder, *folder.rglob("*")]:
            assert stat.S_IMODE(path.stat().st_mode) & 0o040, f"{path} is not readable by the group"
