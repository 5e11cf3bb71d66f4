"""Rank helpers, an all-gather that carries gradients back, and a gradient average for parameters outside DDP.

VICReg's variance and covariance are statistics of the *global* batch: under data parallelism every rank
gathers every rank's embeddings before computing them (the published ``FullGatherLayer``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the sum, over ranks, of the gradient of its own rows.

    Written here rather than using ``torch.distributed.nn.functional.all_gather`` because that function warns
    that it is deprecated on the torch versions we support; the autograd rule is two lines.
    Forward:  x (n, d) on each of W ranks  ->  (W*n, d), rank-major.
    Backward: g (W*n, d) on each rank      ->  sum_r g_r[rank*n:(rank+1)*n].
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = grad.shape[0] // dist.get_world_size()
        r = dist.get_rank()
        return grad[r * n : (r + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping gradients; the identity on one process.

    Every rank must pass the same shape (training drops the last incomplete batch for this reason).
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


class _AverageGradOverRanks(torch.autograd.Function):
    """Identity forward; backward averages the gradient over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad / dist.get_world_size()


def average_grad_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, but its gradient averaged over ranks (for a parameter no DDP wrapper synchronises, such
    as InfoNCE's temperature); the identity on one process or when ``x`` needs no gradient."""
    return _AverageGradOverRanks.apply(x) if is_distributed() and x.requires_grad else x
