"""The builders (a ``loss`` section handed whole, the branches' own coefficients) and the one-check-per-call rule."""

from collections import Counter

import pytest
import torch
from torch import nn

import mmvicreg.objective.numerics as numerics
import mmvicreg.objective.vcreg as vcreg_module
import mmvicreg.objective.vicreg as vicreg_module
from mmvicreg.choices import OBJECTIVES

PAIRWISE = tuple(n for n in OBJECTIVES if n != "supervised")  # supervised: one branch and labels (test_supervised.py)
from mmvicreg.config import BranchConfig, LossConfig, parse_branch
from mmvicreg.objective import (
    BranchCoefficients,
    InfoNCEObjective,
    ObjectiveOutput,
    VCRegHooks,
    VICRegObjective,
    barlow_twins_loss,
    branch_coefficients,
    build_objective,
    build_vcreg,
    infonce_loss,
    multi_branch_vicreg,
    triplet_loss,
    vcreg_penalty,
    vicreg_loss,
)


def _zs(n=8, d=5, names=("image", "text")):
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(n, d, generator=g, dtype=torch.float64) for k in names}


def test_branch_coefficients_fall_back_to_the_loss_section():
    loss = LossConfig(variance_weight=25.0, covariance_weight=1.0, gamma=1.0)
    branches = {"image": BranchConfig(variance_weight=10.0), "text": BranchConfig(covariance_weight=3.0, gamma=0.5)}
    assert branch_coefficients(loss, branches) == {
        "image": BranchCoefficients(10.0, 1.0, 1.0),
        "text": BranchCoefficients(25.0, 3.0, 0.5),
    }
    # A plain mapping is read as a BranchConfig by the config's one branch parser.
    assert branch_coefficients(loss, {"a": parse_branch({"gamma": 2})})["a"] == BranchCoefficients(25.0, 1.0, 2.0)


def test_build_objective_hands_the_loss_section_whole():
    loss = LossConfig(invariance_weight=5.0, variance_weight=20.0, eps=1e-3, covariance="gram")
    branches = {"image": BranchConfig(variance_weight=10.0, gamma=0.5), "text": BranchConfig()}
    objective = build_objective(loss, branches, gather=False)
    assert isinstance(objective, VICRegObjective) and objective.branch_names == ["image", "text"]
    settings = (objective.invariance_weight, objective.eps, objective.covariance, objective.gather)
    assert settings == (5.0, 1e-3, "gram", False)
    zs = _zs()
    coefficients = {"image": BranchCoefficients(10.0, 1.0, 0.5), "text": BranchCoefficients(20.0, 1.0, 1.0)}
    ref = multi_branch_vicreg(zs, invariance_weight=5.0, coefficients=coefficients, eps=1e-3, covariance="gram")
    assert torch.equal(objective(zs).loss, ref.loss)

    infonce = build_objective(LossConfig(name="infonce", temperature=0.2, learn_temperature=False), branches)
    assert isinstance(infonce, InfoNCEObjective) and infonce.temperature == pytest.approx(0.2)
    assert [type(build_objective(LossConfig(name=n), branches)).name for n in PAIRWISE] == list(PAIRWISE)


def test_build_objective_names_the_bad_setting():
    branches = {"a": BranchConfig(), "b": BranchConfig()}
    with pytest.raises(ValueError, match=r"loss.name is 'vicrge' \(did you mean 'vicreg'\?\); choose one of vicreg"):
        build_objective(LossConfig(name="vicrge"), branches)
    with pytest.raises(ValueError, match="loss.ablation is 'none'.*choose one of full, invariance_variance"):
        build_objective(LossConfig(ablation="none"), branches)
    with pytest.raises(ValueError, match="loss.covariance is 'svd'.*choose one of auto, dense, gram"):
        build_objective(LossConfig(covariance="svd"), branches)


def test_build_vcreg_is_none_without_layers_and_hooks_otherwise():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    assert build_vcreg(LossConfig(), model) is None
    loss = LossConfig(vcreg_layers=["0"], vcreg_variance_weight=2.0, vcreg_covariance_weight=0.5, vcreg_spatial="pool")
    with build_vcreg(loss, model) as hooks:
        assert isinstance(hooks, VCRegHooks)
        x = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        model.double()(x)
        torch.testing.assert_close(
            hooks.loss(), vcreg_penalty(model[0](x), variance_weight=2.0, covariance_weight=0.5, spatial="pool")
        )
    with pytest.raises(ValueError, match="loss.vcreg_spatial is 'pooled'.*choose one of locations, pool, flatten"):
        build_vcreg(LossConfig(vcreg_layers=["0"], vcreg_spatial="pooled"), model)


