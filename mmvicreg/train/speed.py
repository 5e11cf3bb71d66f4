"""The step's speed switches, each keeping the step's numbers (to the tolerance of its precision):

* ``train.channels_last`` — convolutional image towers in channels-last memory layout (NHWC), which cuDNN's
  fastest convolutions read; ``null`` (auto): on for towers with convolutions when training on CUDA.
* ``train.optimizer.fused`` — the fused (one kernel) AdamW / SGD step; ``null`` (auto): fused on CUDA. LARS has
  none (refused where the config loads).
* ``train.tf32`` — TensorFloat-32 matrix products for float32 work on CUDA
  (``torch.set_float32_matmul_precision("high")``): faster, with a 10-bit mantissa in the products.

:func:`apply_speed_switches` is called once the model is built and before Accelerate prepares it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["apply_speed_switches", "fused_options", "has_convolutions"]


def has_convolutions(module: nn.Module) -> bool:
    """Whether ``module`` holds a 2-D convolution (what channels-last speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def apply_speed_switches(model: nn.Module, train: Any, device: torch.device) -> list[str]:
    """Apply ``train.channels_last`` and ``train.tf32`` to ``model`` (a JointEmbedding) for a
    run on ``device``; returns one phrase per switch applied (for the run's log)."""
    applied = []
    torch.set_float32_matmul_precision("high" if train.tf32 else "highest")
    if train.tf32:
        applied.append("TF32 matmuls")
    cuda = device.type == "cuda"
    for name, branch in model.branches.items():
        if branch.modality != "image" or not has_convolutions(branch.encoder):
            continue
        if train.channels_last or (train.channels_last is None and cuda):
            branch.to(memory_format=torch.channels_last)
            applied.append(f"channels-last {name}")
    return applied


def fused_options(optimizer: str, fused: bool | None, device: torch.device) -> dict[str, Any]:
    """The keyword that makes ``optimizer`` (adamw, sgd) take fused steps: ``fused`` as given, or auto (on CUDA)."""
    if optimizer not in ("adamw", "sgd"):
        return {}
    use = fused if fused is not None else device.type == "cuda"
    return {"fused": True} if use else {}
