"""VCReg: VICReg's variance and covariance terms on intermediate layers of any model (Zhu et al., 2023).

For one layer output ``x`` made into an (m, c) matrix ``Z`` of samples × features (see ``spatial``):

    ``penalty(x) = μ·v_γ(Z) + ν·c(Z)``

with ``v`` and ``c`` the VICReg terms (:mod:`mmvicreg.objective.vicreg`; no /2 here). :class:`VCRegHooks` sums
it over every output its forward hooks collected since the previous call.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import torch
from torch import nn

from mmvicreg.choices import VCREG_FORMS, VCREG_SPATIAL, check_choice, did_you_mean
from mmvicreg.distributed import gather_with_grad
from mmvicreg.objective.numerics import check_algorithm, check_embeddings, min_rows
from mmvicreg.objective.vcreg_paper import as_samples, fast_vcreg, vcreg_terms
from mmvicreg.objective.vicreg import _covariance, _variance

__all__ = ["VCRegHooks", "vcreg_penalty"]

PAPER_DELTA = 1.0  # the SmoothL1 threshold of form="paper" (a public implementation's; see vcreg_paper)


def vcreg_penalty(
    x: torch.Tensor,
    *,
    variance_weight: float = 1.0,
    covariance_weight: float = 0.04,
    gamma: float = 1.0,
    eps: float = 1e-4,
    spatial: str = "locations",
    channel_dim: int | None = None,
    covariance: str = "auto",
    gather: bool = False,
    form: str = "vicreg",
    delta: float | None = None,
) -> torch.Tensor:
    """VCReg on one layer output: ``μ·v_γ(Z) + ν·c(Z)`` with v and c the VICReg terms (``form="vicreg"``), or the
    VCReg paper's normalisation with weights α = ``variance_weight``, β = ``covariance_weight`` (``form="paper"``):
    :mod:`mmvicreg.objective.vcreg_paper` gives both equations and their provenance.

    ``Z`` (m, c) is made from ``x`` according to ``spatial``:

    * ``"locations"`` (default, as in the VCReg paper): every spatial position is a sample, ``m = n·h·w``:
      (n, c, h, w) → (n·h·w, c); a 3-D (n, L, d) token sequence → (n·L, d);
    * ``"pool"``: average over the spatial positions, (n, c);
    * ``"flatten"``: (n, c·h·w).

    ``channel_dim`` (default: 1 for 4-D and 5-D outputs, the (n, c, h, w) convention of convolutions, and -1 for
    3-D outputs, the (n, L, d) convention of sequence models) says which axis holds the features; pass 1 for a
    Conv1d output (n, c, L). ``gather=True`` uses every rank's samples under torch.distributed. ``delta`` is the
    SmoothL1 threshold of the covariance penalty; ``None`` takes the form's own (vicreg: x², paper: δ = 1).
    """
    check_choice(spatial, VCREG_SPATIAL, "spatial")
    check_choice(form, VCREG_FORMS, "VCReg form")
    check_algorithm(covariance)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"VCReg needs a tensor layer output, got {type(x).__name__}")
    z = check_embeddings(as_samples(x, spatial, channel_dim), "the VCReg features", min_rows(gather))
    if gather:
        z = gather_with_grad(z)
    if form == "vicreg" and delta is None:
        return variance_weight * _variance(z, gamma, eps) + covariance_weight * _covariance(z, covariance)
    return vcreg_terms(z, form, variance_weight, covariance_weight, gamma, eps, form_delta(form, delta))


def form_delta(form: str, delta: float | None) -> float | None:
    """The SmoothL1 threshold ``delta`` resolves to: given, or the form's own (vicreg: None = x², paper: 1.0)."""
    return delta if delta is not None else (PAPER_DELTA if form == "paper" else None)


