"""VCReg's paper form and fast path: against independent transcriptions and against autograd on the same penalty."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml

from mmvicreg.config import ConfigError, load_config
from mmvicreg.objective import vcreg_penalty
from mmvicreg.objective.vcreg import VCRegHooks, resolve_layers
from mmvicreg.objective.vcreg_paper import as_samples, fast_vcreg, vcreg_terms
from tests.objective.test_vcreg_blocks import run_tiny

SHAPES = [((6, 5, 4, 4), "locations"), ((6, 7, 9), "locations"), ((12, 10), "locations"), ((6, 5, 4, 4), "flatten")]


def _paper_reference(z: torch.Tensor, alpha: float, beta: float, gamma: float, eps: float, delta: float):
    """The paper form written another way: torch.cov and F.smooth_l1_loss (h_δ(x) = 2δ·smooth_l1_δ(x))."""
    m, d = z.shape
    c = torch.cov(z.T)
    off = c[~torch.eye(d, dtype=torch.bool)]
    variance = alpha / d * torch.clamp(gamma - torch.sqrt(torch.diagonal(c) + eps), min=0).sum()
    smooth = 2 * delta * F.smooth_l1_loss(off, torch.zeros_like(off), beta=delta, reduction="sum")
    return variance + beta * (m - 1) / (d * (d - 1)) * smooth


def _published_fast_gradient(z: torch.Tensor, alpha: float, beta: float, eps: float) -> torch.Tensor:
    """The hand-written gradient of the public VCReg layer, transcribed: −α/(d(m−1))·X·thr(rsqrt(C_jj+ε)) +
    4β/(d(d−1))·X·C_off, where thr keeps values above 1 (the hinge is active) and zeroes the rest."""
    m, d = z.shape
    x = z - z.mean(dim=0)
    c = x.T @ x / (m - 1)
    diag = F.threshold(torch.rsqrt(c.diagonal() + eps), 1.0, 0.0)
    return -alpha / (d * (m - 1)) * diag * x + 4 * beta / (d * (d - 1)) * x @ c.fill_diagonal_(0)


def _input(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.7 * torch.randn(*shape, generator=g, dtype=torch.float64)).requires_grad_()


def test_paper_form_equals_an_independent_transcription():
    z = _input((40, 12)).detach()
    for delta in (1.0, 0.05):
        ours = vcreg_penalty(z, form="paper", variance_weight=1.3, covariance_weight=0.2, delta=delta)
        ref = _paper_reference(z, 1.3, 0.2, 1.0, 1e-4, delta)
        assert torch.allclose(ours, ref, rtol=1e-12), (delta, ours, ref)
    # the vicreg form through the paper module's code equals today's VICReg terms
    assert torch.allclose(vcreg_terms(z, "vicreg", 1.3, 0.2, 1.0, 1e-4, None),
                          vcreg_penalty(z, variance_weight=1.3, covariance_weight=0.2), rtol=1e-12)


def test_fast_path_gradient_is_the_published_one():
    """With x² (δ = ∞) the fast path's gradient is the public layer's hand-written gradient."""
    x = _input((50, 8))
    with torch.no_grad():
        x[:, :4] *= 3.0  # the hinge is active on some dimensions (std < 1), not on the others
    out, value = fast_vcreg(x, form="paper", variance_weight=0.64, covariance_weight=0.08, eps=1e-5,
                            delta=math.inf)
    value.backward()
    expected = _published_fast_gradient(x.detach(), 0.64, 0.08, 1e-5)
    assert torch.allclose(x.grad, expected, rtol=1e-10, atol=1e-14)
    assert out.data_ptr() == x.data_ptr() and torch.equal(out, x)  # the forward is the identity


@pytest.mark.parametrize("form", ["paper", "vicreg"])
@pytest.mark.parametrize("delta", [None, 1.0, 0.05])
@pytest.mark.parametrize("shape,spatial", SHAPES)
def test_fast_gradient_equals_autograd_on_the_same_penalty(form, delta, shape, spatial):
    x = _input(shape)
    w = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kw = dict(form=form, variance_weight=1.3, covariance_weight=0.2, gamma=1.0, eps=1e-4, delta=delta)
    out, value = fast_vcreg(x, spatial=spatial, **kw)
    ((out * w).sum() + 3 * value).backward()
    fast = x.grad.clone()
    x.grad = None
    ref = vcreg_terms(as_samples(x, spatial, None), **kw)
    ((x * w).sum() + 3 * ref).backward()
    assert torch.allclose(value, ref.detach(), rtol=1e-12)
    assert (fast - x.grad).abs().max() <= 1e-6 * x.grad.abs().max()


def _resnet_grads(fast: bool, scale: float = 1.0):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).double()
    hooks = VCRegHooks(model, resolve_layers(model, ["blocks"]), form="paper", fast=fast,
                       variance_weight=1.0, covariance_weight=0.04)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    model(x)
    penalty = hooks.loss()
    (scale * penalty).backward()
    return penalty.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_hooks_fast_and_autograd_give_the_same_value_and_gradients_on_every_block():
    """resnet18's 8 blocks, the paper form: every parameter's gradient agrees to 1e-6; a scaled loss (micro-batch
    averaging, fp16 loss scaling) scales the fast path's gradient too."""
    slow_value, slow = _resnet_grads(fast=False)
    fast_value, fast = _resnet_grads(fast=True)
    assert torch.allclose(slow_value, fast_value, rtol=1e-12)
    assert slow.keys() == fast.keys() and len(slow) > 20
    for name in slow:
        assert (slow[name] - fast[name]).abs().max() <= 1e-6 * slow[name].abs().max().clamp_min(1e-30), name
    _, quarter = _resnet_grads(fast=True, scale=0.25)
    assert all(torch.allclose(quarter[n], 0.25 * fast[n], rtol=1e-10, atol=1e-20) for n in fast)


