"""retrieval_metrics against a plain argsort implementation of the VSE++ protocol, a hand-worked example,
sanity limits (identical branches, chance), FAISS indexes, the COCO-5K time budget, and bad input."""

import math

import numpy as np
import pytest
import torch

from mmvicreg.evaluation import coco_retrieval_metrics, retrieval_metrics, retrieval_ranks

# ----------------------------------------------------------------------------------------------- reference


def reference_ranks(img, txt, text_to_image):
    """The VSE++ protocol by sorting: 0-based positions in each query's full ranking (best first)."""
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sims = img @ txt.T  # (N, M)
    i2t = np.empty(len(img))
    for i in range(len(img)):
        order = np.argsort(-sims[i])  # captions, most similar first
        i2t[i] = np.flatnonzero(text_to_image[order] == i).min()
    t2i = np.empty(len(txt))
    for j in range(len(txt)):
        order = np.argsort(-sims[:, j])  # images, most similar first
        t2i[j] = np.flatnonzero(order == text_to_image[j])[0]
    return i2t, t2i


def reference_metrics(img, txt, text_to_image, ks=(1, 5, 10), folds=None):
    n = len(img)
    size = n if folds is None else n // folds
    per_fold = []
    for lo in range(0, n, size):
        keep = (text_to_image >= lo) & (text_to_image < lo + size)
        r = dict(zip(("i2t", "t2i"), reference_ranks(img[lo : lo + size], txt[keep], text_to_image[keep] - lo)))
        m = {}
        for d in ("i2t", "t2i"):
            for k in ks:
                m[f"{d}_R@{k}"] = 100.0 * np.mean(r[d] < k)
            m[f"{d}_medr"] = np.floor(np.median(r[d])) + 1
            m[f"{d}_meanr"] = r[d].mean() + 1
        per_fold.append(m)
    out = {key: np.mean([m[key] for m in per_fold]) for key in per_fold[0]}
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks)
    return out


def assert_metrics_equal(ours, ref):
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-9), key