class VCRegHooks:
    """Variance–covariance regularisation (VCReg; Zhu et al., 2023) of chosen intermediate layers of any model.

    Forward hooks on the modules named in ``layers`` (dotted names from ``model.named_modules()``) keep each
    output produced while gradients are enabled; :meth:`loss` returns

        ``Σ_{layer, call} μ·v_γ(Z) + ν·c(Z)``

    over everything collected since the previous call (one term per call of a layer, so a module run on two
    views gives two terms with their own statistics), then forgets it. Add it to any loss — a classifier's
    cross-entropy for supervised VCReg, or an SSL objective::

        hooks = VCRegHooks(model, ["layer2", "layer3"], variance_weight=1.0, covariance_weight=0.04)
        loss = F.cross_entropy(model(x), y) + hooks.loss()

    Why each spatial location is a sample by default (``spatial="locations"``, (n, c, h, w) → (n·h·w, c)), as
    the VCReg paper does: the features a later layer reads are the c channels, so those are what the variance
    and covariance should spread and decorrelate; n·h·w samples estimate a c×c covariance well even with a small
    batch; flattening (c·h·w features from n samples) would be rank-deficient and would also push apart
    neighbouring pixels, which natural images correlate by nature; pooling keeps only n samples and ignores the
    variation across positions. ``"pool"`` and ``"flatten"`` are available.

    ``form`` picks the normalisation (``"vicreg"``: μ, ν as above; ``"paper"``: the VCReg paper's α, β with a
    SmoothL1 covariance; :mod:`mmvicreg.objective.vcreg_paper`). ``fast=True`` is the paper's fast path: each
    hooked output is passed through :func:`~mmvicreg.objective.vcreg_paper.fast_vcreg`, whose gradient is written by
    hand, so no graph of the penalty is recorded; :meth:`loss` returns the same value either way.

    Outputs produced under ``torch.no_grad()`` (evaluation) are not collected. A module that returns a tuple or
    list contributes its first tensor: for an ``nn.GRU`` fed a packed sequence (the ``gru`` text tower) that is
    ``h_n``, the final hidden state of each layer (num_layers, n, hidden), since the output sequence comes back as a
    ``PackedSequence``; hook a module after the GRU to regularise something else. ``gather=True`` uses the global batch
    under torch.distributed (costly for large feature maps; off by default). Use as a context manager, or call
    :meth:`remove` to detach the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str],
        *,
        variance_weight: float = 1.0,
        covariance_weight: float = 0.04,
        gamma: float = 1.0,
        eps: float = 1e-4,
        spatial: str = "locations",
        channel_dim: int | None = None,
        covariance: str = "auto",
        gather: bool = False,
        form: str = "vicreg",
        delta: float | None = None,
        fast: bool = False,
    ) -> None:
        layers = list(dict.fromkeys(layers))
        if not layers:
            raise ValueError("VCRegHooks needs at least one layer name (see model.named_modules())")
        check_choice(spatial, VCREG_SPATIAL, "spatial")
        check_choice(form, VCREG_FORMS, "VCReg form")
        check_algorithm(covariance)
        if fast and (gather or spatial == "pool"):
            raise ValueError(f"the fast VCReg path (loss.vcreg_fast) cannot take "
                             f"{'gather=True' if gather else 'spatial=pool'}; set loss.vcreg_fast: false")
        modules = dict(model.named_modules())
        available = [n for n in modules if n]
        for name in layers:
            if name not in modules or not name:
                shown = ", ".join(available[:30]) + (", ..." if len(available) > 30 else "")
                raise ValueError(
                    f"VCReg layer {name!r} is not a module of {type(model).__name__}"
                    f"{did_you_mean(name, available, n=5)} (its modules: {shown})"
                )
        self.layers = layers
        self.options = dict(
            variance_weight=variance_weight,
            covariance_weight=covariance_weight,
            gamma=gamma,
            eps=eps,
            spatial=spatial,
            channel_dim=channel_dim,
            covariance=covariance,
            gather=gather,
            form=form,
            delta=delta,
        )
        self.fast = fast
        self.enabled = True
        self.last_terms: dict[str, torch.Tensor] = {}
        self._collected: list[tuple[str, torch.Tensor]] = []
        self._handles = [modules[name].register_forward_hook(self._hook_for(name)) for name in layers]

    def _hook_for(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if not self.enabled or not torch.is_grad_enabled():
                return None
            outputs = output
            if isinstance(output, (tuple, list)):
                output = next((o for o in output if isinstance(o, torch.Tensor)), None)
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"VCReg layer {name!r} ({type(module).__name__}) returned {type(output).__name__}; "
                    f"choose a layer whose output is a tensor (or a tuple starting with one)"
                )
            if not self.fast:
                self._collected.append((name, output))
                return None
            return self._fast(name, output, outputs)

        return hook

    def _fast(self, name: str, first: torch.Tensor, outputs: Any) -> Any:
        """The module's outputs with ``first`` passed through :func:`fast_vcreg`; keeps the penalty's value."""
        o = self.options
        passed, value = fast_vcreg(
            first, form=o["form"], variance_weight=o["variance_weight"], covariance_weight=o["covariance_weight"],
            gamma=o["gamma"], eps=o["eps"], delta=form_delta(o["form"], o["delta"]), spatial=o["spatial"],
            channel_dim=o["channel_dim"],
        )
        self._collected.append((name, value))
        if isinstance(outputs, torch.Tensor):
            return passed
        items = list(outputs)
        items[next(i for i, item in enumerate(items) if item is first)] = passed
        if type(outputs) in (tuple, list):
            return type(outputs)(items)
        raise TypeError(f"the fast VCReg path cannot rebuild layer {name!r}'s {type(outputs).__name__} output; "
                        f"set loss.vcreg_fast: false")

    def loss(self) -> torch.Tensor:
        """The summed VCReg penalty of everything collected since the last call; clears the collection."""
        collected, self._collected = self._collected, []
        if not collected:
            raise RuntimeError(
                f"VCReg collected no activations from {self.layers}: run the model forward (with gradients "
                f"enabled) before calling loss(), and call loss() once per forward"
            )
        total = None
        terms: dict[str, torch.Tensor] = {}
        for name, x in collected:
            value = x if self.fast else vcreg_penalty(x, **self.options)  # type: ignore[arg-type]
            key = f"vcreg/{name}"
            terms[key] = terms[key] + value.detach() if key in terms else value.detach()
            total = value if total is None else total + value
        self.last_terms = terms
        return total  # type: ignore[return-value]

    def clear(self) -> None:
        """Forget what was collected (e.g. after a skipped step)."""
        self._collected = []

    def remove(self) -> None:
        """Detach every hook; nothing is collected afterwards."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._collected = []

    def __enter__(self) -> "VCRegHooks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"VCRegHooks(layers={self.layers}, {opts}, fast={self.fast})"


