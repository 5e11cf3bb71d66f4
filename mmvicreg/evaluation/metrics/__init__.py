"""Metrics on arrays: embeddings and labels in, numbers out. Nothing here knows about models or data sources.

* :mod:`.retrieval` — Recall@K / medr / meanr both ways, COCO 1K and 5K protocols (exact ranks, or FAISS).
* :mod:`.knn` — weighted k-NN top-1 on frozen features (the DINO / VICReg protocol).
* :mod:`.linear_probe` — the one linear-head trainer (SGD, cosine; the published recipes and the quick probe
  on frozen features, :func:`linear_probe`).
* :mod:`.search` — top-k inner-product search with FAISS (flat, HNSW, IVF); the only module that imports FAISS.
* :mod:`.chance` — the Recall@K of random embeddings.
* :mod:`.inputs` — user arrays to checked tensors, one clear error per kind of bad input.
"""

from mmvicreg.evaluation.metrics.chance import chance_recall, retrieval_chance
from mmvicreg.evaluation.metrics.knn import knn_classify, knn_predict
from mmvicreg.evaluation.metrics.linear_probe import linear_probe
from mmvicreg.evaluation.metrics.retrieval import coco_retrieval_metrics, retrieval_metrics, retrieval_ranks

__all__ = [
    "chance_recall",
    "coco_retrieval_metrics",
    "knn_classify",
    "knn_predict",
    "linear_probe",
    "retrieval_chance",
    "retrieval_metrics",
    "retrieval_ranks",
]
