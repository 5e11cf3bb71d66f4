"""Baseline losses for one pair of branches: symmetric InfoNCE, the VSE++ hinge triplet loss, Barlow Twins.

For a pair ``(a, b)`` with embeddings ``Z_a, Z_b`` of shape (n, d):

``infonce`` (symmetric InfoNCE as in CLIP; Radford et al., 2021)
    ``ẑ = z / ‖z‖``, ``S_ij = exp(t) · ẑ_a,i · ẑ_b,j`` with ``exp(t)`` = ``logit_scale`` = 1/τ, and

    ``L = ½ [ (1/n) Σ_i −log softmax_j(S_ij)[i]  +  (1/n) Σ_j −log softmax_i(S_ij)[j] ]``

    i.e. the mean of the cross-entropies of the logits over rows (a → b) and over columns (b → a).

``triplet`` (VSE++ hinge loss; Faghri et al., 2018), margin α, cosine similarities ``s_ij = ẑ_a,i · ẑ_b,j``:

    ``max_violation=True``  (VSE++, hardest negative):
    ``L = Σ_i max_{j≠i} [α − s_ii + s_ij]_+  +  Σ_j max_{i≠j} [α − s_jj + s_ij]_+``

    ``max_violation=False`` (VSE0, sum of violations): the same with Σ in place of max.
    Summed over the batch, not averaged, as published (the learning rates of VSE++ assume the sum).

``barlow`` (Barlow Twins; Zbontar et al., 2021), λ = ``lambd``:
    each dimension standardised over the batch, ``z̃^k = (z^k − mean(z^k)) / sqrt(Var_biased(z^k) + ε)``
    (``BatchNorm1d(affine=False)`` in training mode), the cross-correlation ``C = Z̃_aᵀ Z̃_b / n`` (d×d), and

    ``L = Σ_k (1 − C_kk)²  +  λ Σ_{k≠l} C_kl²``

    As for VICReg's covariance, ``Σ_{k≠l} C_kl² = ‖C‖_F² − Σ_k C_kk²`` and
    ``‖Z̃_aᵀ Z̃_b‖_F² = Σ_ij (Z̃_a Z̃_aᵀ)_ij (Z̃_b Z̃_bᵀ)_ij``: when n < d (``algorithm="auto"``) the loss is
    computed from two n×n Gram matrices and never builds the d×d matrix.

Under ``torch.distributed`` with several processes and ``gather`` on, the global batch is used where it
matters: InfoNCE and triplet take each rank's local rows as anchors against every rank's rows as candidates
(the positives are at ``rank·n + i``), so the negatives are the global batch; Barlow Twins computes its
cross-correlation over the global batch (the published code all-reduces ``C``).

All similarities and statistics are computed in float32 (float64 inputs stay float64) with autocast off. Each
public function checks its inputs once; the private ``_infonce``, ``_triplet`` and ``_barlow`` take checked ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmvicreg.distributed import gather_with_grad, is_distributed, rank
from mmvicreg.objective.numerics import check_algorithm, check_pair, no_autocast, stats_precision, use_gram

__all__ = ["barlow_twins_loss", "infonce_loss", "triplet_loss"]


def _global(z: torch.Tensor, gather: bool) -> tuple[torch.Tensor, int]:
    """Every rank's rows (with gradients) and the offset of this rank's rows in them."""
    if gather and is_distributed():
        return gather_with_grad(z), rank() * z.shape[0]
    return z, 0


# ----------------------------------------------------------------------------------------------- InfoNCE


def _infonce(z_a: torch.Tensor, z_b: torch.Tensor, logit_scale: torch.Tensor | float, gather: bool) -> torch.Tensor:
    with no_autocast(z_a.device):
        a = F.normalize(stats_precision(z_a), dim=1)
        b = F.normalize(stats_precision(z_b), dim=1)
        a_all, offset = _global(a, gather)
        b_all, _ = _global(b, gather)
        targets = torch.arange(a.shape[0], device=a.device) + offset
        scale = logit_scale.to(a.dtype) if isinstance(logit_scale, torch.Tensor) else logit_scale
        a_to_b = F.cross_entropy(scale * a @ b_all.T, targets)
        b_to_a = F.cross_entropy(scale * b @ a_all.T, targets)
        return (a_to_b + b_to_a) / 2


def infonce_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, logit_scale: torch.Tensor | float, *, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) for one pair; ``logit_scale`` = ``exp(t)`` = 1/τ, a tensor to learn it.

    ``L = ½ [CE_rows(S) + CE_cols(S)]`` with ``S = logit_scale · ẑ_a ẑ_bᵀ`` and the matching row/column the
    target; each cross-entropy is averaged over the (local) anchors. Under torch.distributed the candidates are
    the global batch (see the module docstring).
    """
    check_pair(z_a, z_b)
    return _infonce(z_a, z_b, logit_scale, gather)


