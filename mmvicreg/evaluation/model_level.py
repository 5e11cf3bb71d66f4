"""Model-level evaluation: a trained model and a data source in, metrics out. Training and the command line both
call these functions; the metrics themselves are computed on arrays by :mod:`mmvicreg.evaluation.metrics`.

* a **captioned** source (one with ``eval_set``) is scored by image–text retrieval (:func:`evaluate_retrieval`);
* a **labelled image** source is scored by weighted k-NN (:func:`evaluate_knn`) or a linear probe
  (:func:`evaluate_linear_probe`) on a branch's frozen features, with a labelled training source as the memory.

The model is duck-typed, so this module never imports the model package. It needs:

* ``model.branch_names`` (list of str) and ``model.branch(name).modality`` (``"image"`` or ``"text"``);
* what the one encode path, :func:`mmvicreg.data.encoding.encode_batches` (``items`` a sequence of raw items,
  PIL images or strings, -> (batch, d) CPU tensors in order), asks of a model: ``model.branch(name).preprocessing``
  (the data package builds the loader from it: worker processes, the batch on the model's device) and
  ``model.encode(branch, batch, layer=..., precision=...)`` (one batch, under autocast). ``JointEmbedding`` has
  them.

And of a source:

* captioned: ``source.eval_set(captions_per_image)`` -> an object with ``images`` (a lazily decoding sequence),
  ``flat_captions`` (list of str) and ``caption_image_index`` (the image of each caption);
* labelled images: an image source of the data package (its images are read through ``LazyImages``, decoded
  batch by batch as the model encodes them; a split never sits in memory decoded) with ``labels`` (0-based
  ints, one per image).

Retrieval compares the embeddings z (the only space two towers share); k-NN and the probe use the
representation h before the expander, as published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np
import torch

from mmvicreg.choices import RETRIEVAL_PROTOCOLS, check_choice
from mmvicreg.data.protocols import CaptionedSource
from mmvicreg.evaluation.labelled import is_labelled
from mmvicreg.evaluation.metrics.chance import retrieval_chance
from mmvicreg.evaluation.metrics.knn import KNNMemory, knn_classify_memory
from mmvicreg.evaluation.metrics.linear_probe import QUICK_PROBE, linear_probe
from mmvicreg.evaluation.metrics.retrieval import retrieval_metrics, retrieval_ranks

if TYPE_CHECKING:
    from mmvicreg.config import EvalConfig

__all__ = [
    "RetrievalEmbeddings",
    "embed_for_retrieval",
    "encode_all",
    "feature_batches",
    "evaluate",
    "evaluate_knn",
    "evaluate_linear_probe",
    "evaluate_retrieval",
    "format_knn",
    "format_retrieval",
    "image_features",
    "is_captioned",
    "pick_retrieval_branches",
    "recall_curve",
    "score_retrieval",
]

RECALL_KS = (1, 5, 10)
PROTOCOL_FOLDS = {"5k": None, "1k": 5}  # the COCO protocols: whole set, or 5 folds of consecutive images


# ------------------------------------------------------------------------------------------- one entry


def evaluate(
    model: Any, eval_source: Any, *, reference: Any = None, settings: "EvalConfig"
) -> tuple[dict[str, Any], str]:
    """The end-of-run evaluation: ``(result, text to print)``.

    A captioned ``eval_source`` gives :func:`evaluate_retrieval`'s result: the retrieval metrics with
    ``protocol``, ``image_branch``, ``text_branch`` and ``chance``. A labelled image source gives
    ``{"knn": {branch: evaluate_knn(...)}}`` for every branch in ``settings.branches`` (default: all of them),
    with the labelled ``reference`` source as the k-NN memory. ``settings`` is the run's ``eval`` section
    (batch_size, workers, precision, decode_on, protocol, index_kind, branches, captions_per_image).
    """
    encoding = {"batch_size": settings.batch_size, "workers": settings.workers or 0, "precision": settings.precision,
                "decode_on": settings.decode_on or "workers"}
    if is_captioned(eval_source):
        result = evaluate_retrieval(
            model, eval_source, settings.branches, protocol=settings.protocol,
            captions_per_image=settings.captions_per_image, index=settings.index_kind,
            index_options=settings.index_options, **encoding,
        )
        text = f"held-out retrieval ({settings.protocol} protocol):\n" + format_retrieval(result, result["chance"])
        return result, text
    if reference is None or not is_labelled(reference):
        raise ValueError(
            "k-NN evaluation of a labelled eval source needs a labelled reference set as memory: set eval.reference "
            "(a data section of labelled images), or train on labelled images"
        )
    knn = {
        name: evaluate_knn(model, reference, eval_source, name, **encoding)
        for name in (settings.branches or model.branch_names)
    }
    return {"knn": knn}, "\n".join(format_knn(name, scores) for name, scores in knn.items())


def is_captioned(source: Any) -> bool:
    """Whether ``source`` is an image–caption source (it has a retrieval view, ``eval_set``)."""
    return isinstance(source, CaptionedSource)


# ------------------------------------------------------------------------------------------- retrieval


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


@dataclass
class RetrievalEmbeddings:
    """A captioned set encoded for retrieval: ``image`` (N, d), ``text`` (M, d), ``text_to_image`` (M,)."""

    image: torch.Tensor
    text: torch.Tensor
    text_to_image: np.ndarray
    image_branch: str
    text_branch: str


def embed_for_retrieval(
    model: Any,
    source: Any,
    branches: Optional[Sequence[str]] = None,
    batch_size: int = 256,
    captions_per_image: int = 5,
    progress: bool = False,
    *,
    workers: int = 0,
    precision: str = "auto",
    decode_on: str = "workers",
) -> RetrievalEmbeddings:
    """Encode ``source.eval_set(captions_per_image)``: every image, and the first ``captions_per_image`` captions
    of each, with the branches :func:`pick_retrieval_branches` chooses (``workers``, ``precision``, ``decode_on``:
    see :func:`encode_all`)."""
    image_branch, text_branch = pick_retrieval_branches(model, branches)
    rs = source.eval_set(captions_per_image)
    options = {"batch_size": batch_size, "progress": progress, "workers": workers, "precision": precision,
               "decode_on": decode_on}
    img = encode_all(model, image_branch, rs.images, **options)
    txt = encode_all(model, text_branch, rs.flat_captions, **options)
    return RetrievalEmbeddings(img, txt, np.asarray(rs.caption_image_index), image_branch, text_branch)


def score_retrieval(
    emb: RetrievalEmbeddings, protocol: str = "5k", index: str = "exact", index_options: Optional[dict] = None
) -> dict[str, Any]:
    """``{"protocol", "image_branch", "text_branch", **retrieval_metrics, "chance"}`` for ``emb``.

    ``protocol``: ``"5k"`` ranks against the whole set; ``"1k"`` averages over 5 folds of consecutive images.
    ``index``: ``"exact"`` or a FAISS index kind (``flat``, ``ivf``, ``hnsw``) with its ``index_options``.
    ``chance`` is the R@1/5/10 of random embeddings under the same protocol (:func:`retrieval_chance`).
    """
    folds = PROTOCOL_FOLDS[check_choice(protocol, RETRIEVAL_PROTOCOLS, "protocol")]
    metrics = retrieval_metrics(
        emb.image, emb.text, emb.text_to_image, ks=RECALL_KS, folds=folds, index=index, index_options=index_options
    )
    chance = retrieval_chance(metrics["num_images"], metrics["num_captions"], folds, RECALL_KS)
    return {
        "protocol": protocol, "image_branch": emb.image_branch, "text_branch": emb.text_branch, **metrics,
        "chance": chance,
    }


def evaluate_retrieval(
    model: Any,
    source: Any,
    branches: Optional[Sequence[str]] = None,
    batch_size: int = 256,
    protocol: str = "5k",
    captions_per_image: int = 5,
    progress: bool = False,
    *,
    workers: int = 0,
    precision: str = "auto",
    index: str = "exact",
    index_options: Optional[dict] = None,
    decode_on: str = "workers",
) -> dict[str, Any]:
    """Recall@1/5/10, medr, meanr both ways on a captioned source, with chance level: :func:`score_retrieval`
    of :func:`embed_for_retrieval`."""
    emb = embed_for_retrieval(
        model, source, branches, batch_size, captions_per_image, progress, workers=workers, precision=precision,
        decode_on=decode_on,
    )
    return score_retrieval(emb, protocol, index, index_options)


def recall_curve(emb: RetrievalEmbeddings, max_k: int = 50) -> dict[str, np.ndarray]:
    """``R@K`` (percent) for K = 1..max_k in both directions, against the whole set: ``{"k", "i2t", "t2i"}``."""
    i2t, t2i = retrieval_ranks(emb.image, emb.text, emb.text_to_image)
    ks = np.arange(1, max_k + 1)
    return {
        "k": ks,
        "i2t": np.array([100 * float(np.mean(i2t <= k)) for k in ks]),
        "t2i": np.array([100 * float(np.mean(t2i <= k)) for k in ks]),
    }


def format_retrieval(metrics: dict[str, Any], chance: Optional[dict[str, float]] = None) -> str:
    """A small table of R@1/5/10 both ways (and chance level when given)."""
    lines = [f"{'':10}{'R@1':>8}{'R@5':>8}{'R@10':>8}"]
    for direction, label in (("i2t", "image→text"), ("t2i", "text→image")):
        lines.append(label.ljust(10) + "".join(f"{metrics[f'{direction}_R@{k}']:8.1f}" for k in RECALL_KS))
        if chance:
            lines.append("  chance".ljust(10) + "".join(f"{chance[f'{direction}_R@{k}']:8.1f}" for k in RECALL_KS))
    lines.append(f"rsum {metrics['rsum']:.1f} over {metrics['num_images']} images, {metrics['num_captions']} captions")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- k-NN / probe


def encode_all(model: Any, branch: str, items: Sequence[Any], **options: Any) -> torch.Tensor:
    """``items`` through the one encode path (:func:`mmvicreg.data.encoding.encode`) as one (n, d) tensor (options:
    batch_size, layer, progress, workers, precision, decode_on)."""
    from mmvicreg.data.encoding import encode

    return encode(model, branch, items, **options)


def feature_batches(
    model: Any, branch: str, source: Any, layer: str = "representation", **options: Any
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """``(features (b, d), labels (b,))`` batch by batch of a labelled image source through ``branch``.

    The images are the data package's lazy view (``LazyImages``), decoded by the loader's workers batch by
    batch: never a decoded split, nor more than one batch of features, in memory. A corrupt image raises,
    whatever the source's policy (replacing it would misalign features and labels).
    """
    from mmvicreg.data import LazyImages  # the data package only when an image source is evaluated
    from mmvicreg.data.encoding import encode_batches

    labels = np.asarray(source.labels)
    start = 0
    for feats in encode_batches(model, branch, LazyImages(source), layer=layer, **options):
        yield feats, labels[start : start + len(feats)]
        start += len(feats)


def image_features(
    model: Any, branch: str, source: Any, layer: str = "representation", batch_size: int = 256,
    progress: bool = False, **options: Any,
) -> tuple[torch.Tensor, np.ndarray]:
    """``(features (n, d), labels (n,))`` of a labelled image source: :func:`feature_batches` concatenated."""
    batches = list(feature_batches(model, branch, source, layer, batch_size=batch_size, progress=progress, **options))
    return torch.cat([f for f, _ in batches]), np.concatenate([y for _, y in batches])


def evaluate_knn(
    model: Any,
    train_source: Any,
    test_source: Any,
    branch: str,
    ks: Sequence[int] = (20, 200),
    batch_size: int = 256,
    layer: str = "representation",
    progress: bool = False,
    temperature: float = 0.07,
    **options: Any,
) -> dict[str, Any]:
    """Weighted k-NN top-1 of ``branch``'s frozen features: ``{"branch", "layer", **knn_classify(...)}``.

    ``train_source`` is the labelled reference set; its features go into the k-NN index batch by batch
    (:class:`~mmvicreg.evaluation.metrics.knn.KNNMemory`), so memory grows with it by the features alone.
    ``ks`` larger than the reference set are dropped (all of them: k = its size). ``options``: ``workers``,
    ``precision`` (see :func:`encode_all`).
    """
    encoding = {"batch_size": batch_size, "progress": progress, **options}
    memory = KNNMemory(train_source.num_images)
    for feats, labels in feature_batches(model, branch, train_source, layer, **encoding):
        memory.add(feats, labels)
    test_x, test_y = image_features(model, branch, test_source, layer, **encoding)
    ks = tuple(k for k in ks if k <= len(memory)) or (len(memory),)
    scores = knn_classify_memory(memory, test_x, test_y, ks=ks, temperature=temperature)
    return {"branch": branch, "layer": layer, **scores}


def evaluate_linear_probe(
    model: Any,
    train_source: Any,
    test_source: Any,
    branch: str,
    epochs: Optional[int] = None,
    lr: Optional[float] = None,
    probe_batch_size: Optional[int] = None,
    batch_size: int = 256,
    layer: str = "representation",
    progress: bool = False,
    keep_head: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Linear-probe top-1 of ``branch``'s frozen, unaugmented features: ``{"branch", "layer", **linear_probe(...)}``.

    ``batch_size`` is the encoding batch, ``probe_batch_size`` the SGD batch of the probe; ``epochs``, ``lr`` and
    ``probe_batch_size`` left None are the quick probe's (``QUICK_PROBE``: 100, 0.1, 256); ``options``:
    ``workers``, ``precision``. The published protocol (augmented, or fine-tuned on 1%/10% of the labels) is
    :mod:`mmvicreg.evaluation.linear_eval`; both train the head with the one trainer of
    :mod:`mmvicreg.evaluation.metrics.linear_probe`. ``keep_head``: also the trained head (``"head"``).
    """
    encoding = {"batch_size": batch_size, "progress": progress, **options}
    train_x, train_y = image_features(model, branch, train_source, layer, **encoding)
    test_x, test_y = image_features(model, branch, test_source, layer, **encoding)
    scores = linear_probe(
        train_x, train_y, test_x, test_y,
        epochs=QUICK_PROBE.epochs if epochs is None else epochs,
        lr=QUICK_PROBE.lr_head if lr is None else lr,
        batch_size=QUICK_PROBE.batch_size if probe_batch_size is None else probe_batch_size, keep_head=keep_head,
    )
    return {"branch": branch, "layer": layer, **scores}


def format_knn(branch: str, scores: dict[str, Any]) -> str:
    """One line: ``k-NN top-1 of branch 'x': k=20: 51.0%, k=200: 47.5%``."""
    shown = ", ".join(f"k={k.split('_k')[1]}: {v:.1f}%" for k, v in scores.items() if k.startswith("top1_k"))
    return f"k-NN top-1 of branch {branch!r}: {shown}"
