"""Batching: {branch: tensor} batches, per-branch preprocessing, the one collate (padding), seeded shuffles, full
batches, the epoch sampler, raw items for encode."""

import pytest
import torch

from mmvicreg.data import (
    BranchDataset,
    DigitsSource,
    EpochBatchSampler,
    Preprocessor,
    RawItems,
    ShapesSource,
    collate,
    collate_branches,
    make_loader,
)
from mmvicreg.data.transforms import eval_transform, vicreg_view
from tests.helpers.sources import caption_dataset, image_dataset, select_branches

PAD = 0


def tokens(caption: str) -> torch.Tensor:
    """A stand-in tokenizer: one id per word (its length + 1), so lengths vary with the caption."""
    return torch.tensor([len(w) + 1 for w in caption.split()], dtype=torch.long)


def image_text_preprocessors(size=16):
    return {"image": ("image", eval_transform(size), None), "text": ("caption", tokens, PAD)}


@pytest.fixture(scope="module")
def shapes():
    return ShapesSource("val", num_images=50, size=16, seed=2)


def test_branch_dataset_applies_each_branch_to_its_field(shapes):
    ds = BranchDataset(shapes, image_text_preprocessors(), extra_fields=("image_id",))
    item = ds[4]
    assert set(item) == {"image", "text", "image_id"}
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.uint8  # normalised on the device
    assert item["text"].dtype == torch.long and item["image_id"] == 4


def test_collate_pads_text_to_batch_max_and_stacks_images():
    items = [{"img": torch.zeros(3, 4, 4), "txt": torch.tensor([5, 6, 7]), "label": 1},
             {"img": torch.ones(3, 4, 4), "txt": torch.tensor([8]), "label": 2}]
    batch = collate_branches({"img": None, "txt": -1})(items)
    assert batch["img"].shape == (2, 3, 4, 4)
    assert batch["txt"].tolist() == [[5, 6, 7], [8, -1, -1]]
    assert batch["label"].tolist() == [1, 2]


def test_train_loader_drops_last_incomplete_batch_and_is_seeded(shapes):
    pre = image_text_preprocessors()
    loader = make_loader(shapes, pre, batch_size=16, train=True, seed=7, extra_fields=("image_id",))
    batches = list(loader)
    assert len(batches) == 3 and all(b["image"].shape == (16, 3, 16, 16) for b in batches)
    text = batches[0]["text"]
    assert text.shape[0] == 16 and (text == PAD).any()  # right-padded to the longest caption
    order = [i for b in batches for i in b["image_id"].tolist()]
    assert order != sorted(order)
    again = [i for b in make_loader(shapes, pre, batch_size=16, train=True, seed=7, extra_fields=("image_id",))
             for i in b["image_id"].tolist()]
    other = [i for b in make_loader(shapes, pre, batch_size=16, train=True, seed=8, extra_fields=("image_id",))
             for i in b["image_id"].tolist()]
    assert again == order and other != order


def test_eval_loader_keeps_order_and_every_sample(shapes):
    loader = make_loader(shapes, image_text_preprocessors(), batch_size=16, train=False, extra_fields=("image_id",))
    ids = [i for b in loader for i in b["image_id"].tolist()]
    assert ids == list(range(50))


def test_two_workers_siamese_views_reproducible():
    source = DigitsSource("test", size=16)
    pre = {"view1": ("image", vicreg_view(16, 1), None), "view2": ("image", vicreg_view(16, 2), None)}

    def run(seed):
        loader = make_loader(source, pre, batch_size=32, train=True, workers=2, seed=seed, extra_fields=("label",))
        return [b for _, b in zip(range(2), loader)]

    a, b = run(3), run(3)
    assert a[0]["view1"].shape == (32, 3, 16, 16) and a[0]["label"].shape == (32,)
    assert not torch.equal(a[0]["view1"], a[0]["view2"])  # each branch augments the same image its own way
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)  # same seed, same workers: same batches


def test_retrieval_set_embeds_through_the_same_plumbing(shapes):
    pre = image_text_preprocessors()
    ev = shapes.eval_set()
    images = list(make_loader(image_dataset(ev), select_branches(pre, "image"), batch_size=20, train=False))
    captions = list(make_loader(caption_dataset(ev), select_branches(pre, "caption"), batch_size=64, train=False,
                                extra_fields=("image_index",)))
    assert sum(len(b["image"]) for b in images) == 50 and set(images[0]) == {"image"}
    assert torch.cat([b["image_index"] for b in captions]).tolist() == ev.caption_image_index


