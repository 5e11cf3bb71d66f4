"""mmvicreg models in other tools' conventions: CLIP_benchmark's ``(model, transform, tokenizer)`` loaders.

To run CLIP_benchmark's tasks on an mmvicreg export::

    import mmvicreg.interop, clip_benchmark.models
    mmvicreg.interop.register_with_clip_benchmark()          # model_type "mmvicreg"
    model, transform, tokenizer = clip_benchmark.models.load_clip("mmvicreg", "runs/quickstart/model", None, None, "cpu")

then hand them to ``clip_benchmark.metrics.zeroshot_retrieval.evaluate`` (or any of its tasks) as for a CLIP model.
The model is :class:`mmvicreg.evaluation.clip_style.CLIPStyle`: ``encode_image`` / ``encode_text`` give the joint
embedding z of the first image and text branch; the transform and tokenizer are the branches' own.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

__all__ = ["load_for_clip_benchmark", "register_with_clip_benchmark"]


def load_for_clip_benchmark(model_name: str, pretrained: str | None = None, cache_dir: str | None = None,
                            device: str | torch.device = "cpu") -> tuple[Any, Callable, Callable]:
    """CLIP_benchmark's loader signature: ``model_name`` is an mmvicreg export (folder or Hub id) or
    ``open_clip:NAME`` with ``pretrained``; ``cache_dir`` is not used (the Hugging Face cache is)."""
    from mmvicreg.evaluation.clip_style import load_clip_style
    from mmvicreg.model.adapters import load_any

    return load_clip_style(load_any(model_name, pretrained).to(device))


def register_with_clip_benchmark(name: str = "mmvicreg") -> None:
    """Make ``name`` a CLIP_benchmark ``model_type`` whose loader is :func:`load_for_clip_benchmark`."""
    from mmvicreg.extras import import_extra

    models = import_extra("clip_benchmark.models", "interop", "running CLIP_benchmark on mmvicreg models needs it")
    MODEL_TYPES, TYPE2FUNC = models.MODEL_TYPES, models.TYPE2FUNC

    TYPE2FUNC[name] = load_for_clip_benchmark
    if name not in MODEL_TYPES:
        MODEL_TYPES.append(name)
