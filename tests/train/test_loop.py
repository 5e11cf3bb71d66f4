"""The training loop: a falling loss, the run directory, resume equality, non-finite stops, two processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmvicreg.config import ConfigError, load_config
from mmvicreg.data.build import format_options
from mmvicreg.objective import build_objective
from mmvicreg.train import NonFiniteLossError, train
from mmvicreg.train.setup import tracker_init
from tests.helpers.configs import tiny_config
from tests.helpers.interrupt import DieAfterCheckpoint, Interrupted


def _run(tree, overrides=(), **kwargs):
    return train(load_config(tree, list(overrides), format_keys=format_options), **kwargs)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_metrics_and_falling_loss(tmp_path):
    result = _run(tiny_config(tmp_path / "run", max_steps=24, checkpoint_every=10))
    run = tmp_path / "run"
    records = _metrics(run)
    assert [r["step"] for r in records] == list(range(1, 25))
    for key in ["step", "loss", "invariance", "variance", "covariance", "std/image", "std/caption",
                "rankme/image", "rankme/caption"]:
        assert key in records[0], key
    assert sum(r["loss"] for r in records[-4:]) < sum(r["loss"] for r in records[:4])
    assert (run / "config.yaml").is_file() and (run / "model" / "model.safetensors").is_file()
    assert {p.name for p in (run / "plots").iterdir()} == {"terms.png", "std.png", "rankme.png"}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000020", "step_00000024"]
    saved = json.loads((run / "eval.json").read_text())
    for key in ["i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum", "i2t_medr",
                "t2i_meanr", "num_images", "num_captions"]:
        assert key in saved and key in result
    assert saved["num_images"] == 20 and saved["num_captions"] == 100
    card = (run / "model" / "README.md").read_text()  # the export precedes the evaluation; its card is rewritten
    assert f"| rsum | {round(saved['rsum'], 4)} |" in card and "max_steps: 24" in card


def test_tracker_settings_come_from_the_config(tmp_path):
    tree = tiny_config(tmp_path / "my-run")
    tree["train"].update(trackers=["wandb", "mlflow"], project="retrieval", tracker_init={"wandb": {"tags": ["a"]}})
    config = load_config(tree, [], format_keys=format_options)
    assert tracker_init(config) == {"wandb": {"tags": ["a"], "name": "my-run"}, "mlflow": {"run_name": "my-run"}}
    config = load_config(tree, ["train.run_name=sweep-3", "train.tracker_init.wandb.name=mine"], format_keys=format_options)
    assert tracker_init(config) == {"wandb": {"tags": ["a"], "name": "mine"}, "mlflow": {"run_name": "sweep-3"}}
    tree["train"].update(trackers=["tensorboard"])
    with pytest.raises(ConfigError, match="train.tracker_init has options for 'wandb', which is not in train.trackers"):
        _run(tree)


def test_resume_gives_identical_weights(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(tiny_config(straight, max_steps=8, checkpoint_every=2))
    with pytest.raises(Interrupted):
        _run(tiny_config(resumed, max_steps=8, checkpoint_every=2), callbacks=[DieAfterCheckpoint(4)])
    assert not (resumed / "model").exists()
    cfg = tiny_config(resumed, max_steps=8, checkpoint_every=2)
    cfg["resume"] = True
    _run(cfg)
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(resumed / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [r["step"] for r in _metrics(resumed)]
    assert steps == list(range(1, 9))


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    _run(tiny_config(tmp_path, max_steps=2, checkpoint_every=2))
    with pytest.raises(ConfigError, match="set resume=true to continue it"):
        _run(tiny_config(tmp_path, max_steps=2, checkpoint_every=2))


def _exploding(run_dir, policy):
    cfg = tiny_config(run_dir, max_steps=40, checkpoint_every=1, on_nonfinite=policy)
    cfg["train"]["optimizer"] = {"name": "sgd", "lr": 1e3, "momentum": 0.9}  # diverges after a step or two
    return cfg


def test_nonfinite_term_is_named_with_its_step(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=3)
    cfg["loss"] = {"eps": -100.0}  # sqrt(Var - 100): NaN in the variance term at the first step
    with pytest.raises(NonFiniteLossError) as info:
        _run(cfg)
    msg = str(info.value)
    assert msg.startswith("non-finite training at step 1: variance = nan")
    assert "no checkpoint was written yet" in msg and "train.on_nonfinite=skip" in msg


class _ChangedObjective(torch.nn.Module):
    """The config's objective, whose output is passed through ``change(zs, out)``."""

    def __init__(self, config, change):
        super().__init__()
        self.inner, self.change = build_objective(config.loss, config.branches), change

    def forward(self, zs):
        return self.change(zs, self.inner(zs))


def _run_changed(tree, change):
    config = load_config(tree, format_keys=format_options)
    return train(config, objective=_ChangedObjective(config, change))


def test_nonfinite_gradient_under_a_finite_loss_is_named(tmp_path):
    def add_infinite_gradient(zs, out):  # sqrt(u - u.detach()): value 0, gradient inf
        u = sum(z.sum() for z in zs.values())
        return out._replace(loss=out.loss + torch.sqrt(u - u.detach()))

    with pytest.raises(NonFiniteLossError, match=r"^non-finite training at step 1: gradient norm = (inf|nan)"):
        _run_changed(tiny_config(tmp_path, max_steps=3), add_infinite_gradient)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from mmvicreg.train import latest_checkpoint

    with pytest.raises(NonFiniteLossError) as info:
        _run(_exploding(tmp_path, "stop"))
    msg = str(info.value)
    step = int(msg.split("at step ")[1].split(":")[0])
    last = latest_checkpoint(tmp_path)
    assert last is not None and last.name == f"step_{step - 1:08d}" and str(last) in msg
    state = load_file(last / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (tmp_path / "model").exists()


def test_nonfinite_skip_policy_skips_then_gives_up_on_broken_weights(tmp_path, capsys):
    cfg = _exploding(tmp_path, "skip")
    cfg["train"]["max_consecutive_skips"] = 3
    with pytest.raises(NonFiniteLossError, match="3 batches in a row"):
        _run(cfg)
    assert capsys.readouterr().out.count("skipping step") == 3


def test_nonfinite_skip_policy_continues_past_a_bad_batch(tmp_path):
    calls = {"n": 0}

    def poison_third_batch(zs, out):  # the objective's third batch gives NaN, the others are fine
        calls["n"] += 1
        return out._replace(loss=out.loss * float("nan")) if calls["n"] == 3 else out

    _run_changed(tiny_config(tmp_path, max_steps=5, on_nonfinite="skip"), poison_third_batch)
    records = _metrics(tmp_path)
    assert records[-1]["step"] == 5 and records[-1]["skipped_nonfinite"] == 1


@pytest.mark.timeout(600)
def test_two_processes_follow_one_process(tmp_path):
    tree = tiny_config(tmp_path / "single", max_steps=5)
    tree["data"]["train"]["pairs"] = "all"  # no random caption draw: both runs see the very same batches
    _run(tree)
    two = tiny_config(tmp_path / "two", max_steps=5)
    two["data"]["train"]["pairs"] = "all"
    cfg_path = tmp_path / "two.yaml"
    cfg_path.write_text(yaml.safe_dump(two))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29533"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
         "-m", "mmvicreg", "train", str(cfg_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, double = _metrics(tmp_path / "single"), _metrics(tmp_path / "two")
    assert len(single) == len(double) == 5
    for a, b in zip(single, double):
        for key in ("loss", "invariance", "variance", "covariance"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (a["step"], key)