def test_loader_errors(shapes):
    pre = image_text_preprocessors()
    with pytest.raises(ValueError, match="fewer than one training batch"):
        make_loader(shapes, pre, batch_size=64, train=True)
    with pytest.raises(KeyError, match="reads field 'caption'.*select the branches"):
        BranchDataset(DigitsSource("test"), pre)[0]
    with pytest.raises(ValueError, match=r"must be \(field, fn, pad_id\)"):
        BranchDataset(shapes, {"image": eval_transform(16)})
    with pytest.raises(ValueError, match="collide with branch names"):
        BranchDataset(shapes, pre, extra_fields=("image",))


def test_preprocessor_is_a_named_triple_and_plain_triples_still_work(shapes):
    spec = Preprocessor("caption", tokens, PAD)
    assert spec == ("caption", tokens, PAD) and spec.field == "caption" and Preprocessor("image", len).pad_id is None
    named = BranchDataset(shapes, {"text": spec})
    plain = BranchDataset(shapes, {"text": ("caption", tokens, PAD)})
    assert named.preprocessors == plain.preprocessors and isinstance(plain.preprocessors["text"], Preprocessor)
    assert select_branches({"text": ("caption", tokens, PAD)}, "caption")["text"].pad_id == PAD


def test_raw_items_are_samples_of_one_field():
    items = RawItems(["a b", "c"], "caption")
    assert len(items) == 2 and items[1] == {"caption": "c"}
    with pytest.raises(IndexError):
        items[2]


def test_training_and_encode_batches_share_one_collate(shapes):
    """A caption batch from a source (training, evaluation) and from raw strings (encode) is padded the same."""
    spec = {"text": Preprocessor("caption", tokens, PAD), "image": Preprocessor("image", eval_transform(16))}
    ev = shapes.eval_set()
    captions = ev.flat_captions[:10]
    from_source = next(iter(make_loader(caption_dataset(ev), select_branches(spec, "caption"), batch_size=10)))
    from_raw = next(iter(make_loader(RawItems(captions, "caption"), select_branches(spec, "caption"), batch_size=10)))
    assert torch.equal(from_source["text"], from_raw["text"]) and (from_raw["text"] == PAD).any()
    direct = collate([{"text": tokens(c)} for c in captions], {"text": PAD})
    assert torch.equal(direct["text"], from_raw["text"])
    images = [shapes.load_image(i) for i in range(4)]
    raw = next(iter(make_loader(RawItems(images, "image"), select_branches(spec, "image"), batch_size=4)))
    source = next(iter(make_loader(image_dataset(ev), select_branches(spec, "image"), batch_size=4)))
    assert torch.equal(raw["image"], source["image"]) and raw["image"].shape == (4, 3, 16, 16)
    assert collate_branches({"text": PAD})([{"text": tokens(c)} for c in captions])["text"].equal(direct["text"])


def test_epoch_sampler_is_seeded_by_seed_and_epoch_and_resumes_mid_epoch():
    sampler = EpochBatchSampler(50, 8, seed=3)
    first = list(sampler)
    assert len(first) == len(sampler) == 6 and all(len(b) == 8 for b in first)  # the last 2 samples are dropped
    assert len({i for b in first for i in b}) == 48
    assert list(EpochBatchSampler(50, 8, seed=3)) == first and list(EpochBatchSampler(50, 8, seed=4)) != first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    sampler.set_epoch(1, start=4)
    assert len(sampler) == 2 and list(sampler) == second[4:]  # consumed batches are skipped, the rest replayed


def test_epoch_sampler_gives_each_rank_its_slice_of_every_global_batch():
    whole = list(EpochBatchSampler(40, 8, seed=0))
    ranks = [list(EpochBatchSampler(40, 8, seed=0, rank=r, world=2)) for r in range(2)]
    assert all(len(b) == 4 for r in ranks for b in r)
    assert [a + b for a, b in zip(*ranks)] == whole


def test_loader_with_a_batch_sampler_never_draws_from_the_global_rng(shapes):
    sampler = EpochBatchSampler(len(shapes), 16, seed=1)
    loader = make_loader(shapes, image_text_preprocessors(), batch_sampler=sampler, seed=1,
                         extra_fields=("image_id",))
    sampler.set_epoch(0, start=1)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    iterator = iter(loader)
    assert torch.equal(torch.get_rng_state(), state)  # creating an iterator mid-epoch leaves the RNG alone
    ids = [b["image_id"].tolist() for b in iterator]
    assert ids == list(sampler) and len(ids) == 2
    with pytest.raises(ValueError, match="either batch_size or batch_sampler"):
        make_loader(shapes, image_text_preprocessors(), batch_size=16, batch_sampler=sampler)
    with pytest.raises(ValueError, match="either batch_size or batch_sampler"):
        make_loader(shapes, image_text_preprocessors())
