"""Preemption: a stop signal (SIGTERM, SIGUSR1, SIGINT) ends the run after the step in progress, with one
checkpoint of that step and exit code 75; resumed, the run ends with the uninterrupted run's weights, bit for bit.

The subprocess tests run ``python -m mmvicreg train`` (one thread), wait for a random step in metrics.jsonl and
signal it, with ``train.checkpoint_every`` far beyond the run, so the only checkpoint is the preemption's. Set
``MMVICREG_FAULT_SEED`` to replay a choice of steps.
"""

import os
import random
import signal
import stat
import time

import pytest

from mmvicreg.config import load_config
from mmvicreg.data.build import format_options
from mmvicreg.train import PREEMPTED_EXIT_CODE, Callback, Preempted, latest_checkpoint, train, verify_checkpoint
from mmvicreg.train.preempt import STOP_SIGNALS, requeue
from tests.helpers.cluster import finish, identical, launch, records, wait_for_step, weights, write_config
from tests.helpers.configs import tiny_config

TOTAL = 24


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The final weights and losses of the uninterrupted run (a subprocess, as the interrupted ones)."""
    root = tmp_path_factory.mktemp("straight")
    cfg = write_config(root / "run.yaml", root / "run", max_steps=TOTAL, checkpoint_every=1000)
    assert finish(launch(cfg)) == 0, (root / "run.log").read_text()[-3000:]
    return weights(root / "run"), [r["loss"] for r in records(root / "run")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig, group, workers", [
    (signal.SIGTERM, False, 0), (signal.SIGUSR1, True, 0), (signal.SIGUSR1, True, 1),
], ids=["SIGTERM", "SIGUSR1-to-the-group", "SIGUSR1-to-the-group-with-a-loader-worker"])
def test_a_stop_signal_checkpoints_its_step_and_the_resumed_run_is_bit_identical(
    tmp_path, straight, sig, group, workers
):
    """``group``: the signal goes to every process of the run, DataLoader workers included, as SLURM's
    ``--signal`` sends it (the workers ignore SIGUSR1 and SIGINT; their parent stops. PyTorch's own SIGTERM handler
    in a worker kills it unless its parent sent it: README, "On a cluster")."""
    seed = int(os.environ.get("MMVICREG_FAULT_SEED", random.randrange(10**6)))
    target = random.Random(seed).randint(2, TOTAL - 6)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "run.yaml", run, max_steps=TOTAL, checkpoint_every=1000)
    # resume=true on an empty folder starts the run (a job script's form)
    proc = launch(cfg, ["resume=true", f"data.workers={workers}"])
    wait_for_step(proc, run, target)
    send = (lambda: os.killpg(proc.pid, sig)) if group else (lambda: proc.send_signal(sig))
    send()
    time.sleep(0.05)
    send()  # a second signal, likely during the save: reported, otherwise ignored
    code = finish(proc)
    log = (tmp_path / "run.log").read_text()
    assert code == PREEMPTED_EXIT_CODE == 75, log[-3000:]
    stopped = records(run)[-1]["step"]
    assert stopped >= target
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.name == f"step_{stopped:08d}", (seed, log)  # steps lost: 0
    assert [c.name for c in (run / "checkpoints").iterdir()] == [ckpt.name]  # no other save, no debris
    verify_checkpoint(ckpt)
    assert f"stopped on {sig.name} after step {stopped}" in log
    assert f"continue at step {stopped + 1} (exit code 75)" in log
    assert not (run / "model").exists()

    if workers:  # the workers survived the signal; a map-style loader's workers draw from a generator restarted
        return  # on resume, so with workers a resume is not bit-identical after kill -9 either (data/batching.py)
    assert finish(launch(cfg, ["resume=true"])) == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert f"resumed from {ckpt} at step {stopped}" in (tmp_path / "run.log").read_text()
    got = records(run)
    assert [r["step"] for r in got] == list(range(1, TOTAL + 1))
    reference, losses = straight
    assert identical(weights(run), reference), f"seed {seed}: stopped at {stopped}"
    assert [r["loss"] for r in got] == losses


class SignalDuringSave(Callback):
    """Sends SIGTERM, then SIGUSR1, to this process as the checkpoint of ``step`` starts."""

    def __init__(self, step):
        self.step, self.sent = step, 0

    def on_checkpoint_start(self, step):
        if step == self.step:
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                self.sent += 1
                os.kill(os.getpid(), sig)


@pytest.fixture
def handlers_restored():
    """A stopped run leaves its handlers installed (the process is meant to exit); put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _tree(run, **train_options):
    cfg = tiny_config(run, **{"max_steps": 8, "checkpoint_every": 3, **train_options})
    cfg["data"]["eval"] = None
    return load_config(cfg, format_keys=format_options)


def test_signals_during_a_save_leave_it_whole_and_the_run_resumes_to_the_same_weights(
    tmp_path, capfd, handlers_restored, one_thread
):
    train(_tree(tmp_path / "straight"))
    with pytest.raises(Preempted) as stopped:
        train(_tree(tmp_path / "run"), callbacks=[SignalDuringSave(3)])
    assert stopped.value.step == 3 and stopped.value.signal_name == "SIGTERM"  # the save of step 3 is the stop's
    assert stopped.value.exit_code == 75
    assert [c.name for c in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000003"]
    verify_checkpoint(stopped.value.checkpoint)
    err = capfd.readouterr().err
    assert "SIGTERM received: stopping after this step" in err
    assert "SIGUSR1 received again: already stopping; the checkpoint is being written" in err
    tree = _tree(tmp_path / "run")
    tree.resume = True
    train(tree)
    assert identical(weights(tmp_path / "run"), weights(tmp_path / "straight"))


def _fake_scontrol(folder):
    script = folder / "scontrol"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {folder / 'calls.txt'}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return folder


@pytest.mark.timeout(120)
def test_requeue_runs_scontrol_under_slurm_after_the_checkpoint(tmp_path):
    bin_dir = _fake_scontrol(tmp_path)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "run.yaml", run, max_steps=TOTAL, checkpoint_every=1000, requeue=True)
    proc = launch(cfg, env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"})
    wait_for_step(proc, run, 2)
    proc.send_signal(signal.SIGUSR1)
    assert finish(proc) == 75
    assert (tmp_path / "calls.txt").read_text() == "requeue 4242\n"
    assert "train.requeue: job 4242 requeued" in (tmp_path / "run.log").read_text()


def test_requeue_outside_slurm_runs_nothing_and_says_so(tmp_path, monkeypatch):
    bin_dir = _fake_scontrol(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    said = []
    assert requeue(said.append) is False
    assert not (tmp_path / "calls.txt").exists()
    assert said == ["train.requeue: SLURM_JOB_ID is not set (not a SLURM job); nothing was requeued"]
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 'Requested operation is presently disabled' >&2\nexit 1\n")
    assert requeue(said.append) is False
    assert said[-1] == ("train.requeue: scontrol requeue 7 failed (exit 1: Requested operation is presently "
                        "disabled); resubmit it with resume=true")
