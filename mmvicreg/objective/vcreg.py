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

from mmvicreg.choices import VCREG_SPATIAL, check_choice, did_you_mean
from mmvicreg.distributed import gather_with_grad
from mmvicreg.objective.numerics import check_algorithm, check_embeddings, min_rows
from mmvicreg.objective.vicreg import _covariance, _variance

__all__ = ["VCRegHooks", "vcreg_penalty"]


def _as_samples(x: torch.Tensor, spatial: str, channel_dim: int | None) -> torch.Tensor:
    """An (m, c) matrix of samples × features from a layer output of shape (n, ...)."""
    if x.ndim == 2:
        return x
    if x.ndim < 2:
        raise ValueError(f"VCReg needs a batch of features, got a {x.ndim}-D output of shape {tuple(x.shape)}")
    if spatial == "flatten":
        return x.flatten(1)
    cdim = channel_dim if channel_dim is not None else (1 if x.ndim >= 4 else -1)
    cdim = cdim % x.ndim
    if cdim == 0:
        raise ValueError("channel_dim cannot be the batch dimension (0)")
    x = x.movedim(cdim, -1)  # (n, *spatial, c)
    if spatial == "pool":
        return x.flatten(1, -2).mean(dim=1)
    return x.reshape(-1, x.shape[-1])


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
) -> torch.Tensor:
    """VCReg on one layer output: ``μ·v_γ(Z) + ν·c(Z)`` with v and c the VICReg terms.

    ``Z`` (m, c) is made from ``x`` according to ``spatial``:

    * ``"locations"`` (default, as in the VCReg paper): every spatial position is a sample, ``m = n·h·w``:
      (n, c, h, w) → (n·h·w, c); a 3-D (n, L, d) token sequence → (n·L, d);
    * ``"pool"``: average over the spatial positions, (n, c);
    * ``"flatten"``: (n, c·h·w).

    ``channel_dim`` (default: 1 for 4-D and 5-D outputs, the (n, c, h, w) convention of convolutions, and -1 for
    3-D outputs, the (n, L, d) convention of sequence models) says which axis holds the features; pass 1 for a
    Conv1d output (n, c, L). ``gather=True`` uses every rank's samples under torch.distributed.
    """
    check_choice(spatial, VCREG_SPATIAL, "spatial")
    check_algorithm(covariance)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"VCReg needs a tensor layer output, got {type(x).__name__}")
    z = check_embeddings(_as_samples(x, spatial, channel_dim), "the VCReg features", min_rows(gather))
    if gather:
        z = gather_with_grad(z)
    return variance_weight * _variance(z, gamma, eps) + covariance_weight * _covariance(z, covariance)


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
    ) -> None:
        layers = list(dict.fromkeys(layers))
        if not layers:
            raise ValueError("VCRegHooks needs at least one layer name (see model.named_modules())")
        check_choice(spatial, VCREG_SPATIAL, "spatial")
        check_algorithm(covariance)
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
        )
        self.enabled = True
        self.last_terms: dict[str, torch.Tensor] = {}
        self._collected: list[tuple[str, torch.Tensor]] = []
        self._handles = [modules[name].register_forward_hook(self._hook_for(name)) for name in layers]

    def _hook_for(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.enabled or not torch.is_grad_enabled():
                return
            if isinstance(output, (tuple, list)):
                output = next((o for o in output if isinstance(o, torch.Tensor)), None)
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"VCReg layer {name!r} ({type(module).__name__}) returned {type(output).__name__}; "
                    f"choose a layer whose output is a tensor (or a tuple starting with one)"
                )
            self._collected.append((name, output))

        return hook

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
            value = vcreg_penalty(x, **self.options)  # type: ignore[arg-type]
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
        return f"VCRegHooks(layers={self.layers}, {opts})"


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
