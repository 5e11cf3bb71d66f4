"""An mmvicreg model in CLIP's clothes: ``encode_image`` / ``encode_text``, a transform and a tokenizer.

Tools written for CLIP models take ``(model, transform, tokenizer)``: CLIP_benchmark's model loaders return
exactly that, and its tasks call ``model.encode_image(images)`` / ``model.encode_text(tokenizer(texts))``.
:func:`load_clip_style` gives an mmvicreg export (or any model :mod:`mmvicreg.model.adapters` loads) that shape:
the image transform is the branch's own eval preprocessing (the same per-item transform the evaluation commands'
loaders run, then the branch's normalisation), the tokenizer the text branch's own (right-padded with its pad
id), and both encoders return the joint embedding z. :mod:`mmvicreg.interop` loads a model by name into this
shape for CLIP_benchmark.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from mmvicreg.data.preprocess import item_preprocessor
from mmvicreg.evaluation.model_level import pick_retrieval_branches
from mmvicreg.preprocessing import normalize_images

__all__ = ["CLIPStyle", "load_clip_style"]


class CLIPStyle(nn.Module):
    """``encode_image(images)`` and ``encode_text(ids)`` of a model's image and text branch (z, float32)."""

    def __init__(self, model: Any, image_branch: str, text_branch: str) -> None:
        super().__init__()
        self.model, self.image_branch, self.text_branch = model, image_branch, text_branch

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        z = self.model.encode(self.image_branch, images).to(images.device)
        return nn.functional.normalize(z, dim=-1) if normalize else z

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        z = self.model.encode(self.text_branch, ids).to(ids.device)
        return nn.functional.normalize(z, dim=-1) if normalize else z


class _Transform:
    """PIL image -> the branch's normalised float (3, size, size) input (picklable, for DataLoader workers)."""

    def __init__(self, declaration: Any) -> None:
        self.item, self.mean, self.std = item_preprocessor(declaration), declaration.mean, declaration.std

    def __call__(self, image: Any) -> torch.Tensor:
        return normalize_images(self.item(image), self.mean, self.std)


class _Tokenizer:
    """list of str (or one str) -> (n, length) LongTensor of the branch's ids, right-padded with its pad id."""

    def __init__(self, declaration: Any) -> None:
        self.tokenizer = declaration.tokenizer

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = [self.tokenizer.encode(t) for t in texts]
        return pad_sequence(ids, batch_first=True, padding_value=self.tokenizer.pad_id)


def load_clip_style(model: Any, image_branch: str | None = None, text_branch: str | None = None
                    ) -> tuple[CLIPStyle, Callable, Callable]:
    """``(model with encode_image/encode_text, image transform, tokenizer)`` of a loaded model's branches."""
    image, text = pick_retrieval_branches(model)  # the first of each modality; one line when one is missing
    image, text = image_branch or image, text_branch or text
    clip = CLIPStyle(model, image, text).eval()
    return clip, _Transform(model.branch(image).preprocessing), _Tokenizer(model.branch(text).preprocessing)
