"""VCReg's two normalisations and its fast path: the penalty with a gradient written by hand (Zhu et al., 2023).

One block output ``x`` becomes an (m, d) matrix ``Z`` of samples × features (:func:`as_samples`; by default each
spatial location or token is a sample). With ``X = Z − mean(Z)``, ``C = XᵀX / (m − 1)`` and
``S_j = sqrt(C_jj + ε)``, both forms are

    ``ℓ(Z) = a · Σ_j max(0, γ − S_j) + K · Σ_{i≠j} h(C_ij)``

* ``form="vicreg"`` (mmvicreg's first VCReg, VICReg's terms): ``a = μ/d``, ``K = ν/d``, ``h(x) = x²``.
* ``form="paper"``: ``a = α/d``, ``K = β·(m − 1)/(d(d − 1))``, ``h`` the SmoothL1 form
  ``h_δ(x) = x²`` for ``|x| ≤ δ``, ``2δ|x| − δ²`` beyond (C¹; linear tails, so a few large covariances do not
  dominate the gradient); ``δ = None`` keeps ``x²``.

The gradient, which :class:`_FastVCReg` writes by hand instead of recording the penalty's graph:

    ``∂ℓ/∂X = X · M``,  ``M = −a/(m − 1) · diag(1[S_j < γ] / S_j) + 2K/(m − 1) · h′(C_off)``

(``h′(x) = 2x``, or ``2·clamp(x, −δ, δ)``; ``C_off`` is C with a zero diagonal). No gradient flows through the
centring: the columns of ``X·M`` are centred already, so the chain through ``mean(Z)`` adds nothing.

**Provenance.** The placement (every block's output, each location a sample) is the paper's (abstract, Figure 1).
Its method section's equations could not be read from here. ``form="paper"``'s normalisation is the one whose
gradient the public fast implementation of VCReg writes by hand — a layer whose forward is the identity and whose
backward adds ``−α/(d(m−1))·X·diag(...) + 4β/(d(d−1))·X·C_off`` to the incoming gradient, i.e. the ``h(x) = x²``
case of ``M`` above — and the SmoothL1 form with ``δ = 1`` is a public implementation's. The paper's coefficient
values could not be read either: the defaults are mmvicreg's, not published.

Why the fast path returns the penalty's value as a second output rather than only adding a gradient (as the public
layer does): the gradient then scales with whatever scales the loss — micro-batch averaging, gradient accumulation,
fp16's loss scaler — because autograd hands the backward the penalty's incoming gradient; a gradient added with a
fixed size would be 65,536× too small after fp16 unscaling. The value costs one ``XᵀX`` in the forward, the only
product the backward then needs besides ``X·M``; what it saves is the recorded graph (the (m, d) copies of Z and X
per block that autograd keeps, and one of its two backward products).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmvicreg.choices import VCREG_FORMS, check_choice
from mmvicreg.objective.numerics import no_autocast, stats_precision

__all__ = ["as_samples", "from_samples", "fast_vcreg", "penalty_scales", "vcreg_terms"]


def as_samples(x: torch.Tensor, spatial: str, channel_dim: int | None) -> torch.Tensor:
    """An (m, c) matrix of samples × features from a layer output of shape (n, ...): see ``vcreg_penalty``."""
    if x.ndim == 2:
        return x
    if x.ndim < 2:
        raise ValueError(f"VCReg needs a batch of features, got a {x.ndim}-D output of shape {tuple(x.shape)}")
    if spatial == "flatten":
        return x.flatten(1)
    x = x.movedim(_channel_axis(x.ndim, channel_dim), -1)  # (n, *spatial, c)
    if spatial == "pool":
        return x.flatten(1, -2).mean(dim=1)
    return x.reshape(-1, x.shape[-1])


def from_samples(g: torch.Tensor, shape: torch.Size, spatial: str, channel_dim: int | None) -> torch.Tensor:
    """The inverse of :func:`as_samples` for ``"locations"`` and ``"flatten"``: (m, c) back to ``shape``."""
    if len(shape) == 2 or spatial == "flatten":
        return g.reshape(shape)
    cdim = _channel_axis(len(shape), channel_dim)
    moved = list(shape)
    moved.append(moved.pop(cdim))
    return g.reshape(moved).movedim(-1, cdim)


def _channel_axis(ndim: int, channel_dim: int | None) -> int:
    cdim = (channel_dim if channel_dim is not None else (1 if ndim >= 4 else -1)) % ndim
    if cdim == 0:
        raise ValueError("channel_dim cannot be the batch dimension (0)")
    return cdim


def penalty_scales(form: str, m: int, d: int, variance_weight: float, covariance_weight: float) -> tuple[float, float]:
    """``(a, K)`` of the module docstring for ``form`` on an (m, d) sample matrix."""
    check_choice(form, VCREG_FORMS, "VCReg form")
    if form == "vicreg":
        return variance_weight / d, covariance_weight / d
    return variance_weight / d, covariance_weight * (m - 1) / (d * max(d - 1, 1))


def _smooth(c: torch.Tensor, delta: float | None) -> torch.Tensor:
    """``h(C)``: x², or the SmoothL1 form with threshold δ."""
    if delta is None:
        return c.square()
    a = c.abs()
    return torch.where(a <= delta, c.square(), 2 * delta * a - delta**2)


def _smooth_slope(c: torch.Tensor, delta: float | None) -> torch.Tensor:
    """``h′(C)``."""
    return 2 * (c if delta is None else c.clamp(-delta, delta))


def _statistics(z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean(Z), S, C_off)`` of an (m, d) matrix, in at least float32 (call without autocast)."""
    z = stats_precision(z)
    mean = z.mean(dim=0)
    x = z - mean
    c = x.T @ x / (z.shape[0] - 1)
    return mean, torch.sqrt(c.diagonal() + eps), c - torch.diag_embed(c.diagonal())


