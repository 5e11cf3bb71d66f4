"""The objectives: VICReg (its three terms, two- and N-branch forms), baselines, VCReg, and their builder.

* :mod:`~mmvicreg.objective.vicreg`: ``invariance_term``, ``variance_term``, ``covariance_term``,
  ``vicreg_loss`` (Eq. 6), ``multi_branch_vicreg``, ``VICRegLoss``;
* :mod:`~mmvicreg.objective.baselines`: ``infonce_loss``, ``triplet_loss``, ``barlow_twins_loss``;
* :mod:`~mmvicreg.objective.modules`: the ``nn.Module`` objectives the trainer optimises;
* :mod:`~mmvicreg.objective.supervised`: ``SupervisedObjective`` (cross-entropy of a linear head on a branch's
  representation; ``loss.name: supervised``) and ``ReadsTargets`` (an objective that reads labels);
* :mod:`~mmvicreg.objective.vcreg`: ``vcreg_penalty`` and ``VCRegHooks`` for intermediate layers;
* :mod:`~mmvicreg.objective.build`: ``build_objective(loss, branches)``, ``build_vcreg(loss, model)``; the
  objective registry is :data:`mmvicreg.choices.OBJECTIVE_CLASSES` (``loss.name -> "module:Class"``, read by
  ``objective_class``);
* :mod:`~mmvicreg.objective.diagnostics`: ``embedding_std``, ``rankme``;
* :mod:`~mmvicreg.objective.numerics`: the one input check, float32 statistics, the Gram rule.
"""

from mmvicreg.objective.baselines import barlow_twins_loss, infonce_loss, triplet_loss
from mmvicreg.objective.build import branch_coefficients, build_objective, build_vcreg, objective_class
from mmvicreg.objective.diagnostics import embedding_std, rankme
from mmvicreg.objective.modules import (
    BarlowTwinsObjective,
    InfoNCEObjective,
    Objective,
    ObjectiveOutput,
    TripletObjective,
    VICRegObjective,
)
from mmvicreg.objective.numerics import check_embeddings
from mmvicreg.objective.supervised import ReadsTargets, SupervisedObjective
from mmvicreg.objective.vcreg import VCRegHooks, vcreg_penalty
from mmvicreg.objective.vicreg import (
    BranchCoefficients,
    MultiBranchOutput,
    VICRegLoss,
    VICRegOutput,
    covariance_term,
    invariance_term,
    multi_branch_vicreg,
    variance_term,
    vicreg_loss,
)

__all__ = [
    "BarlowTwinsObjective",
    "BranchCoefficients",
    "InfoNCEObjective",
    "MultiBranchOutput",
    "Objective",
    "ObjectiveOutput",
    "ReadsTargets",
    "SupervisedObjective",
    "TripletObjective",
    "VCRegHooks",
    "VICRegLoss",
    "VICRegObjective",
    "VICRegOutput",
    "barlow_twins_loss",
    "branch_coefficients",
    "build_objective",
    "build_vcreg",
    "check_embeddings",
    "covariance_term",
    "embedding_std",
    "infonce_loss",
    "invariance_term",
    "multi_branch_vicreg",
    "objective_class",
    "rankme",
    "triplet_loss",
    "variance_term",
    "vcreg_penalty",
    "vicreg_loss",
]
