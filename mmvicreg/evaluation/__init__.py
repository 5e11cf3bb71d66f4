"""Evaluation of frozen embeddings: image–text retrieval, k-NN and linear-probe classification, extraction.

* :func:`retrieval_metrics` — Recall@K / medr / meanr both ways, COCO 1K and 5K protocols (exact, or FAISS).
* :func:`knn_classify` — weighted k-NN top-1 on frozen features (FAISS, cosine, DINO/VICReg vote).
* :func:`linear_probe` — a linear head trained with SGD on precomputed frozen features.
* :func:`extract_embeddings` — batched encoding with a progress bar and an atomic ``.npy`` cache.
"""

from mmvicreg.evaluation.extract import extract_embeddings
from mmvicreg.evaluation.knn import knn_classify, knn_predict
from mmvicreg.evaluation.linear_probe import linear_probe
from mmvicreg.evaluation.retrieval import coco_retrieval_metrics, retrieval_metrics, retrieval_ranks

__all__ = [
    "coco_retrieval_metrics",
    "extract_embeddings",
    "knn_classify",
    "knn_predict",
    "linear_probe",
    "retrieval_metrics",
    "retrieval_ranks",
]