# A container of an encoder's blocks, by the names timm, open_clip, Hugging Face and our towers give it: a ResNet's
# layer1..layer4, a ViT's / ConvNeXt stage's blocks, open_clip's resblocks, BERT's encoder.layer, a GRU tower's gru.
_BLOCK_CONTAINERS = re.compile(r"(^|\.)(layer\d+|blocks|resblocks|layers|layer)$")
BLOCKS = "blocks"  # the loss.vcreg_layers word for "every block" (the VCReg paper applies it to each block's output)


def block_names(model: nn.Module) -> list[str]:
    """The dotted names of every block of ``model``: each child of a block container (:data:`_BLOCK_CONTAINERS`,
    an ``nn.Sequential`` or ``nn.ModuleList``), and each recurrent layer (``nn.GRU``, ``nn.LSTM``: its output is
    the tower's state). Nested containers (a ConvNeXt's ``stages.N.blocks``) are read at their innermost level."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.GRU, nn.LSTM)):
            names.append(name)
        elif isinstance(module, (nn.Sequential, nn.ModuleList)) and _BLOCK_CONTAINERS.search(name):
            names.extend(f"{name}.{child}" for child, _ in module.named_children())
    inner = [n for n in names if not any(other.startswith(n + ".") for other in names)]
    return list(dict.fromkeys(inner))


def resolve_layers(model: nn.Module, layers: Iterable[str]) -> list[str]:
    """``layers`` with the word ``blocks`` replaced by :func:`block_names`; ValueError when it finds none."""
    out: list[str] = []
    for name in layers:
        if name != BLOCKS:
            out.append(name)
            continue
        found = block_names(model)
        if not found:
            raise ValueError(f"loss.vcreg_layers: {BLOCKS!r} found no blocks in {type(model).__name__} (no layerN, "
                             f"blocks, resblocks or layers container, no GRU); name the modules instead")
        out.extend(found)
    return list(dict.fromkeys(out))
