"""Evaluation reads shards through a header index: the same images and captions as the source they were written
from, one image's bytes at a time."""

import numpy as np
import pytest

from mmvicreg.data import build_source
from mmvicreg.data.protocols import StreamedSource
from mmvicreg.data.sources.shard_writer import write_shards


@pytest.mark.parametrize("per", ["pair", "image"])
def test_indexed_shards_equal_the_source_they_were_written_from(tmp_path, per):
    source = build_source({"format": "shapes", "split": "test", "num_images": 30, "size": 32})
    write_shards(source, tmp_path / "s", samples_per_shard=17, per=per)
    indexed = build_source({"format": "webdataset", "shards": str(tmp_path / "s")}, "test")
    assert indexed.captions == source.captions
    for i in range(len(source.captions)):
        assert np.array_equal(np.asarray(indexed.load_image(i)), np.asarray(source.load_image(i)))
    ours, theirs = indexed.eval_set(5), source.eval_set(5)
    assert ours.flat_captions == theirs.flat_captions and ours.caption_image_index == theirs.caption_image_index


def test_labelled_shards_index_as_a_labelled_image_source(tmp_path):
    digits = build_source({"format": "digits", "split": "test"})
    write_shards(digits, tmp_path / "d", samples_per_shard=100)
    indexed = build_source({"format": "webdataset", "shards": str(tmp_path / "d")}, "test")
    assert indexed.labels == digits.labels


def test_the_train_split_streams_and_pipe_shards_cannot_be_indexed(tmp_path):
    source = build_source({"format": "shapes", "split": "train", "num_images": 10, "size": 32})
    write_shards(source, tmp_path / "s", samples_per_shard=50)
    assert isinstance(build_source({"format": "webdataset", "shards": str(tmp_path / "s")}, "train"), StreamedSource)
    piped = {"format": "webdataset", "shards": f"pipe:cat {tmp_path}/s/00000.tar"}
    with pytest.raises(ValueError, match=r"would run a shell command; if you mean it, set data\.eval\.allow_pipe"):
        build_source(piped, "test")
    with pytest.raises(ValueError, match="evaluation reads shards by index and needs local files; pipe:cat"):
        build_source({**piped, "allow_pipe": True}, "test")