# ----------------------------------------------------------------------------------------------- VSE++ triplet


def _hinge_one_way(
    anchors: torch.Tensor, candidates: torch.Tensor, offset: int, margin: float, max_violation: bool
) -> torch.Tensor:
    sims = anchors @ candidates.T  # (n, N): row i's positive is column offset + i
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    positive = sims[rows, rows + offset]
    cost = F.relu(margin + sims - positive[:, None])
    is_positive = torch.zeros_like(cost, dtype=torch.bool)
    is_positive[rows, rows + offset] = True
    cost = cost.masked_fill(is_positive, 0.0)
    return cost.max(dim=1).values.sum() if max_violation else cost.sum()


def _triplet(z_a: torch.Tensor, z_b: torch.Tensor, margin: float, max_violation: bool, gather: bool) -> torch.Tensor:
    with no_autocast(z_a.device):
        a = F.normalize(stats_precision(z_a), dim=1)
        b = F.normalize(stats_precision(z_b), dim=1)
        a_all, offset = _global(a, gather)
        b_all, _ = _global(b, gather)
        return _hinge_one_way(a, b_all, offset, margin, max_violation) + _hinge_one_way(
            b, a_all, offset, margin, max_violation
        )


def triplet_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    margin: float = 0.2,
    max_violation: bool = True,
    gather: bool = True,
) -> torch.Tensor:
    """VSE++ hinge triplet loss for one pair, on cosine similarities, summed over the anchors of both directions.

    ``max_violation=True``: ``Σ_i max_{j≠i} [α − s_ii + s_ij]_+ + Σ_j max_{i≠j} [α − s_jj + s_ij]_+``;
    ``max_violation=False``: the same with Σ in place of max. ``s_ij = ẑ_a,i · ẑ_b,j``, α = ``margin``.
    """
    check_pair(z_a, z_b)
    return _triplet(z_a, z_b, margin, max_violation, gather)


# ----------------------------------------------------------------------------------------------- Barlow Twins


def _standardise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Each column to zero mean and unit biased variance (``BatchNorm1d(affine=False)`` in training mode)."""
    zc = z - z.mean(dim=0)
    return zc / torch.sqrt(zc.pow(2).mean(dim=0) + eps)


def _barlow(
    z_a: torch.Tensor, z_b: torch.Tensor, lambd: float, eps: float, gather: bool, algorithm: str
) -> torch.Tensor:
    with no_autocast(z_a.device):
        a, _ = _global(stats_precision(z_a), gather)
        b, _ = _global(stats_precision(z_b), gather)
        n, d = a.shape
        a, b = _standardise(a, eps), _standardise(b, eps)
        diagonal = (a * b).sum(dim=0) / n  # C_kk
        if use_gram(n, d, algorithm):
            frobenius = ((a @ a.T) * (b @ b.T)).sum() / n**2
        else:
            frobenius = (a.T @ b / n).pow(2).sum()
        off_diagonal = frobenius - diagonal.pow(2).sum()
        return (1 - diagonal).pow(2).sum() + lambd * off_diagonal


def barlow_twins_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    lambd: float = 0.0051,
    eps: float = 1e-5,
    gather: bool = True,
    algorithm: str = "auto",
) -> torch.Tensor:
    """Barlow Twins for one pair: ``Σ_k (1 − C_kk)² + λ Σ_{k≠l} C_kl²`` with ``C = Z̃_aᵀ Z̃_b / n``.

    ``Z̃`` standardises each dimension over the (global) batch with the biased variance and ``eps`` (as
    ``BatchNorm1d(affine=False)``). ``algorithm``: ``"dense"`` builds C (d×d); ``"gram"`` uses
    ``‖C‖_F² = Σ_ij (Z̃_a Z̃_aᵀ)_ij (Z̃_b Z̃_bᵀ)_ij / n²`` (two n×n matrices); ``"auto"`` takes gram when n < d.
    """
    check_pair(z_a, z_b, min_rows=2)
    check_algorithm(algorithm, "algorithm")
    return _barlow(z_a, z_b, lambd, eps, gather, algorithm)
