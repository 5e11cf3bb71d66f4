"""Data: image–caption and image-only sources, embedded datasets, transforms, batching, the input path.

==================  ==============================================================================
sources/            map-style datasets of raw samples (``{"image", "caption", "image_id"}`` or
                    ``{"image", "label"}``), each made of records, an image store and a bad-data policy;
                    streamed shards (``stream.py``, ``hf_stream.py``)
protocols.py        what the package asks of a source (``StreamedSource``, ``LoadSkips``, ...)
recipe.py           the VICReg view recipe, written once
transforms.py       image transforms (uint8 out): the VICReg view pair, a light recipe, evaluation; decode_views
opencv_kernels.py   the colour and blur ops of the views, in OpenCV (one thread where the loader runs them)
device_augment.py   ``DeviceViewAugment``: a VICReg view's colour half on a batch (``augment_on: device``)
device_decode.py    ``data.decode_on: device``: workers draw the crop and hand on a JPEG's bytes; the device stage
                    decodes the batch (``torchvision.io.decode_jpeg``), crops, resizes and flips
preprocess.py       a model's declared preprocessing built: ``branch_preprocessors`` (per item, in the
                    workers) and ``DeviceInput`` (the batch on the device, as the encoders read it)
batching.py         the one collate, the epoch sampler, ``make_loader`` (training, evaluation and encode)
streaming.py        the epoch plan of streamed shards, ``StreamDataset`` / ``StreamLoader``
encoding.py         ``encode(model, branch, items)``: raw items -> embeddings, the one encode path
build.py            ``build_source(section)``: a config's ``data.*`` section -> a source
report.py           ``merge_reports``: one source's data report over every process (data-parallel ranks)
==================  ==============================================================================

``make_loader`` turns a source into ``{branch: tensor}`` batches with each branch's own preprocessing, built
here from what the model declares (:mod:`mmvicreg.preprocessing`). The data package imports nothing above it
(no model, training, evaluation or command-line code); :func:`encode` takes the model duck-typed.
"""

from mmvicreg.data.batching import (
    BranchCollator,
    BranchDataset,
    EpochBatchSampler,
    Preprocessor,
    RawItems,
    collate,
    collate_branches,
    make_loader,
)
from mmvicreg.data.build import FORMATS, build_source, format_options
from mmvicreg.data.encoding import encode, encode_batches
from mmvicreg.data.preprocess import DeviceInput, branch_preprocessors
from mmvicreg.data.report import merge_reports
from mmvicreg.data.transforms import decode_views
from mmvicreg.data.sources import (
    ArrayStore,
    BadDataPolicy,
    BadImageError,
    CaptionRecords,
    CaptionSource,
    DigitsSource,
    FileCaptionSource,
    FileStore,
    FolderImages,
    HFCaptionSource,
    HFColumnStore,
    HFImageSource,
    ImageSource,
    ImageStore,
    ImageTooLargeError,
    LabelRecords,
    LazyImages,
    RetrievalSet,
    ScenesSource,
    ShapesSource,
    coco_captions,
    convert_rgb,
    csv_captions,
    generate_scenes,
    generate_shapes,
    hf_captions,
    hf_images,
    karpathy_captions,
    load_hf_dataset,
    open_image,
    open_image_for_eval,
)

__all__ = [
    "FORMATS",
    "ArrayStore",
    "BadDataPolicy",
    "BadImageError",
    "BranchCollator",
    "BranchDataset",
    "DeviceInput",
    "CaptionRecords",
    "CaptionSource",
    "DigitsSource",
    "EpochBatchSampler",
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
    "Preprocessor",
    "RawItems",
    "RetrievalSet",
    "ScenesSource",
    "ShapesSource",
    "branch_preprocessors",
    "build_source",
    "coco_captions",
    "collate",
    "collate_branches",
    "convert_rgb",
    "csv_captions",
    "decode_views",
    "encode",
    "encode_batches",
    "format_options",
    "generate_scenes",
    "generate_shapes",
    "hf_captions",
    "hf_images",
    "karpathy_captions",
    "load_hf_dataset",
    "make_loader",
    "merge_reports",
    "open_image",
    "open_image_for_eval",
]
