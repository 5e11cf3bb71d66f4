"""``train.sync_to``: a run mirrored to an fsspec URL — here ``file://``, standing in for object storage.

Checkpoints and the export are published there by a marker written last; a run killed with SIGKILL and resumed
on a node whose local folder is gone reads its checkpoint back from the remote and ends bit-identical to a run
never interrupted; old checkpoints are pruned there; nothing there that is not the run's own is touched.
"""

import json
import shutil
import signal

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from mmvicreg.config import ConfigError, load_config
from mmvicreg.data.build import format_options
from mmvicreg.train import CheckpointError, train
from mmvicreg.train.remote import MARKER, RUN_MARKER, RemoteMirror
from tests.helpers.cluster import finish, identical, launch, records, wait_for_step, weights, write_config
from tests.helpers.configs import tiny_config

TOTAL, EVERY = 20, 4


def _tree(run, remote, **options):
    cfg = tiny_config(run, **{"max_steps": 6, "checkpoint_every": 2, "sync_to": remote, **options})
    cfg["data"]["eval"] = None
    return cfg


def _load(tree, *overrides):
    return load_config(tree, list(overrides), format_keys=format_options)


@pytest.mark.timeout(300)
def test_a_killed_run_resumes_from_the_remote_alone_bit_identical(tmp_path):
    remote = tmp_path / "bucket" / "runs" / "x"
    straight = write_config(tmp_path / "straight.yaml", tmp_path / "straight", max_steps=TOTAL, checkpoint_every=EVERY)
    assert finish(launch(straight)) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    run = tmp_path / "node1"
    cfg = write_config(tmp_path / "run.yaml", run, max_steps=TOTAL, checkpoint_every=EVERY,
                       sync_to=f"file://{remote}")
    proc = launch(cfg)
    wait_for_step(proc, run, 2 * EVERY + 2)  # two checkpoints published at the remote
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mirror = RemoteMirror(f"file://{remote}")
    published = mirror.complete_steps()
    assert published and published[-1] >= 2 * EVERY
    shutil.rmtree(run)  # the job restarts on another node: nothing local is left

    assert finish(launch(cfg, ["resume=true"])) == 0, (tmp_path / "run.log").read_text()[-3000:]
    log = (tmp_path / "run.log").read_text()
    assert f"resumed from {run}/checkpoints/step_{published[-1]:08d} at step {published[-1]}" in log
    assert identical(weights(run), weights(tmp_path / "straight"))
    assert [r["step"] for r in records(run)] == list(range(1, TOTAL + 1))  # metrics came back too
    # the remote: the export (published by its marker), the records, the newest two checkpoints only
    assert identical(weights(run), weights(remote))
    assert json.loads((remote / "model" / MARKER).read_text())["files"]["model.safetensors"] > 0
    assert mirror.complete_steps() == [TOTAL - EVERY, TOTAL]
    assert sorted(p.name for p in (remote / "checkpoints").iterdir()) == ["step_00000016", "step_00000020"]
    assert (remote / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()


def test_a_checkpoint_without_its_marker_is_never_resumed_from_and_is_pruned(tmp_path, one_thread):
    remote = tmp_path / "remote"
    train(_load(_tree(tmp_path / "a", f"file://{remote}", max_steps=4)))
    assert RemoteMirror(str(remote)).complete_steps() == [2, 4]
    half = remote / "checkpoints" / "step_00000005"  # an upload cut short: files, no marker
    shutil.copytree(remote / "checkpoints" / "step_00000004", half)
    (half / MARKER).unlink()
    torn = remote / "checkpoints" / "step_00000004" / MARKER  # a marker whose files are not all there
    (remote / "checkpoints" / "step_00000004" / "optimizer.bin").write_bytes(b"cut")
    assert RemoteMirror(str(remote)).complete_steps() == [2]
    assert torn.exists()
    config = _load(_tree(tmp_path / "b", f"file://{remote}", max_steps=6), "resume=true")
    train(config)  # a new local folder: resumes from step 2, the one complete checkpoint
    said = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in said] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (remote / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]
    assert RemoteMirror(str(remote)).complete_steps() == [4, 6]


