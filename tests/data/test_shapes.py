"""The procedural ``shapes`` scenes: deterministic, split-disjoint, word order matters, captions match pixels, fast."""


import numpy as np
import pytest

from mmvicreg.data import ShapesSource, generate_shapes
from mmvicreg.data.sources import shapes as shapes_module
from mmvicreg.data.sources.shapes import COLOURS, Scene, captions_for, split_of


def _fresh(*args, **kw):
    shapes_module._generate.cache_clear()  # measure and compare real generations, not the in-memory cache
    return generate_shapes(*args, **kw)


@pytest.fixture(scope="module")
def train_and_test():
    train = _fresh("train", 10_000, 64, 0)  # its generation time is in benchmarks/data_throughput.py
    test = generate_shapes("test", seed=0)
    return train, test, None


def test_ten_thousand_default_images_as_uint8(train_and_test):
    train, _, _ = train_and_test
    assert train.images.shape == (10_000, 64, 64, 3) and train.images.dtype == np.uint8


def test_no_test_scene_appears_in_train(train_and_test):
    train, test, _ = train_and_test
    assert len(test.keys) == 1000 and len(set(test.keys)) == 1000  # evaluation scenes are all distinct
    assert not set(test.keys) & set(train.keys)
    assert not {c for caps in test.captions for c in caps} & {c for caps in train.captions for c in caps}
    assert not {im.tobytes() for im in test.images} & {im.tobytes() for im in train.images}
    val = generate_shapes("val", 300, 64, 5)  # another seed: still disjoint, the partition is fixed
    assert not set(val.keys) & (set(train.keys) | set(test.keys))


def test_five_distinct_captions_per_image(train_and_test):
    train, test, _ = train_and_test
    for data in (train, test):
        assert all(len(caps) == 5 and len(set(caps)) == 5 for caps in data.captions)


def test_same_seed_same_images_and_captions():
    a = _fresh("val", 200, 32, 3)
    b = _fresh("val", 200, 32, 3)
    c = _fresh("val", 200, 32, 4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images) and a.captions != c.captions


def test_word_order_distinguishes_scenes():
    red, blue = ("small", "red", "circle"), ("large", "blue", "square")
    ab, ba = Scene("row", (red, blue)), Scene("row", (blue, red))
    rng = np.random.default_rng(0)
    caps_ab, caps_ba = captions_for(ab, rng, 8), captions_for(ba, np.random.default_rng(0), 8)
    assert ab.key != ba.key
    assert "a small red circle left of a large blue square" in caps_ab
    assert "a large blue square left of a small red circle" in caps_ba
    assert not set(caps_ab) & set(caps_ba)
    assert sorted(caps_ab[0].split()) == sorted(caps_ba[0].split())  # same bag of words, different scene
    assert split_of(ab) in ("train", "val", "test")


def _centroid(image, rgb):
    dist = np.abs(image.astype(int) - np.array(rgb)).sum(axis=2)
    ys, xs = np.nonzero(dist < 60)
    return xs.mean(), ys.mean(), len(xs)


def test_captions_state_what_the_pixels_show():
    data = _fresh("test", 300, 64, 0)
    checked = 0
    for image, key, caps in zip(data.images, data.keys, data.captions):
        layout, objs = key.split(":")
        objs = [o.split() for o in objs.split("|")]
        assert all(f"{s} {c} {sh}" in caps[0] for s, c, sh in objs) or layout != "one"
        colours = [c for _, c, _ in objs]
        if len(objs) != 2 or len(set(colours)) != 2:
            continue
        (xa, ya, na), (xb, yb, nb) = (_centroid(image, COLOURS[c]) for c in colours)
        assert na > 0 and nb > 0
        if layout == "row":
            assert xa + 8 < xb and abs(ya - yb) < 8  # first object left of the second, same height
        else:
            assert ya + 8 < yb and abs(xa - xb) < 8
        checked += 1
    assert checked > 50


def test_source_samples_and_sizes(tmp_path):
    src = ShapesSource("test", num_images=40, size=32, seed=1, cache_dir=tmp_path)
    sample = src[3]
    assert set(sample) == {"image", "caption", "image_id"} and sample["image_id"] == 3
    assert sample["image"].size == (32, 32) and sample["image"].mode == "RGB"
    assert sample["caption"] in src.captions[3]
    assert list(tmp_path.glob("shapes-*.npz"))
    again = ShapesSource("test", num_images=40, size=32, seed=1, cache_dir=tmp_path)  # read back from disk
    assert np.array_equal(again.images, src.images) and again.captions == src.captions
    assert ShapesSource("val", num_images=10, pairs="all").num_pairs == 50
    with pytest.raises(ValueError, match="unknown shapes split 'dev'"):
        ShapesSource("dev")
