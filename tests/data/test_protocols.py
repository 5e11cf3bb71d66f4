"""What the data package asks of a source is written as runtime-checkable Protocols (issue 25), not probed with
getattr: each class of the package satisfies the ones it is used through, and nothing else does."""

import torch

from mmvicreg.data import LazyImages, RawItems, ShapesSource
from mmvicreg.data.protocols import (
    CaptionedSource,
    DataReporting,
    DeclaresEncoded,
    LoadSkips,
    ReadsEncoded,
    SamplesEncoded,
    StreamedSource,
)
from mmvicreg.data.sources.hf_stream import HFStreamSource
from mmvicreg.data.preprocess import ItemPreprocessor
from mmvicreg.data.sources.stream import ShardSource
from mmvicreg.data.transforms import build_transform


def test_map_style_sources_and_their_views_satisfy_what_the_loader_asks():
    source = ShapesSource(num_images=4, size=16)
    assert all(isinstance(source, p) for p in (SamplesEncoded, LoadSkips, DataReporting, CaptionedSource))
    assert not isinstance(source, StreamedSource)
    assert isinstance(LazyImages(source), ReadsEncoded) and not isinstance([1, 2], ReadsEncoded)
    raw = RawItems(["a"], "caption")
    assert isinstance(raw, SamplesEncoded) and not isinstance(raw, LoadSkips)


def test_the_streamed_sources_are_streamed_sources():
    bare = object.__new__(ShardSource)  # the class's members, without reading any shard
    bare.sizes, bare.unsized, bare.shuffle_buffer, bare.resample, bare.counts, bare.name = [1], "", 0, False, None, ""
    bare.urls = ["a.tar"]
    assert isinstance(bare, StreamedSource) and bare.num_shards == 1
    hf = object.__new__(HFStreamSource)
    hf.sizes, hf.shuffle_buffer, hf.counts, hf.name, hf.files = [1, 2], 0, None, "", ["a", "b"]
    assert isinstance(hf, StreamedSource) and hf.num_shards == 2 and not hf.resample
    assert not isinstance(ShapesSource(num_images=2, size=16), StreamedSource)


def test_transforms_say_whether_they_take_encoded_images():
    item = ItemPreprocessor("image", None, build_transform("eval", 16))
    assert isinstance(item, DeclaresEncoded) and item.accepts_encoded
    assert not isinstance(lambda x: torch.zeros(3), DeclaresEncoded)