def test_an_earlier_run_at_the_remote_is_refused_and_overwrite_removes_only_its_files(tmp_path, one_thread):
    remote = tmp_path / "remote"
    train(_load(_tree(tmp_path / "a", str(remote), max_steps=2)))
    (remote / "notes.txt").write_text("the user's own")
    (remote / "checkpoints" / "README").write_text("also the user's")
    with pytest.raises(ConfigError, match=r"train.sync_to .*remote already holds a run \(config.yaml, "
                                          r"metrics.jsonl, model, checkpoints/\); set resume=true"):
        train(_load(_tree(tmp_path / "b", str(remote), max_steps=2)))
    assert not (tmp_path / "b" / "checkpoints").exists()
    train(_load(_tree(tmp_path / "b", str(remote), max_steps=2), "overwrite=true"))
    assert (remote / "notes.txt").read_text() == "the user's own"
    assert (remote / "checkpoints" / "README").read_text() == "also the user's"
    assert (remote / RUN_MARKER).is_file() and (remote / "model" / MARKER).is_file()


class ReadOnlyFileSystem(LocalFileSystem):
    """``readonly://PATH``: the local files, every write refused as a read-only bucket refuses it (the tests run as
    root, which chmod does not stop)."""

    protocol = "readonly"

    def open(self, path, mode="rb", **kwargs):
        if "r" not in mode:
            raise PermissionError(13, "Permission denied", str(path))
        return super().open(path, mode, **kwargs)

    def makedirs(self, path, exist_ok=False):
        raise PermissionError(13, "Permission denied", str(path))


class NoUploadFileSystem(LocalFileSystem):
    """``noupload://PATH``: the local files; small writes work, file uploads are refused (a quota reached mid-run)."""

    protocol = "noupload"

    def put_file(self, lpath, rpath, **kwargs):
        raise PermissionError(13, "Quota exceeded", str(rpath))


fsspec.register_implementation("readonly", ReadOnlyFileSystem, clobber=True)
fsspec.register_implementation("noupload", NoUploadFileSystem, clobber=True)


def test_a_remote_that_refuses_writes_is_one_line_before_training(tmp_path):
    (tmp_path / "a_file").write_text("x")
    for url, what in ((f"file://{tmp_path / 'a_file' / 'run'}", "read it"), (f"readonly://{tmp_path}/run", "write to it")):
        with pytest.raises(ConfigError, match=rf"^train.sync_to {url}: could not {what} \((NotADirectory|Permission)"
                                              r"Error: .*\); check the URL and your permissions there") as e:
            train(_load(_tree(tmp_path / "run", url)))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("key, value, message", [
    ("output_dir", "s3://bucket/run", r"output_dir 's3://bucket/run' is a URL; output_dir is a local folder .*set "
                                      r"train.sync_to=s3://bucket/run"),
    ("train.sync_to", "nosuchproto://x", r"train.sync_to 'nosuchproto://x': Protocol not known: nosuchproto; "
                                         r"install the fsspec implementation of nosuchproto://"),
])
def test_remote_settings_are_checked_where_the_config_loads(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        _load(_tree(tmp_path / "run", None), f"{key}={value}")


def test_a_checkpoint_of_another_world_size_is_refused_naming_both(tmp_path, one_thread):
    tree = _tree(tmp_path / "run", None, max_steps=2)
    train(_load(tree))
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002"
    shutil.copy(ckpt / "random_states_0.pkl", ckpt / "random_states_1.pkl")  # as two processes write it
    with pytest.raises(CheckpointError, match=r"^checkpoint .*step_00000002 was written by a run of 2 processes and "
                                              r"this run has 1: launch 2 \(the same global train.batch_size\) to "
                                              r"continue it exactly"):
        train(_load(tree, "resume=true", "train.max_steps=4"))


def test_an_upload_refused_mid_run_stops_it_naming_what_is_intact(tmp_path, one_thread):
    url = f"noupload://{tmp_path}/remote"
    with pytest.raises(RuntimeError, match=rf"^train.sync_to {url}: could not write checkpoints/step_00000002 "
                                           r"\(PermissionError: .*Quota exceeded.*\); the local checkpoint .*"
                                           r"step_00000002 is complete and the remote's last complete checkpoint is "
                                           r"intact: fix the remote and rerun with resume=true$"):
        train(_load(_tree(tmp_path / "run", url, max_steps=4)))
    assert (tmp_path / "run" / "checkpoints" / "step_00000002").is_dir()