def paired_data(n, per_image, d, noise, seed, shuffle=False):
    """float64 images and noisy captions (per_image each): realistic mid-range recalls, no near-ties."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, d))
    owner = np.repeat(np.arange(n), per_image)
    if shuffle:
        owner = rng.permutation(owner)
    txt = img[owner] + noise * rng.standard_normal((len(owner), d))
    return img, txt, owner


# ----------------------------------------------------------------------------------------------- equality


@pytest.mark.parametrize("folds", [None, 5])
@pytest.mark.parametrize("shuffle", [False, True])
def test_equals_vsepp_reference(folds, shuffle):
    img, txt, owner = paired_data(100, 5, 24, noise=1.3, seed=1, shuffle=shuffle)
    ref = reference_metrics(img, txt, owner, folds=folds)
    assert 10 < ref["t2i_R@1"] < 99  # a regime where ranks actually vary
    ours = retrieval_metrics(img, txt, owner, folds=folds)
    assert_metrics_equal(ours, ref)
    assert ours["num_images"] == 100 and ours["num_captions"] == 500
    # torch input, tiny blocks (many passes), same answer
    tiny = retrieval_metrics(torch.from_numpy(img), torch.from_numpy(txt), torch.from_numpy(owner), folds=folds,
                             block_mb=0.01)
    assert tiny == ours


def test_ranks_equal_reference_with_uneven_captions():
    rng = np.random.default_rng(2)
    img = rng.standard_normal((40, 8))
    owner = np.concatenate([np.arange(40), rng.integers(0, 40, 70)])  # 1 to ~6 captions per image
    txt = img[owner] + 1.0 * rng.standard_normal((len(owner), 8))
    i2t, t2i = retrieval_ranks(img, txt, owner)
    ref_i2t, ref_t2i = reference_ranks(img, txt, owner)
    np.testing.assert_array_equal(i2t, ref_i2t + 1)
    np.testing.assert_array_equal(t2i, ref_t2i + 1)


def test_coco_pair_equals_two_calls():
    img, txt, owner = paired_data(103, 5, 16, noise=1.2, seed=3, shuffle=True)  # 103: unequal folds
    both = coco_retrieval_metrics(img, txt, owner, block_mb=0.02)
    assert both["5K"] == retrieval_metrics(img, txt, owner)
    assert both["1K"] == retrieval_metrics(img, txt, owner, folds=5)


def test_float32_agrees_with_float64_reference():
    img, txt, owner = paired_data(100, 5, 24, noise=1.3, seed=4)
    ours = retrieval_metrics(img.astype(np.float32), txt.astype(np.float32), owner)
    ref = reference_metrics(img, txt, owner)
    for key, value in ref.items():  # a rounding-level near-tie may move one rank by one
        assert ours[key] == pytest.approx(value, abs=0.5), key


def test_hand_worked_example():
    # Unit vectors in 2-D (a = 1/√2):
    #   images   x0 = (1, 0)   x1 = (0, 1)   x2 = (-1, 0)
    #   captions c0 = (1, 0) → x0,  c1 = (0, 1) → x0,  c2 = (a, a) → x1,  c3 = (0, 1) → x2,  c4 = (-a, a) → x2
    # cosine similarities            x0    x1    x2
    #   c0                            1     0    -1
    #   c1                            0     1     0
    #   c2                            a     a    -a
    #   c3                            0     1     0
    #   c4                           -a     a     a
    # t2i (1 + images strictly above the true one; ties go to the truth):
    #   c0: 1 · c1: x1 above → 2 · c2: x0 ties → 1 · c3: x1 above → 2 · c4: x1 ties → 1    ranks 1 2 1 2 1
    # i2t (1 + other images' captions strictly above the best own caption):
    #   x0: best own c0 = 1 → 1 · x1: own c2 = a; c1 = c3 = 1 above, c4 = a ties → 3 · x2: best own c4 = a → 1
    img = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    txt = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 1.0]])
    owner = np.array([0, 0, 1, 2, 2])
    i2t, t2i = retrieval_ranks(img, txt, owner)
    assert i2t.tolist() == [1, 3, 1]
    assert t2i.tolist() == [1, 2, 1, 2, 1]
    m = retrieval_metrics(img, txt, owner, ks=(1, 2, 5))
    assert m["i2t_R@1"] == pytest.approx(200 / 3) and m["i2t_R@2"] == pytest.approx(200 / 3)
    assert m["i2t_R@5"] == 100
    assert m["t2i_R@1"] == pytest.approx(60) and m["t2i_R@2"] == 100 and m["t2i_R@5"] == 100
    assert m["i2t_medr"] == 1 and m["i2t_meanr"] == pytest.approx(5 / 3)
    assert m["t2i_medr"] == 1 and m["t2i_meanr"] == pytest.approx(7 / 5)
    assert m["rsum"] == pytest.approx(200 / 3 * 2 + 100 + 60 + 100 + 100)
    assert (m["num_images"], m["num_captions"]) == (3, 5)


def test_folds_rank_within_fold_and_average():
    # Two folds of one image each: every image is its fold's only candidate, so t2i is perfect within folds,
    # while against both images caption 1 (of image 1) prefers image 0 (cosine 0.995 against 0.677).
    img = np.array([[1.0, 0.0], [0.6, 0.8]])
    txt = np.array([[1.0, 0.0], [1.0, 0.1]])
    owner = np.array([0, 1])
    full = retrieval_metrics(img, txt, owner, ks=(1,))
    folded = retrieval_metrics(img, txt, owner, ks=(1,), folds=2)
    assert full["t2i_R@1"] == 50 and full["t2i_meanr"] == 1.5 and full["i2t_R@1"] == 100
    assert folded["t2i_R@1"] == 100 and folded["i2t_R@1"] == 100
    assert folded["rsum"] == 200 and folded["t2i_meanr"] == 1


# ----------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("folds", [None, 5])
def test_identical_branches_score_100(folds):
    rng = np.random.default_rng(5)
    img = rng.standard_normal((250, 64)).astype(np.float32)
    owner = np.repeat(np.arange(250), 5)
    m = retrieval_metrics(img, img[owner].copy(), owner, folds=folds)
    for key in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10"):
        assert m[key] == 100.0
    assert m["rsum"] == 600 and m["i2t_medr"] == m["t2i_medr"] == 1 and m["i2t_meanr"] == m["t2i_meanr"] == 1


def test_random_embeddings_score_chance():
    n, m_cap = 1000, 5000
    g = torch.Generator().manual_seed(6)
    img, txt = torch.randn(n, 32, generator=g), torch.randn(m_cap, 32, generator=g)
    owner = torch.arange(m_cap) // 5
    m = retrieval_metrics(img, txt, owner)
    for k in (1, 5, 10):
        p = k / n
        assert m[f"t2i_R@{k}"] == pytest.approx(100 * p, abs=5 * 100 * math.sqrt(p / m_cap))
        assert m[f"i2t_R@{k}"] == pytest.approx(100 * p, abs=5 * 100 * math.sqrt(p / n))  # 5 chances in M ≈ K/N
    assert m["t2i_meanr"] == pytest.approx((n + 1) / 2, abs=5 * n / math.sqrt(12 * m_cap))


# ----------------------------------------------------------------------------------------------- FAISS indexes


def test_faiss_flat_matches_exact_recall():
    img, txt, owner = paired_data(300, 5, 32, noise=1.3, seed=7)
    exact = retrieval_metrics(img, txt, owner)
    flat = retrieval_metrics(img, txt, owner, index="flat")
    for key in exact:
        if "R@" in key or key in ("rsum", "num_images", "num_captions"):
            assert flat[key] == pytest.approx(exact[key]), key
    assert flat["i2t_medr"] == exact["i2t_medr"]  # more than half the ranks are ≤ 10: median known
    assert max(retrieval_ranks(img, txt, owner)[1]) > 10
    assert math.isnan(flat["t2i_meanr"])  # some t2i ranks lie beyond the top-10 list: the mean is unknown
    assert max(retrieval_ranks(img, txt, owner)[0]) <= 10
    assert flat["i2t_meanr"] == exact["i2t_meanr"]  # every i2t rank is in the list: the mean is known


def test_faiss_index_reports_where_it_searched(monkeypatch):
    """Every R@K of a flat FAISS search equals the exact pass; the result says ``faiss``: cpu or gpu."""
    import faiss

    img, txt, owner = paired_data(120, 5, 16, noise=1.3, seed=11)
    exact = retrieval_metrics(img, txt, owner, ks=(1, 5, 10, 20))
    recall_keys = [k for k in exact if "R@" in k] + ["rsum"]
    assert "faiss" not in exact  # the exact pass is not FAISS: its keys are unchanged
    here = "gpu" if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 else "cpu"
    flat = retrieval_metrics(img, txt, owner, ks=(1, 5, 10, 20), index="flat")
    assert flat["faiss"] == here and set(flat) == set(exact) | {"faiss"}
    assert {k: flat[k] for k in recall_keys} == pytest.approx({k: exact[k] for k in recall_keys})
    both = coco_retrieval_metrics(img, txt, owner, index="flat")
    assert both["5K"]["faiss"] == both["1K"]["faiss"] == here
    assert retrieval_metrics(img, txt, owner, index="hnsw")["faiss"] == "cpu"  # FAISS has no GPU HNSW

    # With GPU FAISS and a GPU, the built index is copied to the GPUs (here: a stand-in that keeps it as is).
    moved = []
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: moved.append(index) or index, raising=False)
    gpu = retrieval_metrics(img, txt, owner, ks=(1, 5, 10, 20), index="flat")
    assert gpu["faiss"] == "gpu" and len(moved) == 2  # the image index and the caption index
    assert {k: gpu[k] for k in recall_keys} == {k: flat[k] for k in recall_keys}
    assert retrieval_metrics(img, txt, owner, index="hnsw")["faiss"] == "cpu" and len(moved) == 2


def test_faiss_ranks_beyond_k_are_inf():
    img, txt, owner = paired_data(200, 5, 16, noise=3.0, seed=8)
    exact_i2t, exact_t2i = retrieval_ranks(img, txt, owner)
    i2t, t2i = retrieval_ranks(img, txt, owner, index="flat", k=7)
    np.testing.assert_array_equal(t2i, np.where(exact_t2i <= 7, exact_t2i, np.inf))
    np.testing.assert_array_equal(i2t, np.where(exact_i2t <= 7, exact_i2t, np.inf))


def test_approximate_indexes():
    img, txt, owner = paired_data(1000, 5, 32, noise=1.0, seed=9)
    img, txt = img.astype(np.float32), txt.astype(np.float32)
    exact = retrieval_metrics(img, txt, owner)
    # visiting every IVF cell is an exhaustive search
    full_ivf = retrieval_metrics(img, txt, owner, index="ivf", index_options={"nlist": 16, "nprobe": 16})
    hnsw = retrieval_metrics(img, txt, owner, index="hnsw", index_options={"ef_search": 64})
    ivf = retrieval_metrics(img, txt, owner, index="ivf", index_options={"nprobe": 32})
    slack = 0.2  # FAISS and torch round dot products differently: a float32 near-tie can go either way
    for k in (1, 5, 10):
        for d in ("i2t", "t2i"):
            key = f"{d}_R@{k}"
            assert full_ivf[key] == pytest.approx(exact[key], abs=slack), key
            assert exact[key] - 3 <= hnsw[key] <= exact[key] + slack, key
            assert exact[key] - 5 <= ivf[key] <= exact[key] + slack, key


# ----------------------------------------------------------------------------------------------- speed


def test_coco_5k_both_protocols_at_full_scale_sit_at_chance_for_random_embeddings():
    # 5,000 images, 25,000 captions, d = 1024: the real 5K scale (its speed is in benchmarks/retrieval_speed.py).
    g = torch.Generator().manual_seed(10)
    img, txt = torch.randn(5000, 1024, generator=g), torch.randn(25000, 1024, generator=g)
    owner = torch.arange(25000) // 5
    both = coco_retrieval_metrics(img, txt, owner)
    for protocol in ("5K", "1K"):
        assert set(both[protocol]) >= {"i2t_R@1", "t2i_R@10", "rsum", "i2t_medr", "t2i_meanr"}
        assert all(math.isfinite(v) for v in both[protocol].values())
    assert both["1K"]["t2i_meanr"] == pytest.approx(500.5, abs=15)  # chance within a 1,000-image fold
    assert both["5K"]["t2i_meanr"] == pytest.approx(2500.5, abs=75)  # chance over the whole set


# ----------------------------------------------------------------------------------------------- bad input


def _good():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3)), rng.standard_normal((8, 3)), np.repeat(np.arange(4), 2)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda i, t, o: (i, t[:, :2], o), ValueError, r"image_emb has shape \(4, 3\) and text_emb has shape \(8, 2\)"),
        (lambda i, t, o: (i, t, o + 1), ValueError, r"text_to_image\[6\] = 4 is out of range.*\[0, 4\)"),
        (lambda i, t, o: (i, t, -o), ValueError, r"out of range"),
        (lambda i, t, o: (i, t, o // 2), ValueError, r"2 of the 4 images \(rows 2, 3\) have no caption"),
        (lambda i, t, o: (i, np.where(np.arange(8)[:, None] == 5, np.nan, t), o), ValueError, r"text_emb.*NaN.*row 5"),
        (lambda i, t, o: (np.full_like(i, np.inf), t, o), ValueError, r"image_emb.*infinite.*4 row"),
        (lambda i, t, o: (i[0], t, o), ValueError, r"image_emb must be 2-D.*\(3\)"),
        (lambda i, t, o: (i, t[None], o), ValueError, r"text_emb must be 2-D.*\(1, 8, 3\)"),
        (lambda i, t, o: (i, t, o[:7]), ValueError, r"text_to_image has 7 entries but text_emb has 8 rows"),
        (lambda i, t, o: (i, t, o[:, None]), ValueError, r"text_to_image must be 1-D.*reshape"),
        (lambda i, t, o: (i, t, o.astype(float)), TypeError, r"text_to_image has dtype .*float64.*integers"),
        (lambda i, t, o: (i.tolist(), t, o), TypeError, r"image_emb must be a torch.Tensor or numpy.ndarray.*list"),
        (lambda i, t, o: (i.astype(str), t, o), TypeError, r"image_emb"),
        (lambda i, t, o: (i[:0], t, o), ValueError, r"image_emb has shape \(0, 3\)"),
    ],
)
def test_bad_input_raises_one_clear_error(change, error, match):
    with pytest.raises(error, match=match):
        retrieval_metrics(*change(*_good()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"folds": 0}, "folds must be None"),
        ({"folds": 5}, r"folds must be None.*\[1, 4\]"),
        ({"folds": 2.0}, "folds must be None"),
        ({"ks": ()}, "ks must be a non-empty"),
        ({"ks": (0, 1)}, "ks must be a non-empty"),
        ({"index": "annoy"}, "index must be 'exact' or one of"),
        ({"index": "exact", "index_options": {"nprobe": 3}}, "apply to FAISS indexes"),
        ({"index": "hnsw", "index_options": {"nprobe": 3}}, r"unknown option\(s\) \['nprobe'\] for a 'hnsw' index"),
        ({"block_mb": 0}, "block_mb must be a positive"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(*_good(), **kwargs)
