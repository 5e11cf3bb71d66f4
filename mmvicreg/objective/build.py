"""Config sections to objectives: the ``loss`` section, handed whole, and the branches' own coefficients.

``build_objective(loss, branches)`` returns the :class:`~mmvicreg.objective.modules.Objective` named by
``loss.name``; branch b's μ_b, ν_b, γ_b are ``branches[b].variance_weight``, ``.covariance_weight`` and
``.gamma``, each falling back to the global ``loss.*`` value when ``None``. ``build_vcreg(loss, model)`` returns
the VCReg hooks of ``loss.vcreg_layers`` on ``model``, or ``None`` when that list is empty.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from mmvicreg.choices import ABLATIONS, OBJECTIVES, VCREG_SPATIAL, check_choice
from mmvicreg.config import BranchConfig, LossConfig
from mmvicreg.objective.modules import (
    BarlowTwinsObjective,
    InfoNCEObjective,
    Objective,
    TripletObjective,
    VICRegObjective,
)
from mmvicreg.objective.numerics import check_algorithm
from mmvicreg.objective.vcreg import VCRegHooks
from mmvicreg.objective.vicreg import BranchCoefficients

__all__ = ["branch_coefficients", "build_objective", "build_vcreg"]


def _or(value: float | None, default: float) -> float:
    return float(default if value is None else value)


def branch_coefficients(
    loss: LossConfig, branches: Mapping[str, BranchConfig | Mapping[str, Any]]
) -> dict[str, BranchCoefficients]:
    """Per-branch μ_b, ν_b, γ_b: the branch's own value where given, else the global ``loss.*`` one."""
    coefficients = {}
    for name, section in branches.items():
        b = BranchConfig.from_mapping(section, f"branches.{name}")
        coefficients[name] = BranchCoefficients(
            _or(b.variance_weight, loss.variance_weight),
            _or(b.covariance_weight, loss.covariance_weight),
            _or(b.gamma, loss.gamma),
        )
    return coefficients


def build_objective(
    loss: LossConfig, branches: Mapping[str, BranchConfig | Mapping[str, Any]], *, gather: bool = True
) -> Objective:
    """The objective called ``loss.name`` (``vicreg``, ``infonce``, ``triplet``, ``barlow``) over ``branches``.

    ``loss.pairs``, ``invariance_weight``, ``eps`` and ``covariance`` with the branches' coefficients configure
    the VICReg terms (the loss for ``vicreg``, detached diagnostics otherwise); ``covariance`` also picks Barlow
    Twins' dense/Gram form. ``loss.ablation`` applies to ``vicreg`` only; the other options to their own
    objective, and are ignored by the rest (so one config section serves every objective). ``gather``: use the
    global batch under torch.distributed.
    """
    name = check_choice(loss.name, OBJECTIVES, "loss.name")
    if loss.ablation is not None:
        check_choice(loss.ablation, ABLATIONS, "loss.ablation")
        if name != "vicreg" and loss.ablation != "full":
            raise ValueError(f"loss.ablation={loss.ablation!r} applies to the vicreg objective only, not to {name!r}")
    shared: dict[str, Any] = dict(
        pairs=loss.pairs,
        invariance_weight=loss.invariance_weight,
        coefficients=branch_coefficients(loss, branches),
        eps=loss.eps,
        covariance=check_algorithm(loss.covariance, "loss.covariance"),
        gather=gather,
    )
    names = list(branches)
    if name == "infonce":
        return InfoNCEObjective(names, temperature=loss.temperature, learn_temperature=loss.learn_temperature, **shared)
    if name == "triplet":
        return TripletObjective(names, margin=loss.margin, max_violation=loss.max_violation, **shared)
    if name == "barlow":
        return BarlowTwinsObjective(names, barlow_lambda=loss.barlow_lambda, **shared)
    return VICRegObjective(names, ablation=loss.ablation, **shared)


def build_vcreg(loss: LossConfig, model: nn.Module) -> VCRegHooks | None:
    """VCReg hooks on ``model``'s modules named in ``loss.vcreg_layers`` (μ = ``loss.vcreg_variance_weight``,
    ν = ``loss.vcreg_covariance_weight``, ``spatial`` = ``loss.vcreg_spatial``); ``None`` when none is named."""
    if not loss.vcreg_layers:
        return None
    return VCRegHooks(
        model,
        loss.vcreg_layers,
        variance_weight=loss.vcreg_variance_weight,
        covariance_weight=loss.vcreg_covariance_weight,
        spatial=check_choice(loss.vcreg_spatial, VCREG_SPATIAL, "loss.vcreg_spatial"),
    )
