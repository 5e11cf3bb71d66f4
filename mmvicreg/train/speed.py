"""The step's speed switches, each keeping the step's numbers (to the tolerance of its precision):

* ``train.channels_last`` — convolutional image towers in channels-last memory layout (NHWC), which cuDNN's
  fastest convolutions read; ``null`` (auto): on for towers with convolutions when training on CUDA.
* ``train.optimizer.fused`` — the fused (one kernel) AdamW / SGD step; ``null`` (auto): fused on CUDA. LARS has
  none (refused where the config loads).
* ``train.tf32`` — TensorFloat-32 matrix products for float32 work on CUDA
  (``torch.set_float32_matmul_precision("high")``): faster, with a 10-bit mantissa in the products.
* ``train.compile`` — ``torch.compile`` of each branch's encoder and expander, in place (``nn.Module.compile``:
  the state dict, checkpoints and exports keep their keys). The objective stays eager, its statistics in float32.
  Token branches compile with dynamic shapes (a caption batch's length varies: one graph serves every length,
  where a graph per length would reach torch's recompile limit and fall back to eager at a point that depends
  on the process's history, and a resumed run would then not repeat the uninterrupted one). Each compiled run
  starts from empty compile caches (``torch.compiler.reset``). The first step's graph breaks are reported in one
  line (:func:`report_graph_breaks`).
* ``train.deterministic`` — ``torch.use_deterministic_algorithms`` for the run (``warn_only``: an op without a
  deterministic kernel warns, never fails). ``null`` (auto): on with ``train.compile``, whose generated kernels
  accumulate some gradients (a word embedding's) with atomic adds in an order that varies from run to run.

:func:`apply_speed_switches` is called once the model is built and before Accelerate prepares it.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["apply_speed_switches", "fused_options", "has_convolutions", "report_graph_breaks"]


def has_convolutions(module: nn.Module) -> bool:
    """Whether ``module`` holds a 2-D convolution (what channels-last speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def apply_speed_switches(model: nn.Module, train: Any, device: torch.device) -> list[str]:
    """Apply ``train.tf32``, ``train.channels_last``, ``train.deterministic`` and ``train.compile`` to ``model`` (a
    JointEmbedding) for a run on ``device``; returns one phrase per switch applied (for the run's log)."""
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
    deterministic = train.compile if train.deterministic is None else train.deterministic
    if deterministic or train.deterministic is not None:  # auto and not compiling: the process's own setting
        if deterministic and cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs
        torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
        applied += ["deterministic algorithms"] if deterministic else []
    if train.compile:
        # A fresh start for torch.compile's caches: dynamo does not guard on module hooks, so a graph traced for an
        # earlier model of the same classes in this process (one without loss.vcreg_layers hooks, say) would be
        # reused for this one, hooks unseen. Other compiled code of the process recompiles once.
        torch.compiler.reset()
        for name, branch in model.branches.items():
            branch.encoder.compile(dynamic=True if branch.modality == "text" else None)
            branch.expander.compile()
            applied.append(f"compiled {name}")
    return applied


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _is_graph_break(record: logging.LogRecord) -> bool:
    return record.name.endswith("graph_breaks")


def graph_break_summary(messages: list[str]) -> str:
    """One line for torch.compile's graph-break messages: each place once, with dynamo's explanation."""
    places: dict[str, str] = {}
    for text in messages:
        where = re.search(r"Graph break in user code at (\S+)", text)
        why = re.search(r"Explanation: ([^\n]+)", text)
        if where:
            places.setdefault(where.group(1), why.group(1).strip() if why else "")
    if not places:
        return "train.compile: no graph breaks in the first step"
    listed = "; ".join(f"{place} ({why})" if why else place for place, why in places.items())
    return (f"train.compile: {len(places)} graph break(s) in the first step, where the compiled graph returns to "
            f"eager Python: {listed}")


def report_graph_breaks(step: Callable[..., Any], say: Callable[[str], None]) -> Callable[..., Any]:
    """``step`` whose first call collects torch.compile's graph-break log records and says them in one line
    (:func:`graph_break_summary`) instead of dynamo's many; later calls are ``step`` itself. Where the user set
    ``TORCH_LOGS`` themselves, torch's own logging is left as they set it."""
    first = [True]

    def stepped(*args: Any, **kwargs: Any) -> Any:
        if not first[0] or os.environ.get("TORCH_LOGS"):
            return step(*args, **kwargs)
        first[0] = False
        collect, quiet = _Collect(), logging.Filter()
        quiet.filter = lambda record: not _is_graph_break(record)  # type: ignore[method-assign]
        torch._logging.set_logs(graph_breaks=True)  # the documented switch (torch.compile's troubleshooting)
        dynamo = logging.getLogger("torch._dynamo")  # where dynamo's records stop (torch sets propagate off)
        handlers = [*dynamo.handlers, *logging.getLogger("torch").handlers]  # torch's own printers
        dynamo.addHandler(collect)
        for handler in handlers:
            handler.addFilter(quiet)
        try:
            return step(*args, **kwargs)
        finally:
            torch._logging.set_logs()
            dynamo.removeHandler(collect)
            for handler in handlers:
                handler.removeFilter(quiet)
            say(graph_break_summary([r.getMessage() for r in collect.records if _is_graph_break(r)]))

    return stepped


def fused_options(optimizer: str, fused: bool | None, device: torch.device) -> dict[str, Any]:
    """The keyword that makes ``optimizer`` (adamw, sgd) take fused steps: ``fused`` as given, or auto (on CUDA)."""
    if optimizer not in ("adamw", "sgd"):
        return {}
    use = fused if fused is not None else device.type == "cuda"
    return {"fused": True} if use else {}
