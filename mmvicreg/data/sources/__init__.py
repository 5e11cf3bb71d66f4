"""Sources: map-style datasets of raw samples, each made of records, an image store and a bad-data policy.

===============  =================================================================================
base.py          ``CaptionSource`` / ``ImageSource`` (records + store + policy), ``RetrievalSet``, ``LazyImages``
stores.py        where images live: ``FileStore``, ``HFColumnStore``, ``ArrayStore``
policy.py        ``BadDataPolicy``: on_bad_image / on_bad_caption / verify, and what was left out
io.py            opening images (``convert_rgb``: the one RGB conversion; ``open_image_for_eval``: reduced
                 scale) and caption text, with one clear error per problem
encoded.py       ``EncodedImage``: an image's bytes and header size, decoded at the reduction a crop allows
shard_list.py    listing webdataset shards, and the ``pipe:`` rule (``allow_pipe``)
shards.py        webdataset tars: counting, reading raw samples, decoding them
shard_writer.py  writing any source as webdataset shards (``write_shards``)
shard_index.py   a header index over local shards, for evaluation (random access by image)
stream.py        ``format: webdataset``: ``ShardSource``, shards streamed (never indexed)
hf_stream.py     ``format: hf`` with ``streaming: true``: a Hugging Face dataset's parquet files, streamed
captions.py      COCO captions JSON, Karpathy split JSON, CSV/TSV (``captions`` file + ``images`` folder)
hf.py            Hugging Face datasets (``path``; relative image paths under ``images``)
folder.py        an image folder (``images``; class subfolders become labels)
digits.py        scikit-learn's bundled digits (embedded)
shapes.py        procedural captioned scenes (embedded)
scenes.py        harder procedural scenes: attributes, relations, one-word-apart evaluation scenes (embedded)
shape_objects.py the shapes objects as labelled images, named for zero-shot (embedded)
===============  =================================================================================
"""

from mmvicreg.data.sources.base import (
    CaptionRecords,
    CaptionSource,
    ImageSource,
    LabelRecords,
    LazyImages,
    RetrievalSet,
)
from mmvicreg.data.sources.captions import FileCaptionSource, coco_captions, csv_captions, karpathy_captions
from mmvicreg.data.sources.digits import DigitsSource
from mmvicreg.data.sources.folder import FolderImages
from mmvicreg.data.sources.hf import HFCaptionSource, HFImageSource, hf_captions, hf_images, load_hf_dataset
from mmvicreg.data.sources.io import BadImageError, ImageTooLargeError, convert_rgb, open_image, open_image_for_eval
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.scenes import ScenesSource, generate_scenes
from mmvicreg.data.sources.shape_objects import ShapeObjectsSource
from mmvicreg.data.sources.shapes import ShapesSource, generate_shapes
from mmvicreg.data.sources.stores import ArrayStore, FileStore, HFColumnStore, ImageStore

__all__ = [
    "ArrayStore",
    "BadDataPolicy",
    "BadImageError",
    "CaptionRecords",
    "CaptionSource",
    "DigitsSource",
    "FileCaptionSource",
    "FileStore",
    "FolderImages",
    "HFCaptionSource",
    "HFColumnStore",
    "HFImageSource",
    "ImageSource",
    "ImageStore",
    "ImageTooLargeError",
    "LabelRecords",
    "LazyImages",
    "RetrievalSet",
    "ScenesSource",
    "ShapeObjectsSource",
    "ShapesSource",
    "coco_captions",
    "convert_rgb",
    "csv_captions",
    "generate_scenes",
    "generate_shapes",
    "hf_captions",
    "hf_images",
    "karpathy_captions",
    "load_hf_dataset",
    "open_image",
    "open_image_for_eval",
]
