"""Chance level of retrieval: the Recall@K that random embeddings score, to read a result against.

With a gallery of N images and c captions per image (M = N·c captions), random similarities put the ground truth
at a uniformly random position, so

* text→image: ``R@K = K / N`` (capped at 1);
* image→text: an image has c relevant captions among M; the chance that none is in the top K is
  ``C(M − c, K) / C(M, K) ≈ (1 − c/M)^K``, so ``R@K ≈ 1 − (1 − c/M)^K``.

Under the COCO 1K protocol (``folds`` folds) each ranking runs within one fold, so N is the fold size.
"""

from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["chance_recall", "retrieval_chance"]


def chance_recall(num_images: int, captions_per_image: float, k: int) -> dict[str, float]:
    """Expected ``t2i_R@k`` and ``i2t_R@k`` (percent) of random embeddings on ``num_images`` images."""
    m = num_images * captions_per_image
    return {
        f"t2i_R@{k}": 100.0 * min(1.0, k / num_images),
        f"i2t_R@{k}": 100.0 * (1.0 - (1.0 - captions_per_image / m) ** k),
    }


def retrieval_chance(
    num_images: int, num_captions: int, folds: Optional[int] = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Chance R@K for every K in ``ks`` of an evaluation over ``num_images`` images and ``num_captions`` captions.

    ``folds=None`` is the 5K protocol (one gallery of every image); ``folds=f`` ranks within folds of
    ``num_images // f`` images. Keys as in :func:`~mmvicreg.evaluation.metrics.retrieval.retrieval_metrics`.
    """
    gallery = int(num_images) if folds is None else int(num_images) // folds
    per_image = num_captions / max(1, num_images)
    out: dict[str, float] = {}
    for k in ks:
        out.update(chance_recall(gallery, per_image, k))
    return out
