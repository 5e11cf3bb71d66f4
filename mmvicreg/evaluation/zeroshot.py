"""Zero-shot classification of labelled images by a model with an image and a text branch (as CLIP does it).

For class c with name ``name_c`` and prompt templates ``t_1 … t_T`` (each with one ``{}``), the class embedding is

    ``w_c = normalise( (1/T) Σ_t normalise( text(t(name_c)) ) )``

(the template ensemble of CLIP), an image's scores are ``normalise(image(x)) · w_c`` and its prediction the top
class. Reported: top-1 and top-5 accuracy, the mean per-class recall (the mean over classes of the share of each
class's images predicted as that class) and chance (a uniformly random ranking: top-k ``100·min(k, C)/C``).
Images and prompts meet in the joint embedding z (the only space the two branches share).

The model is duck-typed (:mod:`mmvicreg.evaluation.model_level`'s interface); the images of a labelled source are
encoded batch by batch through the one encode path, never a decoded split in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmvicreg.evaluation.model_level import encode_all, image_features

__all__ = ["class_embeddings", "default_templates", "evaluate_zeroshot", "read_lines", "zeroshot_scores"]

TOP_KS = (1, 5)


def default_templates() -> list[str]:
    """CLIP's short ImageNet prompt ensemble (7 templates), as open_clip ships it."""
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    return [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]


def read_lines(path: str | Path, what: str) -> list[str]:
    """The non-empty lines of ``path`` (class names, templates); one ValueError line when it is missing or empty."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} file {str(p)!r} does not exist (one entry per line)")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{what} file {str(p)!r} is empty (one entry per line)")
    return lines


def check_templates(templates: Sequence[str]) -> list[str]:
    """``templates`` when each holds exactly one ``{}`` (where the class name goes); else one ValueError line."""
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"a zero-shot template needs exactly one {{}} for the class name, got {bad[0]!r}")
    return list(templates)


def class_embeddings(
    model: Any, text_branch: str, classnames: Sequence[str], templates: Sequence[str], **encoding: Any
) -> torch.Tensor:
    """``(C, d)``: each class's normalised mean of its normalised prompt embeddings (the module docstring's w_c)."""
    templates = check_templates(templates)
    prompts = [t.format(name) for name in classnames for t in templates]
    z = F.normalize(encode_all(model, text_branch, prompts, layer="embedding", **encoding).float(), dim=-1)
    return F.normalize(z.view(len(classnames), len(templates), -1).mean(dim=1), dim=-1)


def zeroshot_scores(images: torch.Tensor, classes: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Top-1/top-5 accuracy, mean per-class recall and chance (percent) of ``images`` (n, d) against ``classes``
    (C, d), both already in the joint space, for 0-based ``labels`` (n,)."""
    n_classes = classes.shape[0]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels run from {labels.min()} to {labels.max()} but {n_classes} class names were given; "
                         f"give one name per class, in label order")
    logits = F.normalize(images.float(), dim=-1) @ classes.T
    y = torch.as_tensor(labels, dtype=torch.long)
    ranked = logits.topk(min(max(TOP_KS), n_classes), dim=1).indices
    out: dict[str, float] = {}
    for k in TOP_KS:
        hit = (ranked[:, :k] == y[:, None]).any(dim=1).double()
        out[f"top{k}"] = 100.0 * hit.mean().item()
        out[f"chance_top{k}"] = 100.0 * min(k, n_classes) / n_classes
    correct = (ranked[:, 0] == y).double()
    present = torch.unique(y)
    out["mean_per_class_recall"] = 100.0 * torch.stack([correct[y == c].mean() for c in present]).mean().item()
    return out


def evaluate_zeroshot(
    model: Any,
    source: Any,
    image_branch: str,
    text_branch: str,
    *,
    classnames: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    **encoding: Any,
) -> dict[str, Any]:
    """Zero-shot scores of ``source`` (labelled images; class names: ``classnames`` or the source's ``classes``;
    templates: ``templates`` or :func:`default_templates`)."""
    templates = list(templates) if templates is not None else default_templates()
    names = list(classnames) if classnames is not None else list(source.classes)
    if not names:
        raise ValueError("zero-shot needs class names: this data names no classes; give --classnames FILE (one name "
                         "per line, in label order)")
    classes = class_embeddings(model, text_branch, names, templates, **encoding)
    images, labels = image_features(model, image_branch, source, "embedding", **encoding)
    if images.shape[1] != classes.shape[1]:
        raise ValueError(f"branch {image_branch!r} embeds images in {images.shape[1]} dimensions but {text_branch!r} "
                         f"embeds text in {classes.shape[1]}; zero-shot compares the two: choose branches trained "
                         f"together (--image-branch, --text-branch)")
    scores = zeroshot_scores(images, classes, labels)
    return {"image_branch": image_branch, "text_branch": text_branch, "classes": len(names),
            "templates": len(templates), "images": int(labels.size), **scores}
