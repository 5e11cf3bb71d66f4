"""Collapse diagnostics of a batch of embeddings (n, d), detached and returned as Python floats.

* ``embedding_std``: mean and minimum over dimensions of ``std(z^j)`` across the batch (unbiased);
* ``rankme`` (Garrido et al., ICML 2023): ``exp(−Σ_k p_k log p_k)``, ``p_k = σ_k / Σ_j σ_j + ε``, σ the
  singular values of the embedding matrix.
"""

from __future__ import annotations

import torch

__all__ = ["embedding_std", "rankme"]


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> tuple[float, float]:
    """Mean and minimum over dimensions of each dimension's standard deviation across the batch.

    Both tend to 0 under complete collapse; VICReg's variance hinge keeps them near γ.
    """
    std = z.detach().float().std(dim=0)
    return float(std.mean()), float(std.min())


@torch.no_grad()
def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023): ``exp(-Σ_k p_k log p_k)``, ``p_k = σ_k / Σ_j σ_j + ε``.

    ``σ`` are the singular values of the (n, d) embedding matrix; the result lies in [1, min(n, d)]: about 1
    for a collapsed (rank-one) batch, min(n, d) for a full-rank, evenly spread one.
    """
    s = torch.linalg.svdvals(z.detach().float())
    p = s / s.sum().clamp(min=1e-12) + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
