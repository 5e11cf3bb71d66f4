"""Data: image–caption and image-only sources, embedded datasets, transforms, loaders.

Sources are map-style datasets of raw samples (``{"image", "caption", "image_id"}`` or ``{"image", "label"}``);
``make_loader`` turns one into ``{branch: tensor}`` batches with each branch's own preprocessing.
"""

from mmvicreg.data.base import CaptionSource, ImageSource, LazyImages, RetrievalSet
from mmvicreg.data.build import FORMATS, build_source
from mmvicreg.data.captions import FileCaptionSource, coco_captions, csv_captions, karpathy_captions
from mmvicreg.data.digits import DigitsSource
from mmvicreg.data.hf import HFCaptionSource, HFImageSource, hf_captions, hf_images, load_hf_dataset
from mmvicreg.data.images import FolderImages
from mmvicreg.data.io import BadImageError, open_image
from mmvicreg.data.loader import BranchCollator, BranchDataset, collate_branches, make_loader, select_branches
from mmvicreg.data.shapes import ShapesSource, generate_shapes

__all__ = [
    "FORMATS",
    "BadImageError",
    "BranchCollator",
    "BranchDataset",
    "CaptionSource",
    "DigitsSource",
    "FileCaptionSource",
    "FolderImages",
    "HFCaptionSource",
    "HFImageSource",
    "ImageSource",
    "LazyImages",
    "RetrievalSet",
    "ShapesSource",
    "build_source",
    "coco_captions",
    "collate_branches",
    "csv_captions",
    "generate_shapes",
    "hf_captions",
    "hf_images",
    "karpathy_captions",
    "load_hf_dataset",
    "make_loader",
    "open_image",
    "select_branches",
]
