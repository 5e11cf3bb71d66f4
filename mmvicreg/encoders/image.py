"""Image encoders: any timm model (ResNet, ViT, ...) and open_clip vision towers, returning pooled features.

``pretrained`` means the same for both (see :mod:`mmvicreg.encoders.weights`): false (random init, the
default), a tag the library knows (timm: ``true`` or a tag; open_clip: a tag) or a local weights file.
:meth:`~mmvicreg.encoders.Encoder.preprocessing` says what the weights expect of their inputs.
"""

from __future__ import annotations

from typing import Any

import torch

from mmvicreg.encoders.base import Encoder
from mmvicreg.encoders.weights import open_clip_model, timm_model


def _size(size: Any) -> int:
    """An int side from an int or an ``(h, w)`` / ``(c, h, w)`` size (the last entry, as timm reads it)."""
    return int(size[-1]) if isinstance(size, (tuple, list)) else int(size)


class TimmImageEncoder(Encoder):
    """``timm.create_model(name, num_classes=0)``: the pooled pre-logits features, ``num_features`` wide.

    ``name`` may carry a timm tag (``vit_tiny_patch16_224.augreg_in21k``). ``pretrained``: False (random init,
    the default), True (timm's default weights for ``name``: network or cache), a tag (``tv_in1k`` or
    ``resnet152.tv_in1k``: network or cache), or a local weights file or folder (loaded with the pretrained
    config of ``name``). ``image_size`` is passed to models that take ``img_size`` (ViTs); ``kwargs`` pass
    through to ``timm.create_model``.
    """

    modality = "image"

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
        # No `pretrained`: the weights come from the export, so a rebuilt encoder never needs the network.
        return {"name": self.name, "image_size": self.image_size, **self.kwargs}


class OpenCLIPImageEncoder(Encoder):
    """The vision tower of an open_clip model by name (``RN50``, ``ViT-B-32``, ...), random init by default.

    ``pretrained``: None/False (random init), an open_clip tag (``laion2b_s34b_b79k``, ``openai``: network or
    cache) or a local weights file (``open_clip.create_model(model, pretrained=<file>)``).
    """

    modality = "image"

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
