"""Image–text retrieval: Recall@K, median and mean rank in both directions (the VSE++ / COCO protocol).

Similarity is cosine: both sides are L2-normalised here. For N images, M captions and ``text_to_image`` (M,)
giving each caption's image:

* text→image (t2i): a caption's rank is the 1-based position of its image among all N images;
* image→text (i2t): an image's rank is the best 1-based position of any of its captions among all M captions;
* ``R@K = 100 · mean(rank ≤ K)``; ``medr = floor(median(rank))`` and ``meanr = mean(rank)`` (VSE++'s
  ``floor(median(r0)) + 1`` and ``mean(r0) + 1`` for its 0-based ``r0``); ``rsum`` = sum of every R@K.

Ranks are computed without sorting:

    rank_t2i(j) = 1 + #{images i : s(j, i) > s(j, image(j))}
    rank_i2t(i) = 1 + #{captions c of other images : s(c, i) > max over captions c' of i of s(c', i)}

**Ties** (exactly equal similarities, e.g. duplicate embeddings) are resolved in favour of the ground truth:
only strictly greater similarities push it down. Similarities are computed in float32, or in float64 when
either input is float64 (twice slower); a competitor within rounding error of the ground truth (~1e-7 relative
in float32) may land on either side, as in any floating-point implementation, VSE++'s argsort included.
Tensors on a GPU are evaluated there.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from mmvicreg.choices import INDEX_KINDS
from mmvicreg.evaluation.metrics import inputs
from mmvicreg.evaluation.metrics.search import as_faiss, build_index, faiss_device, on_faiss_device, search

__all__ = ["coco_retrieval_metrics", "retrieval_metrics", "retrieval_ranks"]


def retrieval_metrics(
    image_emb: inputs.ArrayLike,
    text_emb: inputs.ArrayLike,
    text_to_image: inputs.ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    folds: Optional[int] = None,
    *,
    index: str = "exact",
    index_options: Optional[Mapping[str, Any]] = None,
    block_mb: float = 256,
) -> dict[str, float]:
    """Recall@K, medr and meanr for image→text and text→image retrieval.

    Args:
        image_emb: (N, d) image embeddings, torch or NumPy.
        text_emb: (M, d) caption embeddings in the same space.
        text_to_image: (M,) integers, the row of ``image_emb`` each caption describes. Every image needs at
            least one caption.
        ks: the K of each Recall@K.
        folds: ``None`` ranks against the whole set (COCO 5K protocol). ``folds=5`` is the COCO 1K protocol:
            the images are cut into 5 runs of consecutive rows (sizes differ by at most one when N is not a
            multiple), each run is ranked against itself with its own captions, every metric is averaged over
            the folds, and ``rsum`` is recomputed from the averaged recalls.
        index: how ranks are found.
            ``"exact"`` (default) counts, in blocks of the similarity matrix, the gallery items strictly more
            similar than the ground truth: exact, every metric, O(N·M·d) time, memory bounded by ``block_mb``.
            ``"flat"`` is FAISS exact top-k search with k = max(ks): the same R@K, but medr is only known when
            more than half the ranks are ≤ k, and meanr only when all are (each is NaN when unknown).
            ``"hnsw"`` / ``"ivf"``: approximate FAISS indexes for galleries too large for the exact pass; R@K
            may be lower than exact (benchmarks/RESULTS.md measures the loss: at 20K × 100K neither was worth
            it), medr/meanr as for ``"flat"``.
        index_options: FAISS parameters for ``"hnsw"`` (m, ef_construction, ef_search) or ``"ivf"``
            (nlist, nprobe); see :mod:`mmvicreg.evaluation.metrics.search`.
        block_mb: the largest similarity block held at once by ``"exact"``, in MiB.

    Returns:
        ``i2t_R@K`` and ``t2i_R@K`` for each K (percent), ``rsum``, ``i2t_medr``, ``i2t_meanr``, ``t2i_medr``,
        ``t2i_meanr``, ``num_images`` (N) and ``num_captions`` (M), as Python floats/ints; with a FAISS
        ``index``, also ``faiss``: ``"gpu"`` or ``"cpu"``, where the search ran (a GPU build of FAISS and a
        visible GPU for flat and IVF, else the CPU: :func:`mmvicreg.evaluation.metrics.search.faiss_device`).

    Ranks are 1-based; ties go to the ground truth (see the module docstring).
    """
    ks = inputs.positive_ints(ks, "ks")
    img, txt, owner = _checked(image_emb, text_emb, text_to_image)
    if folds is None:
        summary = _summary(*_ranks(img, txt, owner, index, max(ks), index_options, block_mb), ks)
    else:
        per_fold = []
        for lo, hi in _fold_spans(img.shape[0], folds):
            mine = (owner >= lo) & (owner < hi)
            ranks = _ranks(img[lo:hi], txt[mine], owner[mine] - lo, index, max(ks), index_options, block_mb)
            per_fold.append(_summary(*ranks, ks))
        summary = _average(per_fold)
    out = _finish(summary, ks, img.shape[0], txt.shape[0])
    if index != "exact":
        out["faiss"] = faiss_device(index)
    return out


def coco_retrieval_metrics(
    image_emb: inputs.ArrayLike,
    text_emb: inputs.ArrayLike,
    text_to_image: inputs.ArrayLike,
    ks: Sequence[int] = (1, 5, 10),
    folds: int = 5,
    *,
    index: str = "exact",
    index_options: Optional[Mapping[str, Any]] = None,
    block_mb: float = 256,
) -> dict[str, dict[str, float]]:
    """Both COCO protocols: ``{"5K": retrieval_metrics(..., folds=None), "1K": retrieval_metrics(..., folds=folds)}``.

    With ``index="exact"`` both come from one pass over the similarity matrix (the 1K ranks are counted on its
    diagonal blocks), so the pair costs about what the 5K protocol costs alone. The names are COCO's: on a test
    set of N ≠ 5,000 images, "1K" means folds of about N/folds images. Arguments as in :func:`retrieval_metrics`.
    """
    if index != "exact":
        kwargs = dict(ks=ks, index=index, index_options=index_options, block_mb=block_mb)
        return {
            "5K": retrieval_metrics(image_emb, text_emb, text_to_image, folds=None, **kwargs),
            "1K": retrieval_metrics(image_emb, text_emb, text_to_image, folds=folds, **kwargs),
        }
    ks = inputs.positive_ints(ks, "ks")
    img, txt, owner = _checked(image_emb, text_emb, text_to_image)
    n, m = img.shape[0], txt.shape[0]
    spans = _fold_spans(n, folds)
    i2t, t2i, i2t_fold, t2i_fold = _ranks(img, txt, owner, index, max(ks), index_options, block_mb, spans)
    owner_np = owner.cpu().numpy()
    per_fold = [
        _summary(i2t_fold[lo:hi], t2i_fold[(owner_np >= lo) & (owner_np < hi)], ks) for lo, hi in spans
    ]
    return {"5K": _finish(_summary(i2t, t2i, ks), ks, n, m), "1K": _finish(_average(per_fold), ks, n, m)}


def retrieval_ranks(
    image_emb: inputs.ArrayLike,
    text_emb: inputs.ArrayLike,
    text_to_image: inputs.ArrayLike,
    *,
    index: str = "exact",
    k: int = 10,
    index_options: Optional[Mapping[str, Any]] = None,
    block_mb: float = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks ``(i2t (N,), t2i (M,))`` against the whole set, as float64 arrays.

    With ``index="exact"`` every rank is known; with a FAISS index only ranks ≤ ``k`` are, the rest are ``inf``.
    Arguments as in :func:`retrieval_metrics`.
    """
    img, txt, owner = _checked(image_emb, text_emb, text_to_image)
    (k,) = inputs.positive_ints([k], "k")
    return _ranks(img, txt, owner, index, k, index_options, block_mb)


