"""train.compile: the compiled step gives the eager step's loss and gradients (to float32's own error on the same
step), a compiled run resumes bit-identically, micro-batches stay exact, graph breaks are said in one line."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mmvicreg.config import load_config
from mmvicreg.data.build import format_options
from mmvicreg.train import train
from mmvicreg.train.speed import graph_break_summary
from tests.helpers.configs import tiny_config
from tests.helpers.interrupt import DieAfterCheckpoint, Interrupted
from tests.train.test_speed_switches import _loss_and_grads


@pytest.fixture(autouse=True)
def _process_determinism():
    """apply_speed_switches sets torch's process-wide determinism; train() restores it, a bare call does not."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _run(tree, **kwargs):
    return train(load_config(tree, [], format_keys=format_options), **kwargs)


def _flat(grads, names):
    return torch.cat([grads[n].double().flatten() for n in names])


def test_the_compiled_step_is_as_close_to_float64_as_the_eager_step():
    """The quickstart towers (BatchNorm ResNet + GRU): float32's own error on this step is large (≈5e-3 normwise
    against float64: BatchNorm over small maps), so the compiled step is held to the eager step's distance from
    a float64 reference, not to the eager step itself."""
    torch.compiler.reset()
    loss32, eager = _loss_and_grads({"channels_last": False})
    loss64, exact = _loss_and_grads({"channels_last": False}, dtype=torch.float64)
    compiled_loss, compiled = _loss_and_grads({"compile": True})
    assert compiled.keys() == eager.keys() == exact.keys()
    names = sorted(exact)
    ref = _flat(exact, names)
    eager_error = ((_flat(eager, names) - ref).norm() / ref.norm()).item()
    compiled_error = ((_flat(compiled, names) - ref).norm() / ref.norm()).item()
    assert compiled_error < 2 * eager_error + 1e-6, (compiled_error, eager_error)
    assert compiled_loss.item() == pytest.approx(loss64.item(), rel=1e-5)
    assert loss32.item() == pytest.approx(loss64.item(), rel=1e-5)


def test_a_compiled_run_resumes_bit_identically(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    options = dict(max_steps=6, checkpoint_every=2, compile=True)
    torch.use_deterministic_algorithms(False)
    _run(tiny_config(straight, **options))
    with pytest.raises(Interrupted):
        _run(tiny_config(resumed, **options), callbacks=[DieAfterCheckpoint(2)])
    tree = tiny_config(resumed, **options)
    tree["resume"] = True
    _run(tree)
    a, b = (load_file(d / "model" / "model.safetensors") for d in (straight, resumed))
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in a)  # the export keeps eager's keys
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]
              for d in (straight, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    assert not torch.are_deterministic_algorithms_enabled()  # the run's setting did not outlive it


def test_compiled_micro_batches_equal_the_compiled_whole_batch(tmp_path):
    from tests.train.test_chunked import _config, _relative_gap, _weights

    _run(_config(tmp_path / "whole", compile=True))
    _run(_config(tmp_path / "chunked", micro=32, compile=True))
    assert _relative_gap(_weights(tmp_path / "whole"), _weights(tmp_path / "chunked")) < 1e-5


def test_graph_breaks_are_said_once_by_place(tmp_path, capsys):
    torch.compiler.reset()  # the GRU's graph breaks are logged when it is first compiled
    _run(tiny_config(tmp_path / "run", max_steps=2, checkpoint_every=2, compile=True))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train.compile:")]
    assert len(lines) == 1
    assert "graph break(s) in the first step" in lines[0] and "encoders/text.py" in lines[0]
    assert "GRU" in lines[0]  # dynamo's own explanation of why


def test_graph_break_summary_names_each_place_once():
    messages = ["Graph break in user code at a.py:3\nGraph Break Reason: x\n  Explanation: no print\n",
                "Graph break in user code at a.py:3\n  Explanation: no print\n",
                "Graph break in user code at b.py:9\nGraph Break Reason: y\n"]
    assert graph_break_summary(messages) == ("train.compile: 2 graph break(s) in the first step, where the compiled "
                                             "graph returns to eager Python: a.py:3 (no print); b.py:9")
    assert graph_break_summary([]) == "train.compile: no graph breaks in the first step"


@pytest.mark.parametrize("switches", [{"channels_last": True}, {"channels_last": True, "compile": True}])
def test_a_channels_last_run_checkpoints_exports_and_resumes_bit_identically(tmp_path, switches):
    """Channels-last weights are saved in the default layout (safetensors refuses others) and load back."""
    def tree(run_dir):
        t = tiny_config(run_dir, max_steps=4, checkpoint_every=2, **switches)
        t["branches"]["image"].update(encoder={"name": "test_resnet"}, expander="32-32")
        return t

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(tree(straight))
    with pytest.raises(Interrupted):
        _run(tree(resumed), callbacks=[DieAfterCheckpoint(2)])
    again = tree(resumed)
    again["resume"] = True
    _run(again)
    a, b = (load_file(d / "model" / "model.safetensors") for d in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_vcreg_hooks_inside_compiled_towers_give_the_eager_run(tmp_path):
    """loss.vcreg_layers hooks blocks inside the compiled encoders: the run logs eager's losses and penalties."""
    logs = []
    for name, compiled in (("eager", False), ("compiled", True)):
        tree = tiny_config(tmp_path / name, max_steps=4, checkpoint_every=4, compile=compiled)
        tree["loss"] = {"vcreg_layers": ["blocks"]}
        _run(tree)
        logs.append([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
    for eager, compiled in zip(*logs):
        assert compiled["vcreg"] == pytest.approx(eager["vcreg"], rel=1e-4)
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)
