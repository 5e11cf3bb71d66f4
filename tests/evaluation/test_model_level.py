"""Model-level evaluation (model + source -> metrics), the one path training and the command line share.

The model is duck-typed (``branch_names``, ``branch(name).modality``, ``encode_batches``), so a small stand-in serves:
its embeddings are known, and so are the metrics they must give.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmvicreg.config import EvalConfig
from mmvicreg.evaluation import evaluate, evaluate_knn, evaluate_linear_probe, evaluate_retrieval, retrieval_chance
from mmvicreg.evaluation.model_level import embed_for_retrieval, format_knn, recall_curve

RETRIEVAL_KEYS = {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "rsum", "i2t_medr",
                  "i2t_meanr", "t2i_medr", "t2i_meanr", "num_images", "num_captions"}


class StandIn:
    """Images are ints (or PIL images: their pixels), captions ``"c<i>"``: caption c<i> embeds like image i."""

    def __init__(self, branches=(("photo", "image"), ("text", "text"))):
        self._modality = dict(branches)
        self.calls = []

    @property
    def branch_names(self):
        return list(self._modality)

    def branch(self, name):
        return SimpleNamespace(modality=self._modality[name])

    def encode_batches(self, branch, items, batch_size=64, layer="embedding", progress=False, workers=0,
                       precision="auto", decode_on="workers"):
        self.calls.append((branch, type(items).__name__, layer))
        for a in range(0, len(items), batch_size):
            yield self._rows([items[i] for i in range(a, min(a + batch_size, len(items)))])

    @staticmethod
    def _rows(batch):
        if isinstance(batch[0], str):
            return torch.nn.functional.one_hot(torch.tensor([int(c[1:]) for c in batch]), 16).float()
        if isinstance(batch[0], int):
            return torch.nn.functional.one_hot(torch.tensor(batch), 16).float()
        return torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32)).flatten() for im in batch])


@pytest.fixture(autouse=True)
def stand_in_encodes_raw_items(monkeypatch):
    """The stand-in embeds raw items itself: the one encode path (``mmvicreg.data.encoding``) hands them to it."""
    monkeypatch.setattr("mmvicreg.data.encoding.encode_batches",
                        lambda model, branch, items, *args, **options: model.encode_batches(branch, items, *args,
                                                                                            **options))


def _captioned(n=10, per_image=5):
    captions = [[f"c{i}"] * (per_image + 1) for i in range(n)]  # one caption more than the protocol keeps

    def eval_set(k):
        kept = [c[:k] for c in captions]
        return SimpleNamespace(images=list(range(n)), flat_captions=[c for cs in kept for c in cs],
                               caption_image_index=[i for i, cs in enumerate(kept) for _ in cs])

    return SimpleNamespace(eval_set=eval_set)


@pytest.mark.parametrize("protocol, gallery", [("5k", 10), ("1k", 2)])
def test_evaluate_on_a_captioned_source_gives_the_retrieval_keys_and_chance(protocol, gallery):
    model = StandIn()
    result, text = evaluate(model, _captioned(), settings=EvalConfig(batch_size=4, protocol=protocol))
    assert set(result) == RETRIEVAL_KEYS | {"protocol", "image_branch", "text_branch", "chance"}
    assert (result["protocol"], result["image_branch"], result["text_branch"]) == (protocol, "photo", "text")
    assert result["i2t_R@1"] == result["t2i_R@1"] == 100.0 and result["num_captions"] == 50
    assert result["chance"]["t2i_R@1"] == pytest.approx(100 / gallery)
    assert result["chance"]["i2t_R@5"] == pytest.approx(100 * (1 - (1 - 5 / (5 * gallery)) ** 5))
    assert result["chance"] == retrieval_chance(10, 50, None if protocol == "5k" else 5)
    assert text.startswith(f"held-out retrieval ({protocol} protocol):") and "  chance" in text


def test_evaluate_retrieval_honours_branches_and_captions_per_image():
    model = StandIn(branches=(("text", "text"), ("a", "image"), ("b", "image")))
    result = evaluate_retrieval(model, _captioned(), branches=["b", "text"], captions_per_image=2)
    assert result["image_branch"] == "b" and result["num_captions"] == 20
    with pytest.raises(ValueError, match="must name \\[image branch, text branch\\]"):
        evaluate_retrieval(model, _captioned(), branches=["b"])


def test_recall_curve_reaches_100_for_aligned_embeddings():
    curve = recall_curve(embed_for_retrieval(StandIn(), _captioned()), max_k=5)
    assert curve["k"].tolist() == [1, 2, 3, 4, 5] and curve["i2t"].tolist() == [100.0] * 5


class Digits:
    """A labelled image source: 8×8 digit images (PIL) with labels; decoded only when asked."""

    def __init__(self, split, n=None):
        from PIL import Image
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        keep = slice(0, n or 1200) if split == "train" else slice(1200, None)
        self._pixels, self.labels = x[keep], [int(v) for v in y[keep]]
        self._image = lambda i: Image.fromarray((self._pixels[i] * 15).reshape(8, 8).astype(np.uint8)).convert("L")
        self.decoded = 0

    @property
    def num_images(self):
        return len(self.labels)

    def __len__(self):
        return len(self.labels)

    def load_image(self, i):
        self.decoded += 1
        return self._image(i)

    def __getitem__(self, i):
        return {"image": self.load_image(i), "label": self.labels[i]}


def test_evaluate_on_a_labelled_source_scores_knn_per_branch_lazily():
    model, train, test = StandIn(branches=(("photo", "image"),)), Digits("train"), Digits("test")
    result, text = evaluate(model, test, reference=train, settings=EvalConfig(batch_size=100))
    (scores,) = result["knn"].values()
    assert list(result) == ["knn"] and list(result["knn"]) == ["photo"]
    assert scores["branch"] == "photo" and scores["layer"] == "representation"
    assert scores["top1_k20"] > 90 and scores["num_train"] == 1200 and scores["num_test"] == 597
    assert text == format_knn("photo", scores) and text.startswith("k-NN top-1 of branch 'photo': k=20: ")
    # the images went to the model as a lazy sequence, never as a list of every decoded image
    assert all(kind != "list" for _, kind, _ in model.calls)
    assert train.decoded == 1200 and test.decoded == 597
    with pytest.raises(ValueError, match="needs a labelled reference set as memory: set eval.reference"):
        evaluate(model, test, settings=EvalConfig())


def test_knn_drops_ks_beyond_the_training_set_and_the_probe_learns():
    model, train, test = StandIn(branches=(("photo", "image"),)), Digits("train"), Digits("test")
    assert set(evaluate_knn(model, train, test, "photo", ks=(20, 5000))) == {
        "branch", "layer", "top1_k20", "num_train", "num_test"}
    assert "top1_k7" in evaluate_knn(model, Digits("train", n=7), test, "photo", ks=(20, 200))
    probe = evaluate_linear_probe(model, train, test, "photo", epochs=5, layer="embedding")
    assert probe["layer"] == "embedding" and probe["top1_best"] > 80 and probe["num_classes"] == 10
