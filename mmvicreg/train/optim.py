"""The optimiser and the learning-rate schedule of a run.

* parameter groups: every tensor with ndim ≤ 1 (biases, normalisation) has no weight decay and, under LARS, no
  trust-ratio adaptation (the published ``exclude_bias_and_norm``); LARS is the published update
  (:class:`mmvicreg.train.lars.LARS`: every matrix adapted, at weight decay 0 too);
* learning rate: ``train.optimizer.lr``, or ``base_lr · batch_size / 256`` (the published scaling rule);
* schedule: linear warmup from 0 over ``warmup_steps``, then cosine decay to ``min_lr_ratio · lr``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from mmvicreg.train.speed import fused_options
from mmvicreg.config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: tensors with ndim ≥ 2 decayed, the rest (biases, norms) not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(
    model: torch.nn.Module, train: TrainConfig, extra_params: Sequence[torch.nn.Parameter] = (),
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    """LARS, SGD or AdamW (``train.optimizer``) over the model and ``extra_params`` (the objective's own, never
    decayed: InfoNCE's temperature); AdamW and SGD fused on ``device`` per ``train.optimizer.fused``."""
    opt = train.optimizer
    lr = peak_lr(train)
    groups = param_groups(model, opt.weight_decay)
    groups[1]["params"] = groups[1]["params"] + list(extra_params)
    if opt.name == "lars":
        from mmvicreg.train.lars import LARS

        return LARS(groups, lr=lr, momentum=opt.momentum, eta=opt.eta)
    fused = fused_options(opt.name, opt.fused, device or torch.device("cpu"))
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=opt.momentum, **fused)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(opt.betas), **fused)  # type: ignore[arg-type]


def peak_lr(train: TrainConfig) -> float:
    """``train.optimizer.lr``, or ``base_lr · batch_size / 256``."""
    opt = train.optimizer
    return opt.lr if opt.lr is not None else opt.base_lr * train.batch_size / 256


def apply_resumed_lr(optimizer: torch.optim.Optimizer, scheduler: Any, train: TrainConfig) -> None:
    """After a checkpoint is restored, make the config's learning rate and weight decay the ones that train.

    The checkpoint restores the optimiser's groups and the scheduler's base rates as the run started; a resumed
    run that lowers its rate (after a divergence, say) continues the same schedule from the current step at the
    new peak: ``lr = peak · factor(step)``. Group 0 is the decayed one (:func:`param_groups`).
    """
    lr = peak_lr(train)
    scheduler.base_lrs = [lr for _ in optimizer.param_groups]
    factor = scheduler.lr_lambdas[0]
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
    optimizer.param_groups[0]["weight_decay"] = train.optimizer.weight_decay


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: ``(step + 1) / warmup`` during warmup, then ``min + (1 - min)·½(1 + cos(π·progress))``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def schedule_length(train: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """``(total_steps, warmup_steps)``: ``max_steps`` or ``epochs · steps_per_epoch``; warmup in steps or epochs."""
    total = train.max_steps or train.epochs * steps_per_epoch
    warmup = train.warmup_steps if train.warmup_steps is not None else int(train.warmup_epochs * steps_per_epoch)
    return total, warmup


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warmup + cosine, stepped once per optimiser step (not per process: ``train.batch_size`` is global)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps, train.min_lr_ratio))
