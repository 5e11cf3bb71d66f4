"""The two towers of a Hugging Face CLIP-style model (``transformers.CLIPModel`` and models with its interface).

``hf_clip`` is the image tower, ``hf_clip_text`` the text tower: each holds the checkpoint's model and returns its
``get_image_features`` / ``get_text_features`` (the projected joint embedding, before normalisation). ``pretrained``
is a local folder or a Hub id (network opt-in, :mod:`mmvicreg.encoders.weights`); ``config`` (a dict with a
``model_type``) builds a random init. The image tower's preprocessing is the checkpoint's image processor (size,
mean, std, resample, crop); the text tower owns the checkpoint's tokenizer.

Why the text tower builds its own attention mask: CLIP's tokenizer pads with its end-of-text token, so
``ids != pad_id`` would also hide the end token the model pools from; the mask keeps every token up to and
including the first end token (``pad_id == eos``) or every non-pad token (otherwise), as the tokenizer's own
``attention_mask`` does.
"""

from __future__ import annotations

from typing import Any

import torch

from mmvicreg.encoders.base import Encoder
from mmvicreg.encoders.text import inert_hf_config
from mmvicreg.encoders.weights import hf_load

# OpenAI CLIP's statistics and resample, for a random init without an image processor
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _clip_model(pretrained: str | None, config: dict[str, Any] | None, what: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModel

    if (config is None) == (pretrained in (None, False)):
        raise ValueError(f"an {what} encoder needs exactly one of `config` (a dict with model_type: random init) or "
                         f"`pretrained` (a local folder or a Hub id)")
    if config is None:
        return hf_load(AutoModel.from_pretrained, pretrained, f"the {what} encoder", dtype=torch.float32)
    cfg = dict(config)
    return AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type", "clip"), **cfg), trust_remote_code=False)


def _features(out: Any) -> torch.Tensor:
    """transformers 5 returns a model output from ``get_*_features`` for some models; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _HFCLIPTower(Encoder):
    name: str

    @classmethod
    def architecture_only(cls, spec: dict[str, Any]) -> dict[str, Any]:
        out = super().architecture_only(spec)
        if not isinstance(out.get("config"), dict):
            raise ValueError(f"this {cls.name} spec has no `config` (the architecture its weights load into); "
                             f"re-export the model")
        out["config"] = inert_hf_config(out["config"])
        return out

    def spec(self) -> dict[str, Any]:  # the architecture, never `pretrained`: an export rebuilds offline
        return {"name": self.name, "config": self.model.config.to_dict()}

    def _output_dim(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "projection_dim", 0) or cfg.text_config.hidden_size)


class HFCLIPImageEncoder(_HFCLIPTower):
    """``get_image_features`` of a transformers CLIP-style model (see the module docstring)."""

    name = "hf_clip"

    def __init__(self, pretrained: str | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = _clip_model(pretrained, config, self.name)
        self.output_dim = self._output_dim()
        self._processing = self._processor_settings(pretrained)

    def _processor_settings(self, pretrained: str | None) -> dict[str, Any]:
        size = int(self.model.config.vision_config.image_size)
        if not pretrained:
            return {"size": size, "mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic", "crop_pct": 1.0}
        from transformers import AutoImageProcessor

        proc = hf_load(AutoImageProcessor.from_pretrained, pretrained, f"the {self.name} encoder")
        crop = proc.crop_size["height"] if getattr(proc, "do_center_crop", False) else size
        edge = proc.size.get("shortest_edge", proc.size.get("height", crop))
        return {"size": int(crop), "mean": tuple(proc.image_mean), "std": tuple(proc.image_std),
                "interpolation": _RESAMPLE.get(int(proc.resample), "bicubic"), "crop_pct": float(crop) / float(edge)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=x))

    def preprocessing(self) -> dict[str, Any]:
        return dict(self._processing)


class HFCLIPTextEncoder(_HFCLIPTower):
    """``get_text_features`` of a transformers CLIP-style model, with the checkpoint's tokenizer."""

    name = "hf_clip_text"
    modality = "text"
    owns_tokenizer = True
    tokenizer_options = ("max_length",)

    def __init__(self, tokenizer: Any, pretrained: str | None = None, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.model = _clip_model(pretrained, config, self.name)
        self.output_dim = self._output_dim()
        self.eos_id = self.model.config.text_config.eos_token_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pads = (ids == self.tokenizer.pad_id).long().cumsum(dim=1)
        mask = pads <= (1 if self.tokenizer.pad_id == self.eos_id else 0)
        return _features(self.model.get_text_features(input_ids=ids, attention_mask=mask.long()))