def test_replace_keeps_the_objective_terms():
    out = build_objective(LossConfig(name="triplet"), {"a": BranchConfig(), "b": BranchConfig()})(_zs(names="ab"))
    replaced = out._replace(loss=out.loss + 1)
    assert isinstance(replaced, ObjectiveOutput) and replaced.terms == out.terms
    assert torch.equal(replaced.loss, out.loss + 1) and torch.equal(replaced.covariance, out.covariance)


# ----------------------------------------------------------------------------------------------- one check per call


@pytest.fixture
def checks(monkeypatch):
    """Counts ``check_embeddings`` calls by the name of the tensor checked, wherever the package calls it."""
    seen = Counter()
    original = numerics.check_embeddings

    def counting(z, name="z", min_rows=2):
        seen[name] += 1
        return original(z, name, min_rows)

    for module in (numerics, vicreg_module, vcreg_module):
        monkeypatch.setattr(module, "check_embeddings", counting)
    return seen


def test_each_public_call_checks_each_input_once(checks):
    za, zb = _zs(names="ab").values()
    for call in (
        lambda: vicreg_loss(za, zb),
        lambda: infonce_loss(za, zb, 10.0),
        lambda: triplet_loss(za, zb),
        lambda: barlow_twins_loss(za, zb),
    ):
        checks.clear()
        call()
        assert checks == {"z_a": 1, "z_b": 1}
    checks.clear()
    multi_branch_vicreg(_zs(names=("x", "y", "w")))
    assert checks == {"x": 1, "y": 1, "w": 1}
    checks.clear()
    vcreg_penalty(torch.randn(2, 3, 4, 4))
    assert checks == {"the VCReg features": 1}


@pytest.mark.parametrize("name", PAIRWISE)
def test_each_objective_forward_checks_each_input_once(checks, name):
    objective = build_objective(LossConfig(name=name), {n: BranchConfig() for n in ("x", "y", "w")})
    checks.clear()
    objective(_zs(names=("x", "y", "w")))  # three pairs and the diagnostics: still one check per tensor
    assert checks == {"x": 1, "y": 1, "w": 1}


# ----------------------------------------------------------------------------------------------- the registry


class HalvedVICReg(VICRegObjective):
    """An objective added by its module and one registry line (the test below): VICReg at half weight."""

    name = "halved"

    def forward(self, zs):
        out = super().forward(zs)
        return out._replace(loss=out.loss / 2)


def test_every_registry_entry_is_an_objective_named_as_its_key():
    from mmvicreg.choices import OBJECTIVE_CLASSES
    from mmvicreg.objective import Objective, SupervisedObjective, objective_class

    assert tuple(OBJECTIVE_CLASSES) == OBJECTIVES
    for name in OBJECTIVE_CLASSES:
        cls = objective_class(name)
        assert issubclass(cls, SupervisedObjective if name == "supervised" else Objective) and cls.name == name


def test_an_objective_is_its_module_and_one_registry_line(monkeypatch):
    from mmvicreg.choices import OBJECTIVE_CLASSES

    monkeypatch.setitem(OBJECTIVE_CLASSES, "halved", f"{__name__}:HalvedVICReg")
    branches = {"a": BranchConfig(variance_weight=10.0), "b": BranchConfig()}
    objective = build_objective(LossConfig(name="halved", invariance_weight=5.0), branches, gather=False)
    assert isinstance(objective, HalvedVICReg) and objective.invariance_weight == 5.0
    reference = build_objective(LossConfig(invariance_weight=5.0), branches, gather=False)
    zs = _zs(names="ab")
    torch.testing.assert_close(objective(zs).loss, reference(zs).loss / 2)


def test_each_objective_gets_the_loss_keys_its_constructor_names():
    branches = {"a": BranchConfig(), "b": BranchConfig()}
    triplet = build_objective(LossConfig(name="triplet", margin=0.5, max_violation=False, eps=1e-3), branches)
    assert (triplet.margin, triplet.max_violation, triplet.eps) == (0.5, False, 1e-3)
    assert build_objective(LossConfig(name="barlow", barlow_lambda=0.01), branches).barlow_lambda == 0.01
    assert build_objective(LossConfig(ablation="invariance"), branches).ablation == "invariance"
    assert build_objective(LossConfig(pairs=[["b", "a"]]), branches).pairs == [("b", "a")]
