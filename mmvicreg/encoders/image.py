"""Image encoders: any timm model (ResNet, ViT, ...) and open_clip vision towers, returning pooled features.

``pretrained`` means the same for both (see :mod:`mmvicreg.encoders.weights`): false (random init, the
default), a tag the library knows (timm: ``true`` or a tag; open_clip: a tag) or a local weights file.
:meth:`~mmvicreg.encoders.Encoder.preprocessing` says what the weights expect of their inputs.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

from mmvicreg.encoders import freezing
from mmvicreg.encoders.base import Encoder
from mmvicreg.encoders.weights import open_clip_model, timm_model

# timm.create_model's options that load weights from a file, a URL or the Hub (besides `pretrained`)
TIMM_WEIGHT_OPTIONS = ("checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _size(size: Any) -> int:
    """An int side from an int or an ``(h, w)`` / ``(c, h, w)`` size (the last entry, as timm reads it)."""
    return int(size[-1]) if isinstance(size, (tuple, list)) else int(size)


def timm_checkpointing(model: nn.Module, enable: bool, label: str) -> None:
    """``model.set_grad_checkpointing(enable)`` of a timm model; one ``ValueError`` when the model refuses."""
    switch = getattr(model, "set_grad_checkpointing", None)
    if switch is None:
        if enable:
            raise freezing.checkpointing_refused(label, f"timm model {type(model).__name__} has no switch")
        return
    try:
        switch(enable)
    except (AssertionError, NotImplementedError) as e:  # timm's way of saying "not for this architecture"
        raise freezing.checkpointing_refused(label, f"timm: {str(e) or type(e).__name__}") from None


@functools.lru_cache(maxsize=64)
def timm_options(arch: str) -> frozenset[str] | None:
    """The keyword options ``timm.create_model(arch, ...)`` takes: its own, ``build_model_with_cfg``'s and the
    model class's constructor arguments. The class is read from a model made on the meta device (no memory, no
    weights). None when the class takes any keyword, or cannot be made there (the build then names a bad option).
    """
    import timm
    from timm.models import build_model_with_cfg

    try:
        with torch.device("meta"):
            model_cls = type(timm.create_model(arch, pretrained=False))
    except Exception:  # noqa: BLE001 - an architecture that cannot be made on the meta device: no answer here
        return None
    names: set[str] = set()
    for fn in (model_cls.__init__, timm.create_model, build_model_with_cfg):
        params = list(inspect.signature(fn).parameters.values())
        if fn is model_cls.__init__ and any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return frozenset(names - {"self", "model_name", "model_cls", "variant", "pretrained"})


def timm_groups(model: nn.Module, prefix: str, label: str) -> list[list[str]]:
    """timm's coarse layer groups of ``model`` (stem, then each stage or block, ...), names prefixed by ``prefix``.

    The grouping open_clip's ``TimmModel.lock`` uses: ``model.group_matcher(coarse=True)`` read by
    ``timm.models.group_parameters``.
    """
    from timm.models import group_parameters

    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        raise freezing.freezing_unsupported(label, f"timm model {type(model).__name__} has no group_matcher")
    grouped = group_parameters(model, matcher(coarse=True))
    return [[prefix + name for name in grouped[key]] for key in sorted(grouped)]


class TimmImageEncoder(Encoder):
    """``timm.create_model(name, num_classes=0)``: the pooled pre-logits features, ``num_features`` wide.

    ``name`` may carry a timm tag (``vit_tiny_patch16_224.augreg_in21k``). ``pretrained``: False (random init,
    the default), True (timm's default weights for ``name``: network or cache), a tag (``tv_in1k`` or
    ``resnet152.tv_in1k``: network or cache), or a local weights file or folder (loaded with the pretrained
    config of ``name``). ``image_size`` is passed to models that take ``img_size`` (ViTs); ``kwargs`` pass
    through to ``timm.create_model``.
    """

    modality = "image"
    supports_gradient_checkpointing = True

    @classmethod
    def options(cls, name: str) -> frozenset[str] | None:
        """``pretrained``, ``image_size`` and what timm takes for ``name`` (:func:`timm_options`; None: unknown)."""
        timm_keys = timm_options(name.partition(".")[0])
        return None if timm_keys is None else frozenset({"pretrained", "image_size"} | timm_keys)

    @classmethod
    def architecture_only(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` without ``pretrained`` nor timm's options that load weights (:data:`TIMM_WEIGHT_OPTIONS`)."""
        return {k: v for k, v in spec.items() if k not in ("pretrained", *TIMM_WEIGHT_OPTIONS)}

    def __init__(self, name: str, pretrained: bool | str = False, image_size: int | None = None, **kwargs: Any):
        super().__init__()
        self.image_size, self.kwargs = image_size, dict(kwargs)
        self.pretrained = bool(pretrained)
        self.model, self.name = timm_model(name, pretrained, image_size, **kwargs)
        self.output_dim = int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def preprocessing(self) -> dict[str, Any]:
        """timm's data config of the loaded weights; ``{}`` for random init; ``image_size`` sets ``size``."""
        import timm.data

        size = {"size": int(self.image_size)} if self.image_size else {}
        if not self.pretrained:
            return size
        cfg = timm.data.resolve_model_data_config(self.model)
        return {
            "size": _size(cfg["input_size"]),
            "mean": tuple(float(v) for v in cfg["mean"]),
            "std": tuple(float(v) for v in cfg["std"]),
            "interpolation": str(cfg["interpolation"]),
            "crop_pct": float(cfg["crop_pct"]),
            **size,
        }

    def spec(self) -> dict[str, Any]:
        # No `pretrained` nor a checkpoint file: the weights come from the export, so a rebuilt encoder never
        # needs the network or another file.
        kwargs = {k: v for k, v in self.kwargs.items() if k not in TIMM_WEIGHT_OPTIONS}
        return {"name": self.name, "image_size": self.image_size, **kwargs}

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """timm's ``set_grad_checkpointing(enable)``; ``ValueError`` for architectures timm has none for.

        BatchNorm layers in train mode run again in the backward recomputation, so their running statistics take
        two momentum updates per step (gradients are unchanged; a torch/timm property of checkpointing)."""
        timm_checkpointing(self.model, enable, self.name)

    def layer_groups(self) -> list[list[str]]:
        """timm's coarse groups: the stem, then each stage (CNNs) or block (ViTs; the final norm with the last)."""
        return timm_groups(self.model, "model.", self.name)


