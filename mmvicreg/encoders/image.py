"""Image encoders: any timm model (ResNet, ViT, ...) and open_clip vision towers, returning pooled features."""

from __future__ import annotations

from typing import Any

import torch

from mmvicreg.encoders.base import Encoder


def _hub_error(what: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load pretrained weights for {what} ({type(err).__name__}: {err}); this machine may have no "
        f"network or model hub. Use pretrained: false (random init) or a local weights file path"
    )


class TimmImageEncoder(Encoder):
    """``timm.create_model(name, num_classes=0)``: the pooled pre-logits features, ``num_features`` wide.

    ``pretrained``: False (random init, the default), True (timm's hub weights: needs a network) or a path to a
    local weights file. ``image_size`` is passed to models that take ``img_size`` (ViTs); ``kwargs`` pass through.
    """

    modality = "image"

    def __init__(self, name: str, pretrained: bool | str = False, image_size: int | None = None, **kwargs: Any):
        super().__init__()
        import timm

        self.name, self.pretrained, self.image_size, self.kwargs = name, pretrained, image_size, dict(kwargs)
        create_kwargs: dict[str, Any] = dict(num_classes=0, **kwargs)
        if isinstance(pretrained, str):
            create_kwargs["pretrained_cfg_overlay"] = dict(file=pretrained)
        try:
            try:
                self.model = timm.create_model(
                    name, pretrained=bool(pretrained), **create_kwargs, **({"img_size": image_size} if image_size else {})
                )
            except TypeError as e:  # this architecture has no img_size argument (CNNs): they take any size
                if "img_size" not in str(e):
                    raise
                self.model = timm.create_model(name, pretrained=bool(pretrained), **create_kwargs)
        except (OSError, RuntimeError) as e:
            if pretrained:
                raise _hub_error(f"timm model {name!r}", e) from None
            raise
        self.output_dim = int(self.model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def spec(self) -> dict[str, Any]:
        # Weights come from the export, so a rebuilt encoder never needs the hub.
        return {"name": self.name, "image_size": self.image_size, **self.kwargs}


class OpenCLIPImageEncoder(Encoder):
    """The vision tower of an open_clip model by name (``RN50``, ``ViT-B-32``, ...), random init by default."""

    modality = "image"

    def __init__(self, model: str, pretrained: str | None = None, image_size: int | None = None):
        super().__init__()
        import open_clip

        self.model_name, self.image_size = model, image_size
        kwargs: dict[str, Any] = {"force_image_size": image_size} if image_size else {}
        try:
            clip = open_clip.create_model(model, pretrained=pretrained, **kwargs)
        except (OSError, RuntimeError) as e:
            if pretrained:
                raise _hub_error(f"open_clip model {model!r}", e) from None
            raise
        self.visual = clip.visual
        self.output_dim = int(self.visual.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def spec(self) -> dict[str, Any]:
        return {"name": f"open_clip:{self.model_name}", "image_size": self.image_size}
