"""The VICReg objective: invariance, variance and covariance terms (Bardes, Ponce & LeCun, ICLR 2022).

For embeddings ``Z_a, Z_b`` of shape (n, d), one row per sample:

* invariance  ``s(Z_a, Z_b) = (1/(n d)) Σ_ij (Z_a − Z_b)_ij²``                       (``F.mse_loss``)
* variance    ``v(Z) = (1/d) Σ_j max(0, γ − sqrt(Var(z^j) + ε))``, unbiased variance
* covariance  ``c(Z) = (1/d) Σ_{i≠j} C_ij²``, ``C = Zcᵀ Zc / (n − 1)``, ``Zc = Z − mean(Z)``

One sum, over N branches and the pairs compared (:func:`multi_branch_vicreg`; the trainer's
:class:`~mmvicreg.objective.modules.VICRegObjective` calls the same sum):

    ``L = λ·Σ_{(a,b) ∈ pairs} s(Z_a, Z_b) + (Σ_b μ_b·v_{γ_b}(Z_b))/2 + Σ_b ν_b·c(Z_b)``

Two branches (:func:`vicreg_loss` and its module :class:`VICRegLoss`, Eq. 6 with per-branch coefficients) are
its named case ``pairs = [(a, b)]``:

    ``L = λ·s(Z_a, Z_b) + (μ_a·v(Z_a) + μ_b·v(Z_b))/2 + ν_a·c(Z_a) + ν_b·c(Z_b)``

The /2 is the published code's scaling (facebookresearch/vicreg), for which λ = μ = 25, ν = 1 were tuned; the
paper's equation omits it, so a library that follows the equation equals this one with μ_paper = 2·μ here.

Every objective returns one plain type, :class:`ObjectiveOutput` (``loss``, the unweighted ``invariance``,
``variance``, ``covariance``, the ``per_branch`` terms, and the objective's own ``terms``); the two-branch
forms return its first four fields as a :class:`VICRegOutput`. ``MultiBranchOutput`` is another name of
:class:`ObjectiveOutput`.

Under data parallelism with ``gather`` on, ``v`` and ``c`` see the global batch (every rank's rows, gathered
with gradients); ``s`` sees the local batch, as published. Statistics run in float32 with autocast off and the
covariance picks its dense or Gram form (:mod:`mmvicreg.objective.numerics`). Each public function checks its
inputs once; the private ``_invariance``, ``_variance``, ``_covariance`` and ``_vicreg_sum`` take checked ones.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from mmvicreg.choices import VARIANCE_MODES, check_choice
from mmvicreg.distributed import gather_with_grad
from mmvicreg.objective.numerics import (
    check_algorithm,
    check_embeddings,
    check_pair,
    check_same_shape,
    min_rows,
    no_autocast,
    stats_precision,
    sum_off_diagonal_squares,
    use_gram,
)

Number = Union[float, int]
PerBranch = Union[Number, Sequence[Number]]

__all__ = [
    "BranchCoefficients",
    "MultiBranchOutput",
    "ObjectiveOutput",
    "VICRegLoss",
    "VICRegOutput",
    "all_pairs",
    "check_branches",
    "covariance_term",
    "invariance_term",
    "multi_branch_vicreg",
    "variance_term",
    "vicreg_loss",
]


# ----------------------------------------------------------------------------------------------- the terms


def _invariance(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    with no_autocast(z_a.device):
        return F.mse_loss(stats_precision(z_a), stats_precision(z_b))


def _variance(z: torch.Tensor, gamma: float, eps: float, mode: str = "std") -> torch.Tensor:
    with no_autocast(z.device):
        var = stats_precision(z).var(dim=0, unbiased=True)
        spread = torch.sqrt(var + eps) if mode == "std" else var
        return F.relu(gamma - spread).mean()


def _covariance(z: torch.Tensor, algorithm: str) -> torch.Tensor:
    n, d = z.shape
    with no_autocast(z.device):
        z = stats_precision(z)
        zc = z - z.mean(dim=0)
        return sum_off_diagonal_squares(zc, use_gram(n, d, algorithm)) / ((n - 1) ** 2 * d)


def invariance_term(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """``s(Z_a, Z_b) = (1/(n d)) Σ_ij (Z_a − Z_b)_ij²``, the mean squared error over all n·d entries."""
    check_pair(z_a, z_b)
    return _invariance(z_a, z_b)


def variance_term(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4, mode: str = "std") -> torch.Tensor:
    """Hinge on each dimension's spread across the batch, averaged over dimensions.

    ``mode="std"`` (published): ``(1/d) Σ_j max(0, γ − sqrt(Var(z^j) + ε))``.
    ``mode="var"`` (the simplified form some write-ups use): ``(1/d) Σ_j max(0, γ − Var(z^j))``.
    ``Var`` is the unbiased (n − 1) variance over the batch.
    """
    check_embeddings(z, "z")
    check_choice(mode, VARIANCE_MODES, "variance_term mode")
    return _variance(z, gamma, eps, mode)


def covariance_term(z: torch.Tensor, algorithm: str = "auto") -> torch.Tensor:
    """``c(Z) = (1/d) Σ_{i≠j} C_ij²`` with ``C = Zcᵀ Zc / (n − 1)``.

    ``algorithm``: ``"dense"`` builds C (d×d); ``"gram"`` uses
    ``Σ_{i≠j} C_ij² = (‖Zc Zcᵀ‖_F² − Σ_j (Σ_i Zc_ij²)²) / (n − 1)²`` and never builds a d×d matrix;
    ``"auto"`` takes gram when n < d. Both give the same value and gradient.
    """
    check_embeddings(z, "z")
    check_algorithm(algorithm, "covariance algorithm")
    return _covariance(z, algorithm)


# ----------------------------------------------------------------------------------------------- the output


class ObjectiveOutput(NamedTuple):
    """What every objective returns: the weighted ``loss`` and the unweighted VICReg terms.

    ``invariance`` (summed over pairs), ``variance`` (averaged over branches), ``covariance`` (summed over
    branches); ``per_branch[b]`` holds branch b's ``"variance"`` and ``"covariance"``; ``terms`` the objective's
    own detached scalars (e.g. ``"vicreg"``, ``"infonce/image-text"``, ``"temperature"``; none for
    :func:`multi_branch_vicreg`). Scalars are tensors. A plain ``NamedTuple``: ``out._replace(loss=...)`` keeps
    the rest.
    """

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor
    per_branch: dict[str, dict[str, torch.Tensor]]
    terms: Mapping[str, torch.Tensor] = MappingProxyType({})  # read-only: an output made without terms


MultiBranchOutput = ObjectiveOutput  # the name multi_branch_vicreg's output had first


class VICRegOutput(NamedTuple):
    """The two-branch forms' output: ``ObjectiveOutput``'s first four fields (the weighted ``loss`` and the
    unweighted ``invariance``, ``variance = (v(Z_a) + v(Z_b))/2``, ``covariance = c(Z_a) + c(Z_b)``)."""

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor


class BranchCoefficients(NamedTuple):
    """One branch's regularisation: variance weight μ_b, covariance weight ν_b, variance target γ_b."""

    variance_weight: float = 25.0
    covariance_weight: float = 1.0
    gamma: float = 1.0


