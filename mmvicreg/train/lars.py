"""LARS as the VICReg paper's code runs it (facebookresearch/vicreg, ``main_vicreg.py``).

For each parameter ``w`` with gradient ``g``, learning rate ``lr``, momentum ``m``, weight decay ``wd`` and trust
coefficient ``η``::

    u = g + wd · w                       (no decay on excluded tensors)
    u = u · η‖w‖ / ‖u‖                   (adapted tensors only; the ratio is 1 when ‖w‖ or ‖u‖ is 0)
    μ = m · μ + u
    w = w − lr · μ

Every matrix is adapted **whatever the weight decay** (weight decay 0 included); biases and normalisation
parameters (``ndim ≤ 1``: the published ``exclude_bias_and_norm``) are neither decayed nor adapted.

Written here because timm's ``Lars`` differs from the published update in two ways: it adapts a group only when
its weight decay is non-zero (unless ``always_adapt``), and its ratio is η‖w‖ / (‖g‖ + wd‖w‖) rather than
η‖w‖ / ‖g + wd·w‖. The momentum buffer keeps timm's state name (``momentum_buffer``; the same recurrence) and a
group saved by timm's ``Lars`` gives its ``trust_coeff`` as η, so a checkpoint written before this class resumes
here (with the published update from then on).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch


def exclude_bias_and_norm(p: torch.Tensor) -> bool:
    """The published filter: a tensor with ``ndim ≤ 1`` (a bias, a norm's scale or shift) is neither decayed nor
    adapted."""
    return p.ndim <= 1


class LARS(torch.optim.Optimizer):
    """The published LARS. ``exclude(p)`` (default :func:`exclude_bias_and_norm`) picks the tensors that get no
    weight decay and no trust ratio, whatever their group's ``weight_decay``."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, exclude: Callable[[torch.Tensor], bool] = exclude_bias_and_norm) -> None:
        if lr <= 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS needs lr > 0, eta > 0, momentum and weight_decay >= 0; got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}")
        self.exclude = exclude
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta})

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            eta = group["eta"] if "eta" in group else group["trust_coeff"]  # a group saved by timm's Lars
            for p in group["params"]:
                if p.grad is None:
                    continue
                if self.exclude(p):
                    update = p.grad.clone()
                else:
                    update = p.grad.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    one = torch.ones_like(w_norm)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), eta * w_norm / u_norm, one)
                    update.mul_(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                p.add_(buffer, alpha=-group["lr"])
        return loss
