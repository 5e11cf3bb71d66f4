"""What every loss of the package shares: one input check, float32 statistics, and the Gram rule.

Input contract. Embeddings are floating-point tensors of shape (n, d), one row per sample, d ≥ 1. A public
loss function checks its inputs once, with :func:`check_embeddings` / :func:`check_pair`, then calls unchecked
cores; composite losses check once at their own entry and never re-check in the terms they compose.
The variance and covariance need n ≥ 2 rows of the batch they see: under data parallelism with the gather on
that is the global batch, so one row per rank is enough (:func:`min_rows`).

Precision. Statistics are computed in float32 (float64 inputs stay float64) with autocast off
(:func:`stats_precision` inside :func:`no_autocast`): the covariance subtracts two large sums, and squared
covariances underflow in half precision.

The Gram rule. For a centred (n, d) matrix ``Zc`` with column sums of squares ``s_j = Σ_i Zc_ij²``,

    ``Σ_{i≠j} (Zcᵀ Zc)_ij² = ‖Zcᵀ Zc‖_F² − Σ_j s_j² = ‖Zc Zcᵀ‖_F² − Σ_j s_j²``

The first form (dense) builds the d×d matrix: O(n d²) time, O(d²) memory; the second (gram) builds only the
n×n Gram matrix: O(n² d) time, O(n²) memory. :func:`use_gram` picks the cheaper one for ``"auto"``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Sequence

import torch
from torch.autograd.function import once_differentiable

from mmvicreg.choices import COVARIANCE_ALGORITHMS, check_choice
from mmvicreg.distributed import is_distributed

__all__ = [
    "check_algorithm",
    "check_embeddings",
    "check_pair",
    "check_same_shape",
    "min_rows",
    "no_autocast",
    "stats_precision",
    "sum_off_diagonal_squares",
    "use_gram",
]


# ----------------------------------------------------------------------------------------------- input checks


def _shape(z: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in z.shape) + ")"


def check_embeddings(z: object, name: str = "z", min_rows: int = 2) -> torch.Tensor:
    """``z`` when it is a float (n ≥ ``min_rows``, d ≥ 1) tensor; else a TypeError/ValueError naming ``name``."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, dim), got {type(z).__name__}")
    if not z.is_floating_point():
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


def check_same_shape(z_a: torch.Tensor, z_b: torch.Tensor, names: Sequence[str] = ("z_a", "z_b")) -> None:
    """A ValueError unless two (already checked) embeddings compared row by row have the same shape."""
    if z_a.shape != z_b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape (batch, dim), got {_shape(z_a)} and "
            f"{_shape(z_b)}; both branches need the same batch and the same embedding width"
        )


def check_pair(
    z_a: object, z_b: object, names: Sequence[str] = ("z_a", "z_b"), min_rows: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both embeddings checked (:func:`check_embeddings`) and of the same shape."""
    a = check_embeddings(z_a, names[0], min_rows)
    b = check_embeddings(z_b, names[1], min_rows)
    check_same_shape(a, b, names)
    return a, b


def min_rows(gather: bool) -> int:
    """Rows each rank must pass for the variance and covariance: 2, or 1 when every rank's rows are gathered.

    Every rank passes the same batch size, so W ≥ 2 ranks gather at least 2 rows from 1 each.
    """
    return 1 if gather and is_distributed() else 2


# ----------------------------------------------------------------------------------------------- precision


def stats_precision(z: torch.Tensor) -> torch.Tensor:
    """Half precision upcast to float32; float32 and float64 are kept."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def no_autocast(device: torch.device) -> AbstractContextManager:
    """A context in which autocast is off on ``device``'s type, so the statistics run in their inputs' dtype."""
    return torch.autocast(device_type=device.type, enabled=False)


# ----------------------------------------------------------------------------------------------- Gram rule


def use_gram(n: int, d: int, algorithm: str) -> bool:
    """Whether to use the n×n Gram form: ``"gram"``, or ``"auto"`` with n < d (the cheaper one).

    Where n < d the off-diagonal mass (at least about d²/n) also dominates the subtracted diagonal, so the
    subtraction loses no precision. ``algorithm`` must already be one of ``COVARIANCE_ALGORITHMS``.
    """
    return n < d if algorithm == "auto" else algorithm == "gram"


def check_algorithm(algorithm: str, what: str = "covariance") -> str:
    """``algorithm`` when it is one of ``COVARIANCE_ALGORITHMS``; else a ValueError naming ``what``."""
    return check_choice(algorithm, COVARIANCE_ALGORITHMS, what)


class _SumOffDiagonalSquares(torch.autograd.Function):
    """``Σ_{i≠j} (Zcᵀ Zc)_ij²`` for a centred (n, d) matrix, dense or gram (see the module docstring).

    Both forms share the gradient ``4 (M Zc − Zc ⊙ s)`` with ``M Zc`` being ``Zc C`` (dense) or ``G Zc``
    (gram). Written as a Function because autograd would spend two matrix products on the backward of
    ``X Xᵀ`` where one suffices (X Xᵀ is symmetric).
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


def sum_off_diagonal_squares(zc: torch.Tensor, gram: bool) -> torch.Tensor:
    """``Σ_{i≠j} (Zcᵀ Zc)_ij²`` of a centred (n, d) matrix, through the n×n Gram matrix when ``gram``."""
    return _SumOffDiagonalSquares.apply(zc, gram)
