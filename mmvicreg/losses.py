"""The VICReg objective: invariance, variance and covariance terms (Bardes, Ponce & LeCun, ICLR 2022).

For embeddings ``Z_a, Z_b`` of shape (n, d), one row per sample:

* invariance  ``s(Z_a, Z_b) = (1/(n d)) Σ_ij (Z_a - Z_b)_ij²``                       (``F.mse_loss``)
* variance    ``v(Z) = (1/d) Σ_j max(0, γ - sqrt(Var(z^j) + ε))``, unbiased variance
* covariance  ``c(Z) = (1/d) Σ_{i≠j} C_ij²``, ``C = Zcᵀ Zc / (n - 1)``, ``Zc = Z - mean(Z)``

and the loss ``λ·s + μ·(v(Z_a) + v(Z_b))/2 + ν·(c(Z_a) + c(Z_b))``.

Statistics are always computed in float32 (float64 inputs stay float64), with autocast switched off: the
covariance subtracts two large sums, and squared covariances underflow in half precision.
"""

from __future__ import annotations

from typing import Literal, Mapping, NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from mmvicreg.distributed import gather_with_grad

Number = Union[float, int]
PerBranch = Union[Number, Sequence[Number]]
CovarianceAlgorithm = Literal["auto", "dense", "gram"]

__all__ = [
    "BranchCoefficients",
    "MultiBranchOutput",
    "VICRegOutput",
    "VICRegLoss",
    "covariance_term",
    "invariance_term",
    "multi_branch_vicreg",
    "variance_term",
    "vicreg_loss",
]


# ----------------------------------------------------------------------------------------------- validation


def _shape(z: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in z.shape) + ")"