def test_fast_hooks_pass_a_gru_tuple_through():
    torch.manual_seed(0)
    gru = torch.nn.GRU(5, 6, batch_first=True)
    model = torch.nn.Sequential(gru)
    hooks = VCRegHooks(model, resolve_layers(model, ["blocks"]), form="paper", fast=True)
    out, h = model(torch.randn(8, 3, 5))
    assert isinstance(out, torch.Tensor) and h.shape == (1, 8, 6)
    value = hooks.loss()
    value.backward()
    assert value > 0 and gru.weight_hh_l0.grad.abs().sum() > 0


def test_config_refuses_what_it_would_ignore(tmp_path):
    with pytest.raises(ConfigError, match="loss.vcreg_fast set but loss.vcreg_layers is empty"):
        load_config({}, ["loss.vcreg_fast=true"])
    with pytest.raises(ConfigError, match="loss.vcreg_fast needs loss.vcreg_spatial"):
        load_config({}, ["loss.vcreg_layers=[blocks]", "loss.vcreg_fast=true", "loss.vcreg_spatial=pool"])
    with pytest.raises(ConfigError, match="paper"):
        load_config({}, ["loss.vcreg_layers=[blocks]", "loss.vcreg_form=papr"])


def _losses(tmp_path, name, loss):
    """The logged loss of each of 3 steps of the tiny run with ``loss``."""
    run_tiny(tmp_path, name, loss, max_steps=3)
    records = [yaml.safe_load(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def test_paper_form_and_fast_path_from_the_command_line(tmp_path):
    """Three steps with the paper form on every block: the fast path follows autograd's trajectory."""
    plain = _losses(tmp_path, "plain", {})
    paper = {"vcreg_layers": ["blocks"], "vcreg_form": "paper", "vcreg_covariance_weight": 0.5}
    slow = _losses(tmp_path, "slow", paper)
    fast = _losses(tmp_path, "fast", {**paper, "vcreg_fast": True})
    assert len(slow) == 3 and slow[0] > plain[0] + 1e-3
    assert fast == pytest.approx(slow, rel=1e-4)
