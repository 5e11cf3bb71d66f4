"""Supervised pretraining: cross-entropy of a linear classifier head on one image branch's representation.

For the branch's representation ``H`` (n, D) (the encoder's output ``h``, before the expander) and integer class
labels ``y`` (n,) in ``0..K-1``, with a linear head ``W`` (K, D), ``b`` (K):

    ``L = CE(H Wᵀ + b, y) = -(1/n) Σ_i log softmax(H_i Wᵀ + b)_{y_i}``   (``F.cross_entropy``, mean over the batch)

Why ``h`` and not ``z``: standard supervised pretraining (and the VCReg paper's supervised ImageNet runs) puts the
classifier on the backbone's pooled features, and what transfers, and what k-NN and linear probes read from an
export, is that same ``h``. An expander would get no gradient from this objective, so a config must say
``expander: none`` (checked at load). VCReg (``loss.vcreg_layers``) adds its penalty on the blocks as for any objective.

``K`` (``num_classes``) is the training data's number of classes and ``D`` (``representation_dims[branch]``) the
encoder's output width; both are handed to the builder by the trainer. The head trains with the model and is
saved in checkpoints (an exact resume), not in the exported model. Under torch.distributed its gradient is averaged
over ranks (the head is not wrapped in DistributedDataParallel), as each rank's loss is the mean over its rows.

The reported VICReg terms are diagnostics of ``H`` (no invariance term: there is no pair), computed detached.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from mmvicreg.distributed import average_grad_over_ranks
from mmvicreg.objective.numerics import check_embeddings
from mmvicreg.objective.vicreg import BranchCoefficients, ObjectiveOutput, covariance_term, variance_term

__all__ = ["ReadsTargets", "SupervisedObjective"]

LABEL = "label"  # the raw sample field the labelled image sources give (folder, digits, hf)


@runtime_checkable
class ReadsTargets(Protocol):
    """An objective that reads raw sample fields besides the branches' outputs: the trainer carries
    ``target_fields`` (e.g. ``("label",)``) from the loader to ``forward(outputs, targets)``, and hands it each
    branch's ``layer`` (``"embedding"``: z, after the expander; ``"representation"``: h, before it)."""

    target_fields: tuple[str, ...]
    layer: str

    def forward(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> Any: ...


class SupervisedObjective(nn.Module):
    """Cross-entropy of a linear head on the one branch's representation ``h`` (module docstring).

    ``branch_names`` must hold exactly one branch (an image branch reading labelled images); ``num_classes`` K ≥ 2;
    ``representation_dims[branch]`` D. ``forward({branch: h}, {"label": y})`` raises ValueError naming the label
    when one lies outside ``0..K-1`` (``-1`` is an unlabelled image).
    """

    name = "supervised"
    target_fields = (LABEL,)
    layer = "representation"

    def __init__(
        self,
        branch_names: Sequence[str],
        *,
        num_classes: int,
        representation_dims: Mapping[str, int],
        coefficients: Mapping[str, BranchCoefficients] | None = None,
        gamma: float = 1.0,
        eps: float = 1e-4,
        covariance: str = "auto",
        gather: bool = True,
    ) -> None:
        super().__init__()
        names = list(branch_names)
        if len(names) != 1:
            raise ValueError(f"the supervised objective trains one image branch with a classifier head; got "
                             f"branches {names}: keep one branch (the image encoder to pretrain)")
        if num_classes < 2:
            raise ValueError(f"the supervised objective needs at least 2 classes, the training data has {num_classes}")
        self.branch = names[0]
        self.num_classes = int(num_classes)
        self.head = nn.Linear(int(representation_dims[self.branch]), self.num_classes)
        self.coefficients = dict(coefficients or {})
        self.gamma, self.eps, self.covariance, self.gather = gamma, eps, covariance, gather

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """``H Wᵀ + b`` in float32 (the head's gradient averaged over ranks under torch.distributed)."""
        weight, bias = self.head.weight, self.head.bias
        if self.gather:
            weight, bias = average_grad_over_ranks(weight), average_grad_over_ranks(bias)
        return F.linear(h.float(), weight, bias)

    def check_labels(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` as int64 on the head's device; ValueError naming the first label outside ``0..K-1``."""
        if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.is_floating_point():
            raise TypeError(f"the supervised objective's {LABEL!r} must be a 1-D integer tensor of class indices")
        y = y.to(self.head.weight.device, torch.long)
        bad = (y < 0) | (y >= self.num_classes)
        if bool(bad.any()):  # one host sync per step; a CUDA cross-entropy would assert instead of naming it
            label = int(y[bad][0])
            what = "-1 (an unlabelled image)" if label == -1 else str(label)
            raise ValueError(f"label {what} is outside the classifier head's {self.num_classes} classes "
                             f"(0..{self.num_classes - 1}, taken from the training data); train on labelled "
                             f"images of those classes only (data.train.classes selects classes)")
        return y

    def forward(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> ObjectiveOutput:
        """``L = CE(H Wᵀ + b, y)``; ``terms``: ``supervised`` (L) and ``accuracy`` (top-1 on the batch)."""
        if self.branch not in outputs:
            raise KeyError(f"the supervised objective reads branch {self.branch!r}; got {sorted(outputs)}")
        if LABEL not in targets:
            raise KeyError(f"the supervised objective needs the {LABEL!r} of each sample; got {sorted(targets)}")
        h = check_embeddings(outputs[self.branch], f"the representation of branch {self.branch!r}", 1)
        y = self.check_labels(targets[LABEL])
        if y.shape[0] != h.shape[0]:
            raise ValueError(f"{y.shape[0]} labels for {h.shape[0]} representations")
        logits = self.logits(h)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=1) == y).float().mean()
            out = self.diagnostics(h.detach())
        return out._replace(loss=loss, terms={self.name: loss.detach(), "accuracy": accuracy})

    def diagnostics(self, h: torch.Tensor) -> ObjectiveOutput:
        """The VICReg variance and covariance of ``H`` (detached; invariance 0: there is no pair)."""
        zero = h.new_zeros((), dtype=torch.float32)
        if h.shape[0] < 2:
            return ObjectiveOutput(zero, zero, zero, zero, {})
        gamma = self.coefficients[self.branch].gamma if self.branch in self.coefficients else self.gamma
        v, c = variance_term(h, gamma, self.eps), covariance_term(h, self.covariance)
        return ObjectiveOutput(zero, zero, v, c, {self.branch: {"variance": v, "covariance": c}})

    def extra_repr(self) -> str:
        return f"branch={self.branch!r}, num_classes={self.num_classes}, layer={self.layer!r}"