class OpenCLIPImageEncoder(Encoder):
    """The vision tower of an open_clip model by name (``RN50``, ``ViT-B-32``, ...), random init by default.

    ``pretrained``: None/False (random init), an open_clip tag (``laion2b_s34b_b79k``, ``openai``: network or
    cache) or a local weights file (``open_clip.create_model(model, pretrained=<file>)``).
    """

    modality = "image"
    supports_gradient_checkpointing = True

    def __init__(self, model: str, pretrained: str | bool | None = None, image_size: int | None = None):
        super().__init__()
        import open_clip

        self.model_name, self.image_size = model, image_size
        kwargs: dict[str, Any] = {"force_image_size": image_size} if image_size else {}
        clip = open_clip_model(model, pretrained, **kwargs)
        self.visual = clip.visual
        self.output_dim = int(self.visual.output_dim)
        cfg = open_clip.get_model_preprocess_cfg(clip)
        # open_clip's eval preprocessing resizes to `size` and centre-crops `size`: crop fraction 1.
        self.preprocess = {
            "size": _size(cfg["size"]),
            "mean": tuple(float(v) for v in cfg["mean"]),
            "std": tuple(float(v) for v in cfg["std"]),
            "interpolation": str(cfg.get("interpolation", "bicubic")),
            "crop_pct": 1.0,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def preprocessing(self) -> dict[str, Any]:
        """open_clip's preprocessing config of this model and weights (also for random init: CLIP statistics)."""
        return dict(self.preprocess)

    def spec(self) -> dict[str, Any]:
        return {"name": f"open_clip:{self.model_name}", "image_size": self.image_size}

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """The tower's ``set_grad_checkpointing(enable)``; a timm tower's trunk switches through timm (its errors
        surface rather than open_clip's warning); ResNet towers (``RN50``, ...) have none: ``ValueError``."""
        label = f"open_clip:{self.model_name}"
        trunk = getattr(self.visual, "trunk", None)
        if trunk is not None:
            timm_checkpointing(trunk, enable, label)
        elif hasattr(self.visual, "transformer"):
            self.visual.set_grad_checkpointing(enable)
        elif enable:
            raise freezing.checkpointing_refused(label, "open_clip has no checkpointing for its ResNet towers")

    def layer_groups(self) -> list[list[str]]:
        """The groups of open_clip's ``lock``: ViT towers: [patch embedding, class and positional embeddings,
        ln_pre], each block (the last with ln_post and any pooling), [proj]; timm towers: timm's coarse groups of
        the trunk, then the head; ResNet towers: [stem], layer1..layer4, [attnpool]."""
        label, visual = f"open_clip:{self.model_name}", self.visual
        names = [name for name, _ in self.named_parameters()]
        if getattr(visual, "trunk", None) is not None:
            groups = timm_groups(visual.trunk, "visual.trunk.", label)
            head = [name for name in names if not freezing.under(name, "visual.trunk")]
            return groups + [head] if head else groups
        blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if blocks is not None:
            embed = [f"visual.{n}" for n in ("conv1", "class_embedding", "positional_embedding", "ln_pre")]
            layers = [[f"visual.transformer.resblocks.{i}"] for i in range(len(blocks))]
            return freezing.prefix_groups(names, [embed, *layers, ["visual.proj"]], rest=-2)
        if all(hasattr(visual, n) for n in ("layer1", "layer2", "layer3", "layer4", "attnpool")):
            stages = [[f"visual.layer{i}"] for i in range(1, 5)]
            return freezing.prefix_groups(names, [[], *stages, ["visual.attnpool"]], rest=0)
        raise freezing.freezing_unsupported(label, f"unknown open_clip tower {type(visual).__name__}")