# ----------------------------------------------------------------------------------------------- checks


def _checked(image_emb: object, text_emb: object, text_to_image: object):
    img = inputs.embeddings(image_emb, "image_emb")
    txt = inputs.embeddings(text_emb, "text_emb")
    inputs.same_width(
        img, "image_emb", txt, "text_emb",
        "retrieval compares both in one space: pass the embeddings z of both branches (the expander outputs), "
        "not a backbone representation of one and an embedding of the other",
    )
    n, m = img.shape[0], txt.shape[0]
    owner = inputs.indices(text_to_image, "text_to_image", m, "text_emb", n, "image_emb rows").to(img.device)
    counts = torch.bincount(owner, minlength=n)
    orphans = torch.nonzero(counts == 0).flatten()
    if orphans.numel():
        shown = ", ".join(str(int(i)) for i in orphans[:5]) + (", ..." if orphans.numel() > 5 else "")
        raise ValueError(
            f"{orphans.numel()} of the {n} images (rows {shown}) have no caption in text_to_image "
            f"({m} captions); image→text ranks are undefined for them: drop those rows from image_emb and "
            f"re-index text_to_image, or check the caption→image mapping"
        )
    img, txt = inputs.common_dtype(img, txt)
    return inputs.l2_normalize(img), inputs.l2_normalize(txt), owner


