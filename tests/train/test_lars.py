"""LARS is the published update (facebookresearch/vicreg main_vicreg.py): every matrix adapted whatever the
weight decay, biases and norms neither decayed nor adapted, the ratio η‖w‖/‖g + wd·w‖ — checked against an
independent transcription in float64 NumPy, over two steps (the momentum buffer included)."""

import numpy as np
import pytest
import torch

from mmvicreg.config import load_config
from mmvicreg.train.lars import LARS
from mmvicreg.train.optim import build_optimizer
from tests.helpers.configs import tiny_config


def published_steps(weights, grads, lr, wd, eta, momentum):
    """The paper's code, transcribed: for each step, ``dp = g + wd·p`` (matrices), ``q = η‖p‖/‖dp‖``
    (matrices; 1 when a norm is 0), ``mu = m·mu + dp``, ``p -= lr·mu``."""
    weights = {k: v.astype(np.float64).copy() for k, v in weights.items()}
    mu = {k: np.zeros_like(v) for k, v in weights.items()}
    for step_grads in grads:
        for name, p in weights.items():
            dp = step_grads[name].astype(np.float64)
            if p.ndim > 1:  # exclude_bias_and_norm: ndim == 1 is neither decayed nor adapted
                dp = dp + wd * p
                pn, un = np.linalg.norm(p), np.linalg.norm(dp)
                dp = dp * (eta * pn / un if pn > 0 and un > 0 else 1.0)
            mu[name] = momentum * mu[name] + dp
            weights[name] = p - lr * mu[name]
    return weights


@pytest.mark.parametrize("wd", [0.0, 1e-6, 1e-2])
def test_two_steps_equal_the_published_update(wd):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8).double()
    before = {n: p.detach().numpy().copy() for n, p in layer.named_parameters()}
    groups = [{"params": [layer.weight], "weight_decay": wd}, {"params": [layer.bias], "weight_decay": 0.0}]
    opt = LARS(groups, lr=1.6, momentum=0.9, eta=0.001)
    grads = []
    for _ in range(2):
        step = {n: torch.randn_like(p) for n, p in layer.named_parameters()}
        for n, p in layer.named_parameters():
            p.grad = step[n].clone()
        grads.append({n: g.numpy() for n, g in step.items()})
        opt.step()
    expected = published_steps(before, grads, lr=1.6, wd=wd, eta=0.001, momentum=0.9)
    for n, p in layer.named_parameters():
        got, want = p.detach().numpy(), expected[n]
        moved = want - before[n]
        assert np.abs((got - before[n]) - moved).max() <= 1e-6 * np.abs(moved).max(), n


def test_weight_decay_zero_still_adapts_matrices():
    """The issue's case: at wd 0 a weight of norm ≈ 0.9 moves by about lr·η·‖w‖, not by plain SGD's lr·‖g‖."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(64, 64) * 0.9 / 64)
    start = w.detach().clone()
    w.grad = torch.randn(64, 64)
    LARS([{"params": [w], "weight_decay": 0.0}], lr=1.6, eta=0.001).step()
    moved = torch.linalg.vector_norm(w.detach() - start).item()
    assert moved == pytest.approx(1.6 * 0.001 * torch.linalg.vector_norm(start).item(), rel=1e-5)


def test_a_run_with_lars_builds_the_published_optimiser(tmp_path):
    tree = tiny_config(tmp_path)
    tree["train"]["optimizer"] = {"name": "lars", "lr": 0.2, "weight_decay": 0.0}
    config = load_config(tree)
    opt = build_optimizer(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)), config.train)
    assert isinstance(opt, LARS) and opt.defaults["eta"] == 0.001
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0]
