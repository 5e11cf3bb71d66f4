"""The VCReg penalty and hooks on intermediate layers, against the plain VICReg references."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmvicreg.objective import VCRegHooks, vcreg_penalty
from tests.helpers.reference import ref_covariance, ref_variance


# ----------------------------------------------------------------------------------------------- VCReg


class SmallCNN(nn.Module):
    def __init__(self, correlated: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.features = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 5)
        if correlated:  # every output channel of features.1 a multiple of the first: maximally correlated
            with torch.no_grad():
                w = self.features[1].weight
                w.copy_(w[:1] * torch.linspace(0.5, 2.0, 6).view(6, 1, 1, 1))
                self.features[1].bias.zero_()

    def forward(self, x):
        return self.head(self.features(self.stem(x)).mean(dim=(2, 3)))


def _images(n=4, seed=0):
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def test_vcreg_hooks_penalise_correlated_features_and_are_differentiable():
    torch.manual_seed(0)
    model = SmallCNN(correlated=True)
    hooks = VCRegHooks(model, ["features.1"], variance_weight=1.0, covariance_weight=0.04)
    x = _images()
    logits = model(x)
    penalty = hooks.loss()
    assert penalty > 0
    # The reference: every spatial location is a sample, (n, c, h, w) -> (n*h*w, c).
    feats = model.features[1](model.stem(x).relu())
    rows = feats.permute(0, 2, 3, 1).reshape(-1, 6)
    torch.testing.assert_close(penalty, ref_variance(rows) + 0.04 * ref_covariance(rows), rtol=1e-5, atol=1e-6)
    assert ref_covariance(rows) > 10 * ref_covariance(torch.randn_like(rows) * rows.std(0))

    (F.cross_entropy(logits, torch.arange(4)) + penalty).backward()
    for p in (model.stem.weight, model.features[1].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert "vcreg/features.1" in hooks.last_terms


def test_vcreg_training_steps_lower_the_penalty():
    torch.manual_seed(0)
    model = SmallCNN(correlated=True)
    hooks = VCRegHooks(model, ["features.1"], covariance_weight=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    values = []
    for _ in range(15):
        model(_images(8))
        penalty = hooks.loss()
        optimizer.zero_grad()
        penalty.backward()
        optimizer.step()
        values.append(penalty.item())
    assert values[-1] < 0.8 * values[0], values


def test_vcreg_spatial_modes():
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    pooled = vcreg_penalty(x, spatial="pool")
    torch.testing.assert_close(pooled, ref_variance(x.mean((2, 3))) + 0.04 * ref_covariance(x.mean((2, 3))))
    flat = vcreg_penalty(x, spatial="flatten", covariance_weight=0.0)
    torch.testing.assert_close(flat, ref_variance(x.flatten(1)))
    tokens = torch.randn(2, 7, 4, dtype=torch.float64)  # (n, L, d): each token is a sample
    torch.testing.assert_close(vcreg_penalty(tokens, covariance_weight=0.0), ref_variance(tokens.reshape(14, 4)))
    conv1d = torch.randn(2, 4, 7, dtype=torch.float64)  # (n, c, L) needs channel_dim=1
    torch.testing.assert_close(
        vcreg_penalty(conv1d, channel_dim=1, covariance_weight=0.0), ref_variance(conv1d.transpose(1, 2).reshape(14, 4))
    )


def test_vcreg_unknown_layer_names_close_matches():
    model = SmallCNN(correlated=False)
    with pytest.raises(ValueError, match=r"'featurs.1'.*did you mean 'features.1'"):
        VCRegHooks(model, ["featurs.1"])
    with pytest.raises(ValueError, match="at least one layer"):
        VCRegHooks(model, [])


def test_vcreg_remove_and_no_grad_stop_collection():
    model = SmallCNN(correlated=False)
    with VCRegHooks(model, ["stem", "features"]) as hooks:
        with torch.no_grad():
            model(_images())  # evaluation: nothing is kept
        with pytest.raises(RuntimeError, match="collected no activations"):
            hooks.loss()
        model(_images())
        model(_images(seed=1))  # two calls, two terms per layer
        assert len(hooks._collected) == 4
        hooks.loss()
        assert hooks._collected == []
    model(_images())  # the context manager removed the hooks
    with pytest.raises(RuntimeError, match="collected no activations"):
        hooks.loss()
    assert not model.stem._forward_hooks
