"""Evaluation of frozen embeddings: image–text retrieval, k-NN and linear-probe classification, extraction.

Two layers, imported one way:

* :mod:`mmvicreg.evaluation.metrics` — arrays in, numbers out; no model or data code.
  :func:`retrieval_metrics` (Recall@K / medr / meanr both ways, COCO 1K and 5K protocols, exact or FAISS),
  :func:`knn_classify` (weighted k-NN top-1), :func:`linear_probe`, chance level, FAISS search.
* :mod:`mmvicreg.evaluation.model_level` — a model and a data source in, metrics out: :func:`evaluate` (what a
  training run does at its end), :func:`evaluate_retrieval`, :func:`evaluate_knn`, :func:`evaluate_linear_probe`.
  Training and ``mmvicreg eval ...`` both call these.

:func:`extract_embeddings` — batched encoding of any items with a progress bar and an atomic ``.npy`` cache.
"""

from mmvicreg.evaluation.model_level import (
    evaluate,
    evaluate_knn,
    evaluate_linear_probe,
    evaluate_retrieval,
    format_retrieval,
    pick_retrieval_branches,
)
from mmvicreg.evaluation.extract import extract_embeddings
from mmvicreg.evaluation.metrics import (
    chance_recall,
    coco_retrieval_metrics,
    knn_classify,
    knn_predict,
    linear_probe,
    retrieval_chance,
    retrieval_metrics,
    retrieval_ranks,
)

__all__ = [
    "chance_recall",
    "coco_retrieval_metrics",
    "evaluate",
    "evaluate_knn",
    "evaluate_linear_probe",
    "evaluate_retrieval",
    "extract_embeddings",
    "format_retrieval",
    "knn_classify",
    "knn_predict",
    "linear_probe",
    "pick_retrieval_branches",
    "retrieval_chance",
    "retrieval_metrics",
    "retrieval_ranks",
]
