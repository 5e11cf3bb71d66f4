"""One optimisation step and its guard against non-finite numbers.

A step: inputs to the device, forward under autocast, the objective (statistics in float32 whatever the
autocast dtype) plus the VCReg hooks' penalty, backward (whole, or in ``train.micro_batch_size`` chunks with the
objective still on the whole batch: :mod:`mmvicreg.train.chunked`), the gradient norm (clipped at ``train.grad_clip``),
then ONE host synchronisation reads whether the loss and the gradient norm are finite on every process. A finite
step updates the weights and the schedule; a non-finite one stops the run (``train.on_nonfinite=stop``, naming
the term and the last good checkpoint) or is skipped (``skip``), until ``train.max_consecutive_skips`` skips in a
row say that the weights themselves are broken.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from mmvicreg.train.checkpoint import latest_checkpoint
from mmvicreg.train.chunked import forward_backward


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite and the run is configured to stop."""


@dataclass
class StepOutput:
    """A step that updated the weights: the objective's output and the embeddings it saw."""

    out: Any
    zs: dict[str, torch.Tensor]


@dataclass
class NonFiniteGuard:
    """Decides what a non-finite step does: stop the run, or skip the batch (at most ``max_consecutive`` in a row)."""

    policy: str
    max_consecutive: int
    output_dir: Path
    say: Callable[[str], None] = print
    consecutive: int = field(default=0)

    def allows(self, problem: str | None, step: int) -> bool:
        """True when the update may be taken; False to skip this batch; raises when the run must stop."""
        if problem is None:
            self.consecutive = 0
            return True
        if self.policy == "stop":
            raise nonfinite_error(step, problem, self.output_dir)
        self.say(f"skipping step {step}: non-finite {problem}")
        self.consecutive += 1
        if self.consecutive >= self.max_consecutive:
            raise nonfinite_error(
                step, f"{problem}, {self.consecutive} batches in a row (train.max_consecutive_skips)", self.output_dir
            )
        return False


def optimisation_step(run: Any, batch: Mapping[str, torch.Tensor], guard: NonFiniteGuard) -> StepOutput | None:
    """Forward, objective, backward and, when every number is finite, the update. None: the batch was skipped.

    ``run`` holds ``accelerator``, ``model``, ``objective``, ``vcreg``, ``optimizer``, ``scheduler``,
    ``trainable`` (every parameter the optimiser updates), ``config`` and ``state`` (see ``setup.Run``).
    """
    accelerator, t = run.accelerator, run.config.train
    batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
    # Backward always runs (under DDP it is a collective: every rank must join); whole or in micro-batches
    # (chunked.py). The norm is needed anyway to catch non-finite gradients under a finite loss; with no
    # train.grad_clip, clipping at inf only measures it.
    out, zs = forward_backward(run, batch)
    grad_norm = accelerator.clip_grad_norm_(run.trainable, t.grad_clip or float("inf"))
    flags = torch.stack([out.loss.detach().float(), torch.as_tensor(grad_norm).float().to(out.loss.device)])
    bad_loss, bad_grad = accelerator.reduce((~torch.isfinite(flags)).float(), "sum").tolist()  # the one sync
    problem = None  # the same on every process: the flags were summed over processes
    if bad_loss > 0:
        problem = ", ".join(nonfinite_terms(out))
    elif bad_grad > 0 and accelerator.scaler is None:
        # Under fp16 loss scaling, overflowing gradients are routine: the GradScaler inside optimizer.step()
        # skips that update and lowers the scale, so they are not a problem here.
        problem = f"gradient norm = {float(grad_norm)}"
    if not guard.allows(problem, run.state.step + 1):
        run.optimizer.zero_grad(set_to_none=True)
        return None
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return StepOutput(out, zs)


def named_terms(out: Any) -> dict[str, torch.Tensor]:
    """Every scalar tensor an objective's output holds, by the name a log gives it, whatever the objective.

    The output's fields (a ``NamedTuple``'s or a dataclass's) and its ``terms``: a tensor by its field's name
    (``variance``); a mapping of tensors by their keys (``terms``: ``infonce/image-text``, ``temperature``); a
    mapping of mappings ``{branch: {term: tensor}}`` as ``term/branch`` (``per_branch``: ``variance/image``).
    """
    if hasattr(out, "_asdict"):
        fields = dict(out._asdict())
    elif dataclasses.is_dataclass(out):
        fields = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    else:
        fields = {}
    if isinstance(getattr(out, "terms", None), Mapping):
        fields.setdefault("terms", out.terms)
    named: dict[str, torch.Tensor] = {}
    for name, value in fields.items():
        if isinstance(value, torch.Tensor):
            named[name] = value
        elif isinstance(value, Mapping):
            for key, inner in value.items():
                if isinstance(inner, torch.Tensor):
                    named[str(key)] = inner
                elif isinstance(inner, Mapping):
                    named.update({f"{t}/{key}": v for t, v in inner.items() if isinstance(v, torch.Tensor)})
    return {k: v for k, v in named.items() if v.numel() == 1}


def nonfinite_terms(out: Any) -> list[str]:
    """``"variance = nan"``-style names of the non-finite terms the objective returned (else the loss)."""
    values = {k: float(v.detach()) for k, v in named_terms(out).items() if k != "loss"}
    return [f"{k} = {v}" for k, v in values.items() if not math.isfinite(v)] or [f"loss = {float(out.loss.detach())}"]


def nonfinite_error(step: int, what: str, output_dir: Path) -> NonFiniteLossError:
    last = latest_checkpoint(output_dir)
    return NonFiniteLossError(
        f"non-finite training at step {step}: {what}. The run stopped; the last good checkpoint is "
        f"{last or 'none (no checkpoint was written yet)'}. Lower the learning rate, add train.grad_clip, "
        f"or set train.on_nonfinite=skip{', and rerun with resume=true' if last else ', and rerun with overwrite=true'}"
    )


def weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())