# ----------------------------------------------------------------------------------------------- ranks


def _fold_spans(n: int, folds: object) -> list[tuple[int, int]]:
    """``folds`` runs of consecutive image rows whose sizes differ by at most one."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 1 <= folds <= n:
        raise ValueError(
            f"folds must be None (5K protocol) or an integer in [1, {n}] (the number of images), got {folds!r}; "
            f"the COCO 1K protocol is folds=5 on the 5,000 test images"
        )
    edges = np.cumsum([0] + [n // folds + (f < n % folds) for f in range(folds)]).tolist()
    return list(zip(edges[:-1], edges[1:]))


def _ranks(
    img, txt, owner, index: str, k: int, options, block_mb: float, spans: Optional[list[tuple[int, int]]] = None
) -> tuple[np.ndarray, ...]:
    if index == "exact":
        if options:
            raise ValueError(f"index_options {dict(options)} apply to FAISS indexes {INDEX_KINDS}, not 'exact'")
        if not isinstance(block_mb, (int, float)) or block_mb <= 0:
            raise ValueError(f"block_mb must be a positive number of MiB, got {block_mb!r}")
        edges = [lo for lo, _ in spans] + [spans[-1][1]] if spans else None
        return _exact_ranks(img, txt, owner, block_mb, edges)
    if index not in INDEX_KINDS:
        raise ValueError(f"index must be 'exact' or one of {INDEX_KINDS}, got {index!r}")
    return _topk_ranks(img, txt, owner, index, k, options)


def _greater(a: torch.Tensor, b: torch.Tensor):
    """``a > b`` (broadcast) as a NumPy bool array on CPU, a torch one elsewhere."""
    return a.numpy() > b.numpy() if a.device.type == "cpu" else a > b


def _count(mask, dim: int) -> torch.Tensor:
    """Number of True along ``dim``, int64."""
    if isinstance(mask, np.ndarray):
        # torch's bool reductions run ~6x slower than NumPy's count_nonzero on CPU (measured), and these
        # counts touch every similarity twice: a third of an exact evaluation's time.
        return torch.from_numpy(np.count_nonzero(mask, axis=dim).astype(np.int64, copy=False))
    return mask.sum(dim)


def _exact_ranks(
    img, txt, owner, block_mb: float, fold_edges: Optional[list[int]] = None
) -> tuple[np.ndarray, ...]:
    """``(i2t, t2i)`` ranks from one pass over caption blocks of the (M, N) similarity matrix.

    With ``fold_edges`` (image row boundaries ``[0, e1, ..., N]``) the same pass also ranks each caption and
    image within its own fold and returns ``(i2t, t2i, i2t_fold, t2i_fold)``: both protocols for one product.

    Hand-written rather than FAISS: FAISS returns top-k lists, and the rank of one given ground truth needs
    either k = gallery size (a full sort and an N·M result) or a range search with a per-query radius, which
    FAISS does not offer. Counting strict exceedances inside a blocked matrix product costs what a flat FAISS
    search costs (the product dominates), is exact, and yields medr/meanr as well.
    """
    n, m = img.shape[0], txt.shape[0]
    dev = img.device
    row_bytes = max(n, img.shape[1]) * (img.element_size() + 2)  # a similarity row and two comparison masks
    rows = max(1, min(m, int(block_mb * 2**20 // row_bytes)))
    blocks = [(a, min(a + rows, m)) for a in range(0, m, rows)]
    edges = fold_edges or [0, n]
    spans = list(zip(edges[:-1], edges[1:]))
    fold_of_image = torch.bucketize(torch.arange(n, device=dev), torch.tensor(edges[1:], device=dev), right=True)

    # i2t needs each image's best true-caption similarity before the pass.
    s_true = torch.cat([(txt[a:b] * img[owner[a:b]]).sum(1) for a, b in blocks])
    s_best = torch.full((n,), -math.inf, dtype=img.dtype, device=dev)
    s_best.scatter_reduce_(0, owner, s_true, reduce="amax")

    t2i_above = torch.empty(m, len(spans), dtype=torch.int64, device=dev)  # per caption, per image fold
    i2t_above = torch.zeros(n, dtype=torch.int64, device=dev)
    i2t_above_fold = torch.zeros(n, dtype=torch.int64, device=dev)
    for a, b in blocks:
        sims = txt[a:b] @ img.T  # (B, N)
        mine = owner[a:b]
        own = sims[torch.arange(b - a, device=dev), mine]
        # t2i: the threshold comes from the same row, so the ground truth never counts against itself and exact
        # ties (duplicate images) go to it.
        above = _greater(sims, own[:, None])
        for f, (lo, hi) in enumerate(spans):
            t2i_above[a:b, f] = _count(above[:, lo:hi], dim=1)
        # i2t: every caption above the image's best true caption, less the image's own captions counted
        # (possible only through rounding between the two dot-product paths).
        above = _greater(sims, s_best[None, :])
        i2t_above += _count(above, dim=0)
        if fold_edges:
            caption_fold = fold_of_image[mine]
            for f, (lo, hi) in enumerate(spans):
                in_fold = torch.nonzero(caption_fold == f).flatten()
                if in_fold.numel():
                    rows_f = in_fold.numpy() if isinstance(above, np.ndarray) else in_fold
                    i2t_above_fold[lo:hi] += _count(above[rows_f, lo:hi], dim=0)
        own_counted = torch.bincount(mine[own > s_best[mine]], minlength=n)
        i2t_above -= own_counted
        i2t_above_fold -= own_counted

    def ranks(above: torch.Tensor) -> np.ndarray:
        return (above + 1).cpu().double().numpy()

    i2t, t2i = ranks(i2t_above), ranks(t2i_above.sum(1))
    if not fold_edges:
        return i2t, t2i
    t2i_fold = t2i_above.gather(1, fold_of_image[owner][:, None]).squeeze(1)
    return i2t, t2i, ranks(i2t_above_fold), ranks(t2i_fold)


def _topk_ranks(img, txt, owner, kind: str, k: int, options) -> tuple[np.ndarray, np.ndarray]:
    """Ranks ≤ k from FAISS top-k lists; ``inf`` where the ground truth is not in the list."""
    img32, txt32 = as_faiss(img), as_faiss(txt)
    owner_np = owner.cpu().numpy()

    _, ids = search(on_faiss_device(build_index(img32, kind, options), kind)[0], txt32, k)  # t2i: captions query images
    t2i = _first_hit(ids == owner_np[:, None])

    _, ids = search(on_faiss_device(build_index(txt32, kind, options), kind)[0], img32, k)  # i2t: images query captions
    hit_owner = np.where(ids >= 0, owner_np[np.maximum(ids, 0)], -1)
    i2t = _first_hit(hit_owner == np.arange(img32.shape[0])[:, None])
    return i2t, t2i


def _first_hit(hits: np.ndarray) -> np.ndarray:
    first = hits.argmax(axis=1).astype(np.float64) + 1
    first[~hits.any(axis=1)] = np.inf
    return first


# ----------------------------------------------------------------------------------------------- summary


def _average(per_fold: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([m[key] for m in per_fold])) for key in per_fold[0]}


def _finish(summary: dict[str, float], ks: tuple[int, ...], n: int, m: int) -> dict[str, float]:
    out = dict(summary)
    out["rsum"] = sum(summary[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks)
    out["num_images"] = int(n)
    out["num_captions"] = int(m)
    return out


def _summary(i2t: np.ndarray, t2i: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{direction}_R@{k}"] = 100.0 * float(np.mean(ranks <= k))
    for direction, ranks in (("i2t", i2t), ("t2i", t2i)):
        median = float(np.median(ranks))  # inf when a middle rank lies beyond a top-k search
        out[f"{direction}_medr"] = float(math.floor(median)) if math.isfinite(median) else math.nan
        out[f"{direction}_meanr"] = float(np.mean(ranks)) if np.isfinite(ranks).all() else math.nan
    return out
