"""Config sections to objectives: the ``loss`` section, handed whole, and the branches' own coefficients.

``build_objective(loss, branches)`` returns the :class:`~mmvicreg.objective.modules.Objective` that ``loss.name``
names in the registry, :data:`mmvicreg.choices.OBJECTIVE_CLASSES` (``name -> "module:Class"``; adding an objective
is its module and one line there). The class gets the ``loss.*`` values its constructor names (an objective's
options are keyword arguments called as the ``loss`` keys: ``temperature``, ``margin``, ...), the branches and
their coefficients: branch b's μ_b, ν_b, γ_b are ``branches[b].variance_weight``, ``.covariance_weight`` and
``.gamma``, each falling back to the global ``loss.*`` value when ``None``. ``build_vcreg(loss, model)`` returns
the VCReg hooks of ``loss.vcreg_layers`` on ``model``, or ``None`` when that list is empty.

The sections were checked when they were made (:mod:`mmvicreg.config.schema`); nothing is checked again here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from typing import Any, Mapping

from torch import nn

from mmvicreg.choices import OBJECTIVE_CLASSES
from mmvicreg.config import BranchConfig, LossConfig, parse_branches
from mmvicreg.objective.modules import Objective
from mmvicreg.objective.vcreg import VCRegHooks, resolve_layers
from mmvicreg.objective.vicreg import BranchCoefficients

__all__ = ["branch_coefficients", "build_objective", "build_vcreg", "objective_class"]


def _or(value: float | None, default: float) -> float:
    return float(default if value is None else value)


def branch_coefficients(loss: LossConfig, branches: Mapping[str, BranchConfig]) -> dict[str, BranchCoefficients]:
    """Per-branch μ_b, ν_b, γ_b: the branch's own value where given, else the global ``loss.*`` one."""
    return {
        name: BranchCoefficients(
            _or(b.variance_weight, loss.variance_weight),
            _or(b.covariance_weight, loss.covariance_weight),
            _or(b.gamma, loss.gamma),
        )
        for name, b in branches.items()
    }


@functools.lru_cache(maxsize=None)
def objective_class(name: str) -> type[nn.Module]:
    """The class the registry (:data:`mmvicreg.choices.OBJECTIVE_CLASSES`) names for ``loss.name`` ``name``."""
    module, _, attr = OBJECTIVE_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def _keyword_options(cls: type[nn.Module]) -> set[str]:
    """The keyword-only options of the objective's constructors (its class's and its bases')."""
    return {
        p.name
        for klass in cls.__mro__
        if issubclass(klass, Objective) or klass is cls
        for p in inspect.signature(klass.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    }


def _loss_options(cls: type[nn.Module], loss: LossConfig) -> dict[str, Any]:
    """The ``loss.*`` values the objective's constructors take by name."""
    keys = {f.name for f in dataclasses.fields(loss)}
    return {k: getattr(loss, k) for k in sorted(keys & _keyword_options(cls))}


def build_objective(
    loss: LossConfig, branches: Mapping[str, BranchConfig | Mapping[str, Any]], *, gather: bool = True,
    num_classes: int | None = None, representation_dims: Mapping[str, int] | None = None,
) -> nn.Module:
    """The objective called ``loss.name`` (``vicreg``, ``infonce``, ``triplet``, ``barlow``,
    ``supervised``) over ``branches``.

    ``loss.pairs``, ``invariance_weight``, ``eps`` and ``covariance`` with the branches' coefficients configure
    the VICReg terms (the loss for ``vicreg``, detached diagnostics otherwise); ``covariance`` also picks Barlow
    Twins' dense/Gram form. ``loss.ablation`` applies to ``vicreg`` only; the other options to their own
    objective, and are ignored by the rest (so one config section serves every objective). ``gather``: use the
    global batch under torch.distributed. Branches given as plain mappings are parsed once here
    (:func:`mmvicreg.config.parse_branches`).

    ``num_classes`` (the training data's number of classes) and ``representation_dims`` (``{branch: encoder
    output width}``) are facts of the data and the model, handed to an objective whose constructor names them
    (``supervised``: its classifier head); the trainer gives both.
    """
    branches = parse_branches(branches)
    cls = objective_class(loss.name)
    options = _loss_options(cls, loss)
    facts = {"num_classes": num_classes, "representation_dims": representation_dims}
    for key, value in facts.items():
        if key in _keyword_options(cls):
            if value is None:
                raise ValueError(f"loss.name: {loss.name} needs {key} (the trainer takes it from the data and the "
                                 f"model); pass build_objective(..., {key}=...)")
            options[key] = value
    return cls(list(branches), **options, coefficients=branch_coefficients(loss, branches), gather=gather)


def build_vcreg(loss: LossConfig, model: nn.Module) -> VCRegHooks | None:
    """VCReg hooks on ``model``'s modules named in ``loss.vcreg_layers`` (μ = ``loss.vcreg_variance_weight``,
    ν = ``loss.vcreg_covariance_weight``, ``spatial``, ``form`` and ``fast`` = ``loss.vcreg_spatial``,
    ``loss.vcreg_form``, ``loss.vcreg_fast``); ``None`` when none is named.
    The word ``blocks`` names every block of every branch's encoder (:func:`~mmvicreg.objective.vcreg.block_names`:
    the placement of the VCReg paper, which regularises the output of each network block)."""
    if not loss.vcreg_layers:
        return None
    return VCRegHooks(
        model,
        resolve_layers(model, loss.vcreg_layers),
        variance_weight=loss.vcreg_variance_weight,
        covariance_weight=loss.vcreg_covariance_weight,
        spatial=loss.vcreg_spatial,
        form=loss.vcreg_form,
        fast=loss.vcreg_fast,
    )
