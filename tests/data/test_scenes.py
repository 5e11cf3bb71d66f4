"""The ``scenes`` benchmark: deterministic, content-disjoint splits, one-word-apart evaluation captions, captions
that state what the pixels show, and loading through the config and the data builder."""

from collections import defaultdict

import numpy as np
import pytest
import yaml

from mmvicreg.config import ConfigError, load_config
from mmvicreg.data import ScenesSource, build_source, generate_scenes
from mmvicreg.data.build import format_options
from mmvicreg.data.sources import scenes as scenes_module
from mmvicreg.data.sources.scenes import Chain, captions_for, neighbours, split_of
from mmvicreg.data.sources.shapes import COLOURS
from tests.helpers.configs import tiny_config


def _fresh(*args):
    scenes_module._generate.cache_clear()  # compare real generations, not the in-memory cache
    return generate_scenes(*args)


def _one_word_apart(captions: list[list[str]]) -> set[tuple[int, int]]:
    """Pairs of images (i < j) with a caption each that differ in exactly one word (same length, one position)."""
    masked: dict[str, set[int]] = defaultdict(set)
    for i, caps in enumerate(captions):
        for c in caps:
            words = c.split()
            for k in range(len(words)):
                masked[" ".join(words[:k] + ["*"] + words[k + 1:])].add(i)
    return {(i, j) for ids in masked.values() for i in ids for j in ids if i < j}


def test_same_seed_same_scenes_other_seed_other_scenes():
    a, b, c = _fresh("val", 200, 32, 3), _fresh("val", 200, 32, 3), _fresh("val", 200, 32, 4)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions and a.keys == b.keys
    assert not np.array_equal(a.images, c.images) and a.captions != c.captions


def test_splits_are_disjoint_in_content_whatever_the_seed():
    train, val, test = _fresh("train", 4000, 16, 0), _fresh("val", 500, 16, 0), _fresh("test", 500, 16, 7)
    assert len(set(val.keys)) == 500 and len(set(test.keys)) == 500  # evaluation scenes are all distinct
    assert not set(train.keys) & set(val.keys) and not set(train.keys) & set(test.keys)
    assert not set(val.keys) & set(test.keys)
    for data in (train, val, test):
        assert all(len(caps) == 5 and len(set(caps)) == 5 for caps in data.captions)
    evaluation = {c for d in (val, test) for caps in d.captions for c in caps}
    assert not evaluation & {c for caps in train.captions for c in caps}


@pytest.mark.parametrize("split", ["val", "test"])
def test_one_word_apart_captions_are_common_in_evaluation_splits(split):
    data = _fresh(split, 1000, 16, 0)
    pairs = _one_word_apart(data.captions)
    assert len({i for p in pairs for i in p}) > 500  # most evaluation images have a one-word-apart rival
    assert all(data.keys[i] != data.keys[j] for i, j in pairs)  # and the rival is another scene


def test_a_neighbour_differs_by_one_word_in_the_same_phrasing():
    red = ("small", "solid", "red", "circle")
    chain = Chain((red, ("large", "hollow", "blue", "square"), ("small", "solid", "green", "cross")), ((0, 1), (1, 0)))
    assert "a small solid red circle left of a large hollow blue square above a small solid green cross" in \
        captions_for(chain, np.random.default_rng(0), 8)
    found = neighbours(chain, np.random.default_rng(0))
    assert found and all(split_of(n) == split_of(chain) and n.key != chain.key for n in found)
    for n in found:
        mine, theirs = captions_for(chain, np.random.default_rng(1), 8), captions_for(n, np.random.default_rng(1), 8)
        assert [sum(a != b for a, b in zip(x.split(), y.split())) for x, y in zip(mine, theirs)] == [1] * 8
    flipped = Chain(chain.objects, ((0, -1), (1, 0)))  # the first relation reversed: another scene
    assert flipped.fits() and flipped.key != chain.key
    assert not Chain(chain.objects, ((0, 1), (0, -1))).fits()  # back onto the first cell: not a scene


def test_two_readings_of_one_picture_are_one_content():
    a, b = ("small", "solid", "red", "circle"), ("large", "hollow", "blue", "square")
    assert Chain((a, b), ((0, 1),)).key == Chain((b, a), ((0, -1),)).key
    assert Chain((a, b), ((0, 1),)).key != Chain((b, a), ((0, 1),)).key


def _centroid(image, rgb):
    ys, xs = np.nonzero(np.abs(image.astype(int) - np.array(rgb)).sum(axis=2) < 60)
    return xs.mean(), ys.mean(), len(xs)


def test_captions_state_what_the_pixels_show():
    scenes_module._generate.cache_clear()
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        chain = scenes_module.sample_chain(rng)
        (a, b), step = chain.objects[:2], chain.steps[0]
        if a[2] == b[2] or any(o[2] in (a[2], b[2]) for o in chain.objects[2:]):
            continue  # colours must identify the first two objects
        image = scenes_module.render(chain, 64, rng)
        (xa, ya, na), (xb, yb, nb) = _centroid(image, COLOURS[a[2]]), _centroid(image, COLOURS[b[2]])
        assert na > 0 and nb > 0
        if step[0] == 0:  # same row; "left of" when the next object is one column to the right
            assert abs(ya - yb) < 3 and (xb - xa) * step[1] > 12
        else:
            assert abs(xa - xb) < 3 and (yb - ya) * step[0] > 12
        checked += 1
    assert checked > 50


def test_loads_from_yaml_through_the_config_and_the_builder(tmp_path):
    config = tiny_config(tmp_path / "run")
    config["data"] = {"train": {"format": "scenes", "split": "train", "num_images": 64, "size": 16},
                      "eval": {"format": "scenes", "split": "val", "num_images": 20, "size": 16,
                               "cache_dir": str(tmp_path)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    cfg = load_config(tmp_path / "c.yaml", ["data.train.seed=2"], format_keys=format_options)
    train, val = build_source(cfg.data.train), build_source(cfg.data.eval, "test")
    assert isinstance(train, ScenesSource) and len(train) == 64 and train.name == "scenes:train"
    assert len(val) == 20 and val.name == "scenes:val" and val[0]["image"].size == (16, 16)
    assert list(tmp_path.glob("scenes-v1-val-20-16px-seed0.npz"))
    assert np.array_equal(ScenesSource("val", num_images=20, size=16, cache_dir=tmp_path).images, val.images)
    assert ScenesSource("val", num_images=4, size=16, pairs="all").num_pairs == 20


def test_a_bad_option_gives_one_clear_line(tmp_path):
    config = tiny_config(tmp_path / "run")
    config["data"] = {"train": {"format": "scenes", "num_imgs": 5}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "c.yaml", [], format_keys=format_options)
    assert str(e.value) == ("unknown config key 'data.train.num_imgs' for format 'scenes' "
                            "(did you mean 'data.train.num_images'?)")
    with pytest.raises(ValueError) as e:
        build_source({"format": "scenes", "split": "dev"})
    assert str(e.value) == "unknown scenes split 'dev'; known: train, val, test"
    with pytest.raises(ValueError, match=r"^format 'scenes' does not take option\(s\) \['root'\]"):
        build_source({"format": "scenes", "root": "x"})
