"""Models of other libraries as :class:`~mmvicreg.model.JointEmbedding` s, so one evaluation code scores them all.

A model reference is an mmvicreg export (a folder written by ``save_pretrained``, or a Hub id) or a foreign
model: ``open_clip:NAME`` (an open_clip architecture; ``pretrained``: an open_clip tag, which needs the network,
or a local checkpoint file; none: random init), or ``hf_clip:FOLDER_OR_ID`` (a Hugging Face CLIP-style model: a
local folder, or a Hub id fetched only on request). A foreign model becomes two branches, ``image`` and ``text``,
each a tower of that model with no expander (the identity), so ``z`` is the model's own joint embedding
(open_clip's ``encode_image`` / ``encode_text``, transformers' ``get_image_features`` / ``get_text_features``),
with the model's own preprocessing and tokenizer: the
evaluation commands, the suite and zero-shot then treat it exactly as a two-branch mmvicreg model.

The adapter interface is therefore the one :mod:`mmvicreg.evaluation.model_level` documents (``branch_names``,
``branch(name).modality`` and ``.preprocessing``, ``encode(branch, batch, layer=..., precision=...)``), and
:class:`~mmvicreg.model.JointEmbedding` is its one implementation; this module only builds one from a foreign
model's towers (:mod:`mmvicreg.encoders` wraps each tower and declares its preprocessing).
"""

from __future__ import annotations

import os
from typing import Any

import torch

FOREIGN_PREFIXES = {"open_clip:": "open_clip", "hf_clip:": "hf_clip"}

__all__ = ["FOREIGN_PREFIXES", "foreign_branches", "is_foreign", "load_any"]


def is_foreign(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` names a foreign model (``open_clip:NAME``, ``hf_clip:...``) rather than an mmvicreg export."""
    return isinstance(ref, str) and ref.startswith(tuple(FOREIGN_PREFIXES))


def foreign_branches(ref: str, pretrained: str | None = None) -> dict[str, dict[str, Any]]:
    """The branch configs of the foreign model ``ref``: ``image`` and ``text``, its towers, identity expanders."""
    name = ref.split(":", 1)[1]
    if not name:
        raise ValueError(f"model {ref!r} names no model; e.g. open_clip:ViT-B-32 or hf_clip:path/to/folder")
    if ref.startswith("hf_clip:"):
        if pretrained:
            raise ValueError(f"--pretrained applies to open_clip:NAME; {ref} names its weights itself")
        return {"image": {"encoder": {"name": "hf_clip", "pretrained": name}, "expander": "none"},
                "text": {"encoder": {"name": "hf_clip_text", "pretrained": name}, "expander": "none"}}
    weights = {"pretrained": pretrained} if pretrained else {}
    return {
        "image": {"encoder": {"name": f"open_clip:{name}", **weights}, "expander": "none"},
        "text": {"encoder": {"name": f"open_clip_text:{name}", **weights}, "expander": "none"},
    }


def load_any(ref: str | os.PathLike, pretrained: str | None = None, seed: int = 0) -> Any:
    """The model ``ref`` names: an mmvicreg export (folder or Hub id), or a foreign model built from its towers
    (``pretrained`` weights, or random init from ``seed`` so that a random baseline is the same every run).
    ``pretrained`` with an mmvicreg export is refused (its weights are the export's)."""
    from mmvicreg.model.joint import JointEmbedding

    if not is_foreign(ref):
        if pretrained:
            raise ValueError(f"--pretrained applies to a foreign model (open_clip:NAME), not to the mmvicreg export "
                             f"{str(ref)!r}, whose weights are its own")
        return JointEmbedding.from_pretrained(ref)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return JointEmbedding.from_config(foreign_branches(str(ref), pretrained))