# ----------------------------------------------------------------------------------------------- the one sum


def all_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair of branches, in order: ``[(b0, b1), (b0, b2), ..., (b1, b2), ...]``."""
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def check_branches(
    embeddings: Mapping[str, torch.Tensor], pairs: Sequence[tuple[str, str]], rows: int, what: str
) -> None:
    """One check of N branches' embeddings: every paired branch present, every tensor an (n, d) float matrix
    (``rows`` rows at least for a paired branch), and the two sides of each pair of the same shape."""
    used = list(dict.fromkeys(name for pair in pairs for name in pair))
    missing = [name for name in used if name not in embeddings]
    if missing:
        raise ValueError(f"no embeddings for branches {missing}; {what} got {list(embeddings)}")
    for name, z in embeddings.items():
        check_embeddings(z, name, min_rows=rows if name in used else 1)
    for a, b in pairs:
        check_same_shape(embeddings[a], embeddings[b], (a, b))


def _vicreg_sum(
    embeddings: Mapping[str, torch.Tensor],
    pairs: Sequence[tuple[str, str]],
    invariance_weight: float,
    coefficients: Mapping[str, BranchCoefficients],
    eps: float,
    gather: bool,
    covariance: str,
) -> ObjectiveOutput:
    """The VICReg sum of checked embeddings (the module docstring's equation; every public form calls it).

    Each paired branch is gathered once (every rank's rows) for its variance and covariance; the invariance
    uses the local rows. The terms are added in one fixed order, so equal inputs give bit-equal losses.
    """
    s = sum(_invariance(embeddings[a], embeddings[b]) for a, b in pairs)
    per_branch: dict[str, dict[str, torch.Tensor]] = {}
    coef: dict[str, BranchCoefficients] = {}
    for name in dict.fromkeys(n for pair in pairs for n in pair):
        coef[name] = coefficients.get(name, BranchCoefficients())
        z_all = gather_with_grad(embeddings[name]) if gather else embeddings[name]  # every rank's rows
        per_branch[name] = {
            "variance": _variance(z_all, coef[name].gamma, eps),
            "covariance": _covariance(z_all, covariance),
        }
    v = {name: t["variance"] for name, t in per_branch.items()}
    c = {name: t["covariance"] for name, t in per_branch.items()}
    loss = invariance_weight * s + sum(coef[b].variance_weight * v[b] for b in v) / 2
    for b in c:  # added one at a time, in branch order
        loss = loss + coef[b].covariance_weight * c[b]
    return ObjectiveOutput(loss, s, sum(v.values()) / len(v), sum(c.values()), per_branch, {})  # type: ignore[arg-type]


def multi_branch_vicreg(
    embeddings: Mapping[str, torch.Tensor],
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    invariance_weight: float = 25.0,
    coefficients: Mapping[str, BranchCoefficients] | None = None,
    eps: float = 1e-4,
    gather: bool = True,
    covariance: str = "auto",
) -> ObjectiveOutput:
    """VICReg over N branches: invariance over the given pairs, variance and covariance once per branch.

    ``loss = λ·Σ_{(a,b) ∈ pairs} s(Z_a, Z_b) + (Σ_b μ_b·v_{γ_b}(Z_b))/2 + Σ_b ν_b·c(Z_b)``

    ``pairs`` defaults to every pair of branches; a branch in no pair adds no term. The /2 keeps the published
    scaling, so two branches give :func:`vicreg_loss`. Reported terms: ``invariance`` summed over pairs,
    ``variance`` averaged over branches, ``covariance`` summed over branches (unweighted); ``per_branch[b]``
    holds branch b's ``variance`` and ``covariance``; ``terms`` is empty. A branch missing from
    ``coefficients`` takes ``BranchCoefficients()`` (μ = 25, ν = 1, γ = 1).
    """
    names = list(embeddings)
    pairs = all_pairs(names) if pairs is None else [tuple(p) for p in pairs]  # type: ignore[misc]
    if not pairs:
        raise ValueError(f"VICReg needs at least one pair of branches to compare; got branches {names}")
    check_branches(embeddings, pairs, min_rows(gather), "multi_branch_vicreg")
    check_algorithm(covariance)
    return _vicreg_sum(embeddings, pairs, invariance_weight, coefficients or {}, eps, gather, covariance)


# ----------------------------------------------------------------------------------------------- two branches


def _per_branch(value: PerBranch, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    values = tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{name} must be a number or a pair of numbers (one per branch), got {value!r}")
    return float(values[0]), float(values[1])


def vicreg_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    invariance_weight: float = 25.0,
    variance_weight: PerBranch = 25.0,
    covariance_weight: PerBranch = 1.0,
    gamma: PerBranch = 1.0,
    eps: float = 1e-4,
    gather: bool = True,
    covariance: str = "auto",
) -> VICRegOutput:
    """VICReg for two branches' embeddings (n, d), the N-branch sum with the one pair ``(a, b)``:

    ``loss = λ·s(Z_a, Z_b) + (μ_a·v(Z_a) + μ_b·v(Z_b))/2 + ν_a·c(Z_a) + ν_b·c(Z_b)``

    with λ = ``invariance_weight``, μ = ``variance_weight``, ν = ``covariance_weight`` (μ, ν and γ may be a
    pair, one per branch). The output's terms are unweighted: ``variance = (v(Z_a) + v(Z_b))/2`` and
    ``covariance = c(Z_a) + c(Z_b)``.

    This is the scaling of the published code (facebookresearch/vicreg), for which 25/25/1 were tuned. The
    paper's equation (6) sums the two variance terms without the 1/2: a library that follows the equation
    equals this one with ``variance_weight`` doubled (μ_paper = 2·μ here).

    Under ``torch.distributed`` with several processes and ``gather=True``, variance and covariance use the
    global batch (every rank's embeddings, gathered with gradients); the invariance term uses the local batch,
    as published. Every rank must pass the same batch size. ``covariance`` picks the covariance's form
    (``"auto"``, ``"dense"``, ``"gram"``; see :func:`covariance_term`).
    """
    check_pair(z_a, z_b, min_rows=min_rows(gather))
    check_algorithm(covariance)
    mu_a, mu_b = _per_branch(variance_weight, "variance_weight")
    nu_a, nu_b = _per_branch(covariance_weight, "covariance_weight")
    gamma_a, gamma_b = _per_branch(gamma, "gamma")
    coefficients = {"z_a": BranchCoefficients(mu_a, nu_a, gamma_a), "z_b": BranchCoefficients(mu_b, nu_b, gamma_b)}
    out = _vicreg_sum(
        {"z_a": z_a, "z_b": z_b}, [("z_a", "z_b")], invariance_weight, coefficients, eps, gather, covariance
    )
    return VICRegOutput(out.loss, out.invariance, out.variance, out.covariance)


class VICRegLoss(nn.Module):
    """Module form of :func:`vicreg_loss`, with the same arguments and the same :class:`VICRegOutput`."""

    def __init__(
        self,
        invariance_weight: float = 25.0,
        variance_weight: PerBranch = 25.0,
        covariance_weight: PerBranch = 1.0,
        gamma: PerBranch = 1.0,
        eps: float = 1e-4,
        gather: bool = True,
        covariance: str = "auto",
    ) -> None:
        super().__init__()
        # Checked at construction so a bad config fails before training starts.
        _per_branch(variance_weight, "variance_weight")
        _per_branch(covariance_weight, "covariance_weight")
        _per_branch(gamma, "gamma")
        check_algorithm(covariance)
        self.invariance_weight = invariance_weight
        self.variance_weight = variance_weight
        self.covariance_weight = covariance_weight
        self.gamma = gamma
        self.eps = eps
        self.gather = gather
        self.covariance = covariance

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> VICRegOutput:
        return vicreg_loss(
            z_a,
            z_b,
            invariance_weight=self.invariance_weight,
            variance_weight=self.variance_weight,
            covariance_weight=self.covariance_weight,
            gamma=self.gamma,
            eps=self.eps,
            gather=self.gather,
            covariance=self.covariance,
        )

    def extra_repr(self) -> str:
        return (
            f"invariance_weight={self.invariance_weight}, variance_weight={self.variance_weight}, "
            f"covariance_weight={self.covariance_weight}, gamma={self.gamma}, covariance={self.covariance!r}"
        )