def check_embeddings(z: object, name: str = "z", min_rows: int = 2) -> torch.Tensor:
    """Raise a TypeError/ValueError naming ``name``'s shape or dtype unless it is a float (n >= min_rows, d) tensor."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, dim), got {type(z).__name__}")
    if not (z.is_floating_point()):
        raise TypeError(
            f"{name} has dtype {z.dtype} and shape {_shape(z)}; embeddings must be floating point "
            f"(convert with .float())"
        )
    if z.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (batch, dim), got {z.ndim}-D shape {_shape(z)}; "
            f"flatten the feature dimensions (z.flatten(1)) or add a batch dimension"
        )
    if z.shape[0] < min_rows:
        raise ValueError(
            f"{name} has batch size {z.shape[0]} (shape {_shape(z)}); the variance and covariance terms need "
            f"at least {min_rows} samples per batch"
        )
    if z.shape[1] < 1:
        raise ValueError(f"{name} has shape {_shape(z)}; the embedding dimension must be at least 1")
    return z


def _check_pair(z_a: object, z_b: object) -> None:
    check_embeddings(z_a, "z_a", min_rows=1)
    check_embeddings(z_b, "z_b", min_rows=1)
    if z_a.shape != z_b.shape:  # type: ignore[union-attr]
        raise ValueError(
            f"z_a and z_b must have the same shape (batch, dim), got {_shape(z_a)} and {_shape(z_b)}; "  # type: ignore[arg-type]
            f"both branches need the same batch and the same expander output width"
        )


def _stats_precision(z: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32; float32 and float64 are kept."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _pair(value: PerBranch, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    values = tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{name} must be a number or a pair of numbers (one per branch), got {value!r}")
    return float(values[0]), float(values[1])


# ----------------------------------------------------------------------------------------------- the terms


def invariance_term(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """``s(Z_a, Z_b) = (1/(n d)) Σ_ij (Z_a - Z_b)_ij²``, the mean squared error over all n·d entries."""
    _check_pair(z_a, z_b)
    with _no_autocast(z_a.device):
        return F.mse_loss(_stats_precision(z_a), _stats_precision(z_b))


def variance_term(
    z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4, mode: Literal["std", "var"] = "std"
) -> torch.Tensor:
    """Hinge on each dimension's spread across the batch, averaged over dimensions.

    ``mode="std"`` (published): ``(1/d) Σ_j max(0, γ - sqrt(Var(z^j) + ε))``.
    ``mode="var"`` (the simplified form some write-ups use): ``(1/d) Σ_j max(0, γ - Var(z^j))``.
    ``Var`` is the unbiased (n - 1) variance over the batch.
    """
    check_embeddings(z, "z")
    if mode not in ("std", "var"):
        raise ValueError(f"variance_term mode must be 'std' or 'var', got {mode!r}")
    with _no_autocast(z.device):
        var = _stats_precision(z).var(dim=0, unbiased=True)
        spread = torch.sqrt(var + eps) if mode == "std" else var
        return F.relu(gamma - spread).mean()


class _SumOffDiagonalSquares(torch.autograd.Function):
    """``Σ_{i≠j} (Zcᵀ Zc)_ij²`` for a centred (n, d) matrix, in one of two algebraically equal forms.

    dense: ``‖ZcᵀZc‖_F² - Σ_j s_j²`` builds the d×d matrix: O(n d²) time, O(d²) memory.
    gram:  ``‖Zc Zcᵀ‖_F² - Σ_j s_j²`` (the two Frobenius norms are equal) builds only the n×n Gram matrix:
           O(n² d) time, O(n²) memory.
    Here ``s_j = Σ_i Zc_ij²``. Both share the gradient ``4 (M Zc - Zc ⊙ s)`` with ``M Zc`` being ``Zc C``
    (dense) or ``G Zc`` (gram). Written as a Function because autograd would spend two matrix products on the
    backward of ``X Xᵀ`` where one suffices (X Xᵀ is symmetric).
    """

    @staticmethod
    def forward(ctx, zc: torch.Tensor, gram: bool) -> torch.Tensor:  # type: ignore[override]
        m = zc @ zc.T if gram else zc.T @ zc
        # Dense: the diagonal of C itself, so that both sums see the same rounding and d = 1 gives exactly 0.
        s = zc.pow(2).sum(dim=0) if gram else m.diagonal().clone()
        ctx.save_for_backward(zc, m, s)
        ctx.gram = gram
        # The true value is >= 0; rounding in the subtraction may leave a few ulps below it.
        return (m.pow(2).sum() - s.pow(2).sum()).clamp(min=0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        zc, m, s = ctx.saved_tensors
        mz = m @ zc if ctx.gram else zc @ m
        return (4 * grad) * (mz - zc * s), None


def covariance_term(z: torch.Tensor, algorithm: CovarianceAlgorithm = "auto") -> torch.Tensor:
    """``c(Z) = (1/d) Σ_{i≠j} C_ij²`` with ``C = Zcᵀ Zc / (n - 1)``.

    ``algorithm``: ``"dense"`` builds C (d×d); ``"gram"`` uses
    ``Σ_{i≠j} C_ij² = (‖Zc Zcᵀ‖_F² - Σ_j (Σ_i Zc_ij²)²) / (n - 1)²`` and never builds a d×d matrix;
    ``"auto"`` takes gram when n < d (the cheaper one; it is also the regime where the off-diagonal mass,
    at least about d²/n, dominates the subtracted diagonal, so the subtraction loses no precision).
    Both give the same value and gradient.
    """
    check_embeddings(z, "z")
    if algorithm not in ("auto", "dense", "gram"):
        raise ValueError(f"covariance algorithm must be 'auto', 'dense' or 'gram', got {algorithm!r}")
    n, d = z.shape
    gram = n < d if algorithm == "auto" else algorithm == "gram"
    with _no_autocast(z.device):
        z = _stats_precision(z)
        zc = z - z.mean(dim=0)
        return _SumOffDiagonalSquares.apply(zc, gram) / ((n - 1) ** 2 * d)


# ----------------------------------------------------------------------------------------------- the loss


class VICRegOutput(NamedTuple):
    """Scalar tensors: the weighted ``loss`` and the unweighted ``invariance``, ``variance``, ``covariance``."""

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor


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
    covariance: CovarianceAlgorithm = "auto",
) -> VICRegOutput:
    """VICReg for two branches' embeddings (n, d).

    ``loss = λ·s(Z_a, Z_b) + (μ_a·v(Z_a) + μ_b·v(Z_b))/2 + ν_a·c(Z_a) + ν_b·c(Z_b)``

    with λ = ``invariance_weight``, μ = ``variance_weight``, ν = ``covariance_weight`` (μ, ν and γ may be a
    pair, one per branch). The output's terms are unweighted: ``variance = (v(Z_a) + v(Z_b))/2`` and
    ``covariance = c(Z_a) + c(Z_b)``.

    This is the scaling of the published code (facebookresearch/vicreg), for which 25/25/1 were tuned. The
    paper's equation (6) sums the two variance terms without the 1/2: a library that follows the equation
    equals this one with ``variance_weight`` doubled (μ_paper = 2·μ here).

    Under ``torch.distributed`` with several processes and ``gather=True``, variance and covariance use the
    global batch (every rank's embeddings, gathered with gradients); the invariance term uses the local batch,
    as published. Every rank must pass the same batch size.
    """
    _check_pair(z_a, z_b)
    mu, nu, g = _pair(variance_weight, "variance_weight"), _pair(covariance_weight, "covariance_weight"), _pair(
        gamma, "gamma"
    )
    out = multi_branch_vicreg(
        {"z_a": z_a, "z_b": z_b},
        [("z_a", "z_b")],
        invariance_weight=invariance_weight,
        coefficients={
            "z_a": BranchCoefficients(mu[0], nu[0], g[0]),
            "z_b": BranchCoefficients(mu[1], nu[1], g[1]),
        },
        eps=eps,
        gather=gather,
        covariance=covariance,
    )
    return VICRegOutput(out.loss, out.invariance, out.variance, out.covariance)


class BranchCoefficients(NamedTuple):
    """One branch's regularisation: variance weight μ_b, covariance weight ν_b, variance target γ_b."""

    variance_weight: float = 25.0
    covariance_weight: float = 1.0
    gamma: float = 1.0


class MultiBranchOutput(NamedTuple):
    """The N-branch objective: weighted ``loss``; unweighted summed/averaged terms; per-branch terms."""

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor
    per_branch: dict[str, dict[str, torch.Tensor]]


def multi_branch_vicreg(
    embeddings: Mapping[str, torch.Tensor],
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    invariance_weight: float = 25.0,
    coefficients: Mapping[str, BranchCoefficients] | None = None,
    eps: float = 1e-4,
    gather: bool = True,
    covariance: CovarianceAlgorithm = "auto",
) -> MultiBranchOutput:
    """VICReg over N branches: invariance over the given pairs, variance and covariance once per branch.

    ``loss = λ·Σ_{(a,b) ∈ pairs} s(Z_a, Z_b) + Σ_b (μ_b/2)·v_{γ_b}(Z_b) + Σ_b ν_b·c(Z_b)``

    ``pairs`` defaults to every pair of branches. The per-branch μ_b/2 keeps the published scaling, so two
    branches give exactly :func:`vicreg_loss`. Reported terms: ``invariance`` summed over pairs, ``variance``
    averaged over branches, ``covariance`` summed over branches (unweighted).
    """
    names = list(embeddings)
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    if not pairs:
        raise ValueError(f"VICReg needs at least one pair of branches to compare; got branches {names}")
    for a, b in pairs:
        for name in (a, b):
            if name not in embeddings:
                raise ValueError(f"pair ({a}, {b}) names {name!r}, which has no embeddings; branches: {names}")
    coefficients = coefficients or {}
    for name, z in embeddings.items():
        check_embeddings(z, name, min_rows=1)

    invariance = sum(invariance_term(embeddings[a], embeddings[b]) for a, b in pairs)
    loss = invariance_weight * invariance
    per_branch: dict[str, dict[str, torch.Tensor]] = {}
    for name in dict.fromkeys(n for pair in pairs for n in pair):
        coef = coefficients.get(name, BranchCoefficients())
        z = gather_with_grad(embeddings[name]) if gather else embeddings[name]
        check_embeddings(z, name)
        v = variance_term(z, coef.gamma, eps)
        c = covariance_term(z, covariance)
        loss = loss + coef.variance_weight / 2 * v + coef.covariance_weight * c
        per_branch[name] = {"variance": v, "covariance": c}
    variance = sum(t["variance"] for t in per_branch.values()) / len(per_branch)
    cov = sum(t["covariance"] for t in per_branch.values())
    return MultiBranchOutput(loss, invariance, variance, cov, per_branch)  # type: ignore[arg-type]


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
        covariance: CovarianceAlgorithm = "auto",
    ) -> None:
        super().__init__()
        # Validate at construction so a bad config fails before training starts.
        _pair(variance_weight, "variance_weight")
        _pair(covariance_weight, "covariance_weight")
        _pair(gamma, "gamma")
        if covariance not in ("auto", "dense", "gram"):
            raise ValueError(f"covariance must be 'auto', 'dense' or 'gram', got {covariance!r}")
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