def _penalty(spread: torch.Tensor, off: torch.Tensor, a: float, k: float, gamma: float,
             delta: float | None) -> torch.Tensor:
    """``a·Σ max(0, γ − S_j) + K·Σ h(C_ij)``."""
    return a * F.relu(gamma - spread).sum() + k * _smooth(off, delta).sum()


def vcreg_terms(
    z: torch.Tensor, form: str, variance_weight: float, covariance_weight: float, gamma: float, eps: float,
    delta: float | None,
) -> torch.Tensor:
    """``ℓ(Z)`` of the module docstring on an (m, d) matrix, through autograd (the reference of the fast path)."""
    a, k = penalty_scales(form, *z.shape, variance_weight, covariance_weight)
    with no_autocast(z.device):
        _, spread, off = _statistics(z, eps)
        return _penalty(spread, off, a, k, gamma, delta)


class _FastVCReg(torch.autograd.Function):
    """Forward: ``(x, ℓ(Z))`` with x passed through; backward: ``g_x + g_ℓ · ∂ℓ/∂x`` with ∂ℓ/∂x written by hand."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, opts: dict) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        with torch.no_grad(), no_autocast(x.device):
            z = as_samples(x, opts["spatial"], opts["channel_dim"])
            m, d = z.shape
            a, k = penalty_scales(opts["form"], m, d, opts["variance_weight"], opts["covariance_weight"])
            mean, spread, off = _statistics(z, opts["eps"])
            value = _penalty(spread, off, a, k, opts["gamma"], opts["delta"])
            active = (spread < opts["gamma"]).to(off.dtype)
            # M of the module docstring, kept (d × d) so that the backward is one product X·M
            grad_matrix = (2 * k / (m - 1)) * _smooth_slope(off, opts["delta"])
            grad_matrix.diagonal().copy_(-a / (m - 1) * active / spread)
        ctx.save_for_backward(x, mean, grad_matrix)
        ctx.opts = opts
        return x.view_as(x), value

    @staticmethod
    def backward(ctx: Any, grad_x: torch.Tensor | None, grad_value: torch.Tensor | None):  # type: ignore[override]
        x, mean, grad_matrix = ctx.saved_tensors
        if grad_value is None:
            return grad_x, None
        opts = ctx.opts
        with torch.no_grad(), no_autocast(x.device):
            z = as_samples(x, opts["spatial"], opts["channel_dim"]).to(grad_matrix.dtype)
            g = (z @ grad_matrix - mean @ grad_matrix) * grad_value  # (Z − mean)·M without an (m, d) copy of Z − mean
            g = from_samples(g, x.shape, opts["spatial"], opts["channel_dim"]).to(x.dtype)
        return (g if grad_x is None else grad_x + g), None


def fast_vcreg(
    x: torch.Tensor,
    *,
    form: str = "paper",
    variance_weight: float = 1.0,
    covariance_weight: float = 0.04,
    gamma: float = 1.0,
    eps: float = 1e-4,
    delta: float | None = 1.0,
    spatial: str = "locations",
    channel_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, ℓ)``: ``x`` unchanged (continue the forward with it) and the penalty's value; backpropagating through
    both adds ``g_ℓ·∂ℓ/∂x`` to x's gradient, with ∂ℓ/∂x written by hand (no graph of the penalty is recorded).

    ``spatial`` may be ``"locations"`` or ``"flatten"`` (``"pool"`` needs autograd: use :func:`vcreg_terms`).
    """
    check_choice(form, VCREG_FORMS, "VCReg form")
    if spatial == "pool":
        raise ValueError("the fast VCReg path takes spatial='locations' or 'flatten'; 'pool' needs autograd "
                         "(set loss.vcreg_fast: false)")
    opts = dict(form=form, variance_weight=variance_weight, covariance_weight=covariance_weight, gamma=gamma,
                eps=eps, delta=delta, spatial=spatial, channel_dim=channel_dim)
    if as_samples(x.detach(), spatial, channel_dim).shape[0] < 2:
        raise ValueError(f"VCReg needs at least 2 samples per layer output, got shape {tuple(x.shape)}")
    return _FastVCReg.apply(x, opts)
