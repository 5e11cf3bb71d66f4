"""Where and in what precision inference runs: one meaning of ``device`` and ``precision`` for every entry point.

``device``: ``None`` (CUDA when torch sees a GPU, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
``precision``: ``"auto"`` (bf16 autocast on CUDA, float32 on the CPU), ``"fp32"``, ``"bf16"`` or ``"fp16"``
(autocast on the device: matrix products in half precision, reductions in float32).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from mmvicreg.choices import EVAL_PRECISIONS, check_choice

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device ``name`` means; a CUDA device torch cannot see is one line naming the fix."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {name!r} is not a device torch knows; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for, but torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                f"use --device cpu (eval.device: cpu), or install a CUDA build of torch on a GPU machine"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r} is not supported here; use cpu, cuda or cuda:N")
    return device


def autocast(device: torch.device, precision: str = "auto") -> ContextManager:
    """The autocast context ``precision`` asks for on ``device`` (a null context for float32)."""
    check_choice(precision, EVAL_PRECISIONS, "precision")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
