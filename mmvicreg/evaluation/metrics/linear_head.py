"""A trained linear classifier kept on disk: what ``eval linear`` and ``eval linear-probe`` learned
(``--save-head PATH``), evaluated again without training (``--head PATH``).

``PATH`` is a safetensors file of ``weight`` (classes, d) and ``bias`` (classes,), plus ``mean`` and ``std`` (d,)
when the probe standardised its features (``logits = W·((x − mean)/std) + b``); beside it, ``PATH`` with the
suffix ``.json`` records what the head expects (:data:`INFO_KEYS`: ``dim``, ``num_classes``, ``classes``, the
``branch`` and ``layer`` it was trained on, which protocol, ``kind``) and how it scored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from mmvicreg.files import atomic_write, atomic_write_json

__all__ = ["INFO_KEYS", "LinearHead", "head_accuracy", "info_path"]

INFO_KEYS = ("format_version", "kind", "dim", "num_classes", "classes", "branch", "layer")
FORMAT_VERSION = 1


@torch.no_grad()
def head_accuracy(head: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Top-1 (and top-5 when the head has at least 5 classes), percent, of ``head``'s logits on ``x`` against the
    labels ``y``; ``x`` is read 8192 rows at a time."""
    top1 = top5 = classes = 0
    for xb, yb in zip(x.split(8192), y.split(8192)):
        out = head(xb)
        classes = out.shape[1]
        top1 += int((out.argmax(1) == yb).sum())
        if classes >= 5:
            top5 += int((out.topk(5, dim=1).indices == yb[:, None]).any(dim=1).sum())
    scores = {"top1": 100.0 * top1 / len(y)}
    if classes >= 5:
        scores["top5"] = 100.0 * top5 / len(y)
    return scores


def info_path(path: str | os.PathLike) -> Path:
    """The JSON beside a head file: ``head.safetensors`` -> ``head.json``."""
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"a head is saved as safetensors with a .json beside it; name it e.g. "
                         f"{path.with_suffix('.safetensors')}, not {path}")
    return path.with_suffix(".json")


@dataclass
class LinearHead:
    """``logits = weight · ((x − mean) / std) + bias`` (``mean``/``std`` None: ``x`` as it is)."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The logits (n, classes) of inputs ``x`` (n, dim), on ``x``'s device, in float32."""
        x = x.float()
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x @ self.weight.to(x.device).T + self.bias.to(x.device)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Top-1 (and top-5 with at least 5 classes), percent, on inputs ``x`` with labels ``y``."""
        return head_accuracy(self, x, torch.as_tensor(y).to(x.device))

    def save(self, path: str | os.PathLike, info: dict[str, Any]) -> None:
        """Write the tensors to ``path`` (safetensors) and ``info`` (with ``dim`` and ``num_classes``) beside it
        (:func:`info_path`), each atomically."""
        from safetensors.torch import save_file

        tensors = {"weight": self.weight, "bias": self.bias}
        if self.mean is not None and self.std is not None:
            tensors.update(mean=self.mean, std=self.std)
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
        meta_path = info_path(path)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
        atomic_write_json(meta_path, {"format_version": FORMAT_VERSION, **info, "dim": self.dim,
                                      "num_classes": self.num_classes})

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[LinearHead, dict[str, Any]]:
        """``(head, info)`` from ``path`` and its JSON; one line when either is missing or not a head's."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path, meta_path = Path(path), info_path(path)
        for p in (path, meta_path):
            if not p.is_file():
                raise FileNotFoundError(f"no saved head at {path} ({p} is missing): save one with --save-head {path}")
        try:
            tensors = load_file(str(path))
            info = json.loads(meta_path.read_text())
        except (OSError, SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a saved head ({type(e).__name__}: {e})") from None
        if not isinstance(info, dict) or any(k not in info for k in INFO_KEYS) or not {"weight", "bias"} <= set(tensors):
            raise ValueError(f"{path} is not a saved head: it needs weight and bias, and {meta_path} the keys "
                             f"{', '.join(INFO_KEYS)}")
        head = cls(tensors["weight"], tensors["bias"], tensors.get("mean"), tensors.get("std"))
        if (head.dim, head.num_classes) != (info["dim"], info["num_classes"]):
            raise ValueError(f"{path} holds a {head.dim}→{head.num_classes} head but {meta_path} says "
                             f"{info['dim']}→{info['num_classes']}; save it again with --save-head")
        return head, info
