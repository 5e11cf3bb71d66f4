"""What every encoder is: an nn.Module mapping a batch of preprocessed inputs to (n, output_dim) vectors."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class of all encoders.

    Contract: ``forward(x) -> (n, output_dim)`` float tensor (the representation ``h``), where ``x`` is
    ``(n, 3, H, W)`` float images for ``modality == "image"`` and ``(n, L)`` int64 token ids right-padded with
    ``tokenizer.pad_id`` for ``modality == "text"``. ``spec()`` returns the JSON-able dict that rebuilds the
    same architecture through :func:`mmvicreg.encoders.build_encoder` (weights are saved separately).

    Each class answers for itself what the model needs to know about it: ``modality`` (``"image"`` or
    ``"text"``) and ``owns_tokenizer`` (True when the encoder carries a ``tokenizer`` that must be saved with
    it and handed back to :func:`~mmvicreg.encoders.build_encoder` to rebuild it). Ask
    :func:`mmvicreg.encoders.encoder_class` or :func:`mmvicreg.encoders.needs_tokenizer` for a spec, rather than
    comparing encoder names.
    """

    modality: ClassVar[str] = "image"
    owns_tokenizer: ClassVar[bool] = False
    tokenizer: Any = None  # the text tokenizer of an encoder that owns one (``encode``, ``pad_id``, ``save``)
    output_dim: int

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """What this encoder's weights expect of their inputs; ``{}`` when they say nothing (random init).

        Image encoders may give ``size`` (int), ``mean`` and ``std`` (3 floats), ``interpolation``
        (``"bicubic"``, ``"bilinear"``, ...) and ``crop_pct`` (eval centre-crop fraction). A branch fills the
        keys its config leaves out from these (the config wins) and saves the resolved values, so a loaded
        model preprocesses exactly as it trained. Text encoders carry their preprocessing in ``tokenizer``.
        """
        return {}

    def check_input(self, x: Any, branch: str) -> None:
        """Raise one clear error when ``x`` is not what this encoder's modality reads."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"branch {branch!r} expects a tensor batch, got {type(x).__name__}")
        if self.modality == "image":
            if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
                raise ValueError(
                    f"branch {branch!r} has an image encoder and needs float images (batch, 3, H, W), got "
                    f"{x.dtype} tensor of shape {tuple(x.shape)}; is a text field routed to an image branch?"
                )
        elif x.ndim != 2 or x.is_floating_point():
            raise ValueError(
                f"branch {branch!r} has a text encoder and needs int64 token ids (batch, length), got "
                f"{x.dtype} tensor of shape {tuple(x.shape)}; are images routed to a text branch?"
            )
