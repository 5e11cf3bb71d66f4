"""Every allowed-value list of the library, defined once, and the one way to say a value is not one of them.

Config validation, the builders (objective, data, model, evaluation) and the command line import these
tuples; none of them writes its own copy. :func:`nearest` is the only place that finds a nearest name
(:func:`did_you_mean` words it).
"""

from __future__ import annotations

import difflib
from typing import Iterable, Sequence, TypeVar

T = TypeVar("T")

# objective
# The objective registry: ``loss.name`` -> "module:Class". Adding an objective is its own module and one line
# here; the config validates names against the keys without importing the objectives, and
# :func:`mmvicreg.objective.build_objective` imports the class it names (tests/objective/test_build.py checks
# that every entry resolves to an ``Objective`` whose ``name`` is its key).
OBJECTIVE_CLASSES = {
    "vicreg": "mmvicreg.objective.modules:VICRegObjective",
    "infonce": "mmvicreg.objective.modules:InfoNCEObjective",
    "triplet": "mmvicreg.objective.modules:TripletObjective",
    "barlow": "mmvicreg.objective.modules:BarlowTwinsObjective",
    "supervised": "mmvicreg.objective.supervised:SupervisedObjective",
}
OBJECTIVES = tuple(OBJECTIVE_CLASSES)
ABLATIONS = ("full", "invariance_variance", "invariance")  # vicreg only; None means "full"
COVARIANCE_ALGORITHMS = ("auto", "dense", "gram")
VARIANCE_MODES = ("std", "var")
VCREG_SPATIAL = ("locations", "pool", "flatten")
VCREG_FORMS = ("vicreg", "paper")  # loss.vcreg_form: VICReg's normalisation, or the VCReg paper's (objective/vcreg_paper.py)

# data
CAPTION_FORMATS = ("coco", "karpathy", "csv", "hf", "shapes", "scenes")
IMAGE_FORMATS = ("folder", "digits", "hf", "shape_objects")
# what the eval commands read: the formats above and local webdataset shards (indexed by their tar headers)
EVAL_CAPTION_FORMATS = (*CAPTION_FORMATS, "webdataset")  # mmvicreg eval retrieval
EVAL_IMAGE_FORMATS = (*IMAGE_FORMATS, "webdataset")  # mmvicreg eval knn, linear-probe, linear
DATA_FORMATS = ("coco", "karpathy", "csv", "hf", "folder", "digits", "shapes", "scenes", "shape_objects", "webdataset")
SHARD_LAYOUTS = ("pair", "image")  # mmvicreg shards --per: a sample per image–caption pair, or per image
BAD_DATA_POLICIES = ("error", "skip")  # on_bad_image, on_bad_caption
PAIRS_MODES = ("one", "all")
KARPATHY_SPLITS = ("train", "restval", "val", "test")
VICREG_VIEWS = {"vicreg_view1": 1, "vicreg_view2": 2}  # transform name -> the published view it is (1 or 2)
TRANSFORMS = (*VICREG_VIEWS, "light", "eval")
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")  # torchvision's
AUGMENT_PLACES = ("workers", "device")  # transform.augment_on: where a VICReg view's colour half runs
DECODE_PLACES = ("workers", "device")  # data.decode_on: where images decode (device: torchvision's decode_jpeg)
# Data keys renamed to the one vocabulary (caption file `captions`, image folder `images`): old -> new.
RENAMED_DATA_KEYS = {"image_root": "images", "annotations": "captions", "path": "captions", "root": "images"}

# model
EMBEDDING_LAYERS = ("embedding", "representation")

# train
OPTIMIZERS = ("adamw", "lars", "sgd")
MIXED_PRECISION = ("no", "bf16", "fp16")
NONFINITE_POLICIES = ("stop", "skip")

# evaluation
RETRIEVAL_PROTOCOLS = ("5k", "1k")
INDEX_KINDS = ("flat", "hnsw", "ivf")
RETRIEVAL_INDEXES = ("exact", *INDEX_KINDS)
EVAL_PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EXPANDER_NORMS = ("batch", "layer", "none")  # the expander's hidden-layer normalisation (published: batch)
LINEAR_EVAL_MODES = ("linear", "finetune")  # frozen backbone + augmented linear head | fine-tune on a labelled subset


def nearest(name: object, candidates: Iterable[str], n: int = 1, cutoff: float = 0.5) -> list[str]:
    """The (at most ``n``) candidates closest to ``name``, compared in any case; empty when none is close."""
    folded = {c.lower(): c for c in candidates}
    return [folded[c] for c in difflib.get_close_matches(str(name).lower(), list(folded), n=n, cutoff=cutoff)]


def did_you_mean(name: object, candidates: Iterable[str], n: int = 1, cutoff: float = 0.5, prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the :func:`nearest` candidates of ``name``, or ``""`` when none is close.

    ``prefix`` (a dotted section, ``"train."``) is put before the suggestion, not compared: a shared section
    would make every key of it look close."""
    close = nearest(name, candidates, n, cutoff)
    return f" (did you mean {', '.join(repr(prefix + c) for c in close)}?)" if close else ""


def check_choice(value: T, allowed: Sequence[object], what: str) -> T:
    """``value`` when it is one of ``allowed`` (a name in any case: the allowed spelling is returned); else a
    ValueError naming ``what``, the nearest and every choice.

    ``what`` names the setting as the user wrote it (``"loss.name"``, ``"covariance"``).
    """
    if value in allowed:
        return value
    if isinstance(value, str):  # names match case-insensitively (VICReg, BF16): the canonical spelling is kept
        folded = {str(a).lower(): a for a in allowed}
        if value.lower() in folded:
            return folded[value.lower()]  # type: ignore[return-value]
    hint = did_you_mean(value, [str(a) for a in allowed]) if isinstance(value, str) else ""
    raise ValueError(f"{what} is {value!r}{hint}; choose one of {', '.join(str(a) for a in allowed)}")
