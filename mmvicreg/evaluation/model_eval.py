"""Evaluate a trained model on a data source: retrieval for captioned sources, k-NN for labelled images.

These glue :meth:`JointEmbedding.encode` to the metric functions; the model is taken duck-typed (anything with
``encode(branch, items, batch_size=..., layer=..., progress=...)`` and ``branch(name).modality``), so this
package does not import the model layer.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from mmvicreg.evaluation.knn import knn_classify
from mmvicreg.evaluation.retrieval import retrieval_metrics


def pick_retrieval_branches(model: Any, branches: Optional[Sequence[str]] = None) -> tuple[str, str]:
    """``(image branch, text branch)``: as given, or the first branch of each modality."""
    if branches:
        if len(branches) != 2:
            raise ValueError(f"eval.branches must name [image branch, text branch], got {list(branches)}")
        return branches[0], branches[1]
    names = list(model.branch_names)
    images = [n for n in names if model.branch(n).modality == "image"]
    texts = [n for n in names if model.branch(n).modality == "text"]
    if not images or not texts:
        raise ValueError(
            f"retrieval needs an image branch and a text branch; this model has {names} "
            f"({', '.join(model.branch(n).modality for n in names)})"
        )
    return images[0], texts[0]


def chance_recall(num_images: int, captions_per_image: float, k: int) -> dict[str, float]:
    """Expected R@K (percent) of random embeddings: t2i = K/N; i2t = 1 - C(M - c, K)/C(M, K) ≈ 1 - (1 - c/M)^K."""
    m = num_images * captions_per_image
    return {
        f"t2i_R@{k}": 100.0 * min(1.0, k / num_images),
        f"i2t_R@{k}": 100.0 * (1.0 - (1.0 - captions_per_image / m) ** k),
    }


def evaluate_retrieval(
    model: Any,
    source: Any,
    branches: Optional[Sequence[str]] = None,
    batch_size: int = 256,
    protocol: str = "5k",
    captions_per_image: int = 5,
    progress: bool = False,
) -> dict[str, float]:
    """Recall@1/5/10, medr, meanr both ways on ``source.eval_set()`` (first ``captions_per_image`` captions).

    ``protocol``: ``"5k"`` ranks against the whole set; ``"1k"`` averages over 5 folds of consecutive images.
    """
    image_branch, text_branch = pick_retrieval_branches(model, branches)
    rs = source.eval_set(captions_per_image)
    img = model.encode(image_branch, rs.images, batch_size=batch_size, progress=progress)
    txt = model.encode(text_branch, rs.flat_captions, batch_size=batch_size, progress=progress)
    folds = 5 if protocol == "1k" else None
    metrics = retrieval_metrics(img, txt, np.asarray(rs.caption_image_index), folds=folds)
    return {"protocol": protocol, "image_branch": image_branch, "text_branch": text_branch, **metrics}


def evaluate_knn(
    model: Any,
    train_source: Any,
    test_source: Any,
    branch: str,
    ks: Sequence[int] = (20, 200),
    batch_size: int = 256,
    layer: str = "representation",
    progress: bool = False,
) -> dict[str, float]:
    """Weighted k-NN top-1 of ``branch``'s frozen features (the representation h by default, as published)."""

    def features(source: Any) -> tuple[Any, np.ndarray]:
        images = [source[i]["image"] for i in range(len(source))]
        labels = np.asarray([source[i]["label"] for i in range(len(source))])
        return model.encode(branch, images, batch_size=batch_size, layer=layer, progress=progress), labels

    train_x, train_y = features(train_source)
    test_x, test_y = features(test_source)
    ks = tuple(k for k in ks if k <= len(train_y)) or (len(train_y),)
    return {"branch": branch, "layer": layer, **knn_classify(train_x, train_y, test_x, test_y, ks=ks)}


def format_retrieval(metrics: dict[str, Any], chance: Optional[dict[str, float]] = None) -> str:
    """A small table of R@1/5/10 both ways (and chance level when given)."""
    lines = [f"{'':10}{'R@1':>8}{'R@5':>8}{'R@10':>8}"]
    for direction, label in (("i2t", "image→text"), ("t2i", "text→image")):
        lines.append(label.ljust(10) + "".join(f"{metrics[f'{direction}_R@{k}']:8.1f}" for k in (1, 5, 10)))
        if chance:
            lines.append("  chance".ljust(10) + "".join(f"{chance[f'{direction}_R@{k}']:8.1f}" for k in (1, 5, 10)))
    lines.append(f"rsum {metrics['rsum']:.1f} over {metrics['num_images']} images, {metrics['num_captions']} captions")
    return "\n".join(lines)
