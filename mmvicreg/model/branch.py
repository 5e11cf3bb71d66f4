"""A branch: encoder -> representation h -> expander -> embedding z, with the raw field it reads and its
preprocessing (an image transform, or the tokenizer its text encoder owns).

:func:`build_branches` turns branch sections (``BranchConfig`` or plain mappings) into branches; a branch with
``shares: other`` reuses ``other``'s encoder (siamese, same weights) and, unless it names its own, its expander.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from mmvicreg.choices import AUGMENT_PLACES, TRANSFORMS, check_choice, did_you_mean
from mmvicreg.config import BranchConfig
from mmvicreg.data.transforms import (
    DEFAULT_CROP_PCT,
    DEFAULT_INTERPOLATION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    accepts_encoded,
    build_transform,
    interpolation_mode,
    normalize_images,
    vicreg_crop,
)
from mmvicreg.data.device_augment import DeviceViewAugment
from mmvicreg.data.sources.encoded import EncodedImage
from mmvicreg.data.sources.io import convert_rgb
from mmvicreg.encoders import Encoder, build_encoder, encoder_class
from mmvicreg.model.expander import DEFAULT_EXPANDER, Expander

BranchSection = BranchConfig | Mapping[str, Any]
TRANSFORM_DEFAULTS: dict[str, Any] = {
    "train": "vicreg_view1",
    "eval": "eval",
    "size": 224,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "interpolation": DEFAULT_INTERPOLATION,
    "crop_pct": DEFAULT_CROP_PCT,
    "augment_on": "workers",
}
TRANSFORM_KEYS = tuple(TRANSFORM_DEFAULTS)


def _checked(key: str, value: Any) -> Any:
    if key in ("train", "eval"):
        check_choice(value, TRANSFORMS, f"transform.{key}")
    elif key == "augment_on":
        check_choice(value, AUGMENT_PLACES, "transform.augment_on")
    elif key in ("mean", "std"):
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
            raise ValueError(f"transform.{key} must be 3 numbers (one per RGB channel), got {value!r}")
        return [float(v) for v in value]
    elif key == "size" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"transform.size must be a positive integer (pixels), got {value!r}")
    elif key == "interpolation":
        interpolation_mode(value)
    elif key == "crop_pct" and (not isinstance(value, (int, float)) or not 0 < value <= 1):
        raise ValueError(f"transform.crop_pct must be a number in (0, 1], got {value!r}")
    return value


def transform_spec(spec: Mapping[str, Any] | None, weights: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An image branch's ``transform`` section, every key resolved; unknown keys and bad values raise.

    Each key comes from the config when it gives one (not None), else from ``weights`` (what the encoder's
    pretrained weights expect: :meth:`~mmvicreg.encoders.Encoder.preprocessing`), else from
    ``TRANSFORM_DEFAULTS`` (ImageNet statistics, bicubic, 224 px, eval crop 0.875).
    """
    given = dict(spec or {})
    for key in given:
        if key not in TRANSFORM_KEYS:
            raise ValueError(
                f"unknown transform key {key!r}{did_you_mean(key, TRANSFORM_KEYS)}; known: {', '.join(TRANSFORM_KEYS)}"
            )
    resolved = {}
    for key, default in TRANSFORM_DEFAULTS.items():
        for layer in (given, weights or {}):
            if layer.get(key) is not None:
                resolved[key] = _checked(key, layer[key])
                break
        else:
            resolved[key] = default
    if resolved["augment_on"] == "device" and resolved["train"] not in ("vicreg_view1", "vicreg_view2"):
        raise ValueError(f"transform.augment_on: device moves the colour half of a VICReg view to the device, but "
                         f"transform.train is {resolved['train']!r}; use vicreg_view1/vicreg_view2 or "
                         f"augment_on: workers")
    return resolved


class ItemPreprocessor:
    """A branch's preprocessing of one raw item: ``tokenizer.encode`` for text, ``transform`` for images."""

    def __init__(self, field: str, tokenizer: Any = None, transform: Callable | None = None) -> None:
        self.field, self.tokenizer, self.transform = field, tokenizer, transform

    @property
    def accepts_encoded(self) -> bool:
        """Whether it takes images read but not decoded (``EncodedImage``): the loader then lets it decode."""
        return self.tokenizer is None and accepts_encoded(self.transform)

    def __call__(self, item: Any) -> torch.Tensor:
        if self.tokenizer is not None:
            return self.tokenizer.encode(item)
        if isinstance(item, Image.Image):
            item = convert_rgb(item)  # 16-bit and transparent images too
        elif not isinstance(item, (torch.Tensor, np.ndarray, EncodedImage)):
            raise TypeError(
                f"this branch reads images (field {self.field!r}), got {type(item).__name__}; "
                f"is a caption routed to an image branch?"
            )
        return self.transform(item)


class Branch(nn.Module):
    """encoder -> representation h -> expander -> embedding z, with the field it reads and its preprocessing.

    ``field`` defaults to ``"image"`` for image encoders and ``"caption"`` for text encoders; ``transform``
    (image branches only) is resolved by :func:`transform_spec`: the config's keys win, then what the
    encoder's weights expect, then the library defaults; :meth:`config` saves every resolved key. ``shares`` names the branch whose encoder this
    one reuses; ``own_expander`` is False when it reuses that branch's expander too.
    """

    def __init__(
        self,
        encoder: Encoder,
        expander: Expander,
        field: str | None = None,
        transform: Mapping[str, Any] | None = None,
        shares: str | None = None,
        own_expander: bool = True,
    ):
        super().__init__()
        self.encoder = encoder
        self.expander = expander
        self.field = field or ("image" if encoder.modality == "image" else "caption")
        image = encoder.modality == "image"
        self.transform_spec = transform_spec(transform, encoder.preprocessing()) if image else None
        t = self.transform_spec
        # augment_on: device: workers crop and flip; the colour half runs here, on the batch, in training mode
        self.device_augment = (DeviceViewAugment(1 if t["train"] == "vicreg_view1" else 2, t["size"])
                               if t is not None and t["augment_on"] == "device" else None)
        self.shares = shares
        self.own_expander = own_expander
        self._preprocessors: dict[bool, ItemPreprocessor] = {}

    @property
    def modality(self) -> str:
        return self.encoder.modality

    @property
    def tokenizer(self) -> Any:
        """The tokenizer the text encoder owns (``encode``, ``pad_id``, ``save``); None for image branches."""
        return self.encoder.tokenizer

    @property
    def pad_id(self) -> int | None:
        """The id that right-pads this branch's token sequences; None when its inputs are stacked (images)."""
        return self.tokenizer.pad_id if self.tokenizer is not None else None

    @property
    def embedding_dim(self) -> int:
        return self.expander.output_dim

    def forward(self, x: torch.Tensor, return_representation: bool = False):
        """``z`` (and ``h``) of a batch. Images arrive as the loader makes them, uint8 (B, 3, H, W), and are
        normalised here (:meth:`normalize`), on their device; float images are taken as already normalised."""
        h = self.encoder(self.normalize(x))
        z = self.expander(h)
        return (z, h) if return_representation else z

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (what :meth:`preprocess` gives) as the encoder reads them: ``(x / 255 - mean) / std``
        with this branch's ``transform`` mean and std, on ``x``'s device; anything else is returned as it is.
        With ``augment_on: device``, in training mode, the view's colour augmentation runs first."""
        if x.dtype != torch.uint8 or self.transform_spec is None:
            return x
        if self.training and self.device_augment is not None:
            x = self.device_augment(x)  # the colour half of the view, per sample: float in [0, 1]
        return normalize_images(x, self.transform_spec["mean"], self.transform_spec["std"])

    def preprocess(self, item: Any, train: bool = False) -> torch.Tensor:
        """One raw item (PIL image or str) -> the tensor this branch's encoder reads (before batching)."""
        return self.preprocessor(train)(item)

    def preprocessor(self, train: bool = False) -> Callable[[Any], torch.Tensor]:
        """``item -> tensor`` for a data loader: picklable, and it carries the transform or the tokenizer only
        (never the encoder's weights, which would otherwise be copied into every DataLoader worker)."""
        if train not in self._preprocessors:
            transform = None
            if self.modality == "image":
                t = self.transform_spec
                if train and self.device_augment is not None:
                    transform = v2.Compose(vicreg_crop(t["size"], t["interpolation"]))
                else:
                    transform = build_transform(t["train" if train else "eval"], t["size"], t["interpolation"],
                                                t["crop_pct"])
            self._preprocessors[train] = ItemPreprocessor(self.field, self.tokenizer, transform)
        return self._preprocessors[train]

    def config(self) -> dict[str, Any]:
        """The JSON-able section that rebuilds this branch (the model's saved ``config.json``)."""
        return {
            "encoder": None if self.shares else self.encoder.spec(),
            "expander": self.expander.spec if self.own_expander else None,
            "expander_norm": self.expander.norm if self.own_expander else None,
            "field": self.field,
            "shares": self.shares,
            **({"transform": self.transform_spec} if self.transform_spec else {}),
        }


def _build_one(
    name: str,
    section: dict[str, Any],
    built: Mapping[str, Branch],
    captions: list[str] | None,
    tokenizers: Mapping[str, Any],
) -> Branch:
    shares, norm = section.get("shares"), section.get("expander_norm") or "batch"
    if shares is not None:
        source = built[shares]
        encoder = source.encoder
        own_spec = section.get("expander") is not None or section.get("expander_norm") is not None
        expander = (
            Expander(encoder.output_dim, section.get("expander", source.expander.spec), norm)
            if own_spec else source.expander
        )
    else:
        if section.get("encoder") is None:
            raise ValueError(f"branch {name!r} needs an `encoder` (e.g. resnet50, gru) or `shares: <branch>`")
        encoder = build_encoder(section["encoder"], captions=captions, tokenizer=tokenizers.get(name))
        expander = Expander(encoder.output_dim, section.get("expander", DEFAULT_EXPANDER), norm)
    own = shares is None or expander is not built[shares].expander
    if shares is None:  # a sharing branch trains its owner's encoder, which the owner's settings already set
        if section.get("gradient_checkpointing"):
            encoder.set_gradient_checkpointing(True)
        if section.get("freeze"):
            encoder.freeze(section.get("unfreeze_last") or 0)
    return Branch(encoder, expander, section.get("field"), section.get("transform"), shares, own_expander=own)


def needs_vocabulary(configs: Mapping[str, BranchSection]) -> bool:
    """Whether any branch's encoder learns its vocabulary from the training captions (``gru``; ``hf`` from a
    config): a streamed source then reads its captions once before the model is built."""
    sections = [BranchConfig.from_mapping(c, f"branches.{n}") for n, c in configs.items()]
    return any(s.encoder is not None and encoder_class(s.encoder).learns_vocabulary(s.encoder) for s in sections)


def check_training_options(configs: Mapping[str, BranchSection]) -> None:
    """Before anything is built: ``gradient_checkpointing`` only on encoders whose library has the switch.

    Raises ``ValueError`` naming the branch, its encoder and the encoders that support it.
    """
    for name, config in configs.items():
        section = BranchConfig.from_mapping(config, f"branches.{name}")
        if section.gradient_checkpointing and section.shares is None and section.encoder is not None:
            cls = encoder_class(section.encoder)
            if not cls.supports_gradient_checkpointing:
                spec = section.encoder if isinstance(section.encoder, str) else section.encoder.get("name")
                raise ValueError(
                    f"branches.{name}.gradient_checkpointing: encoder {spec!r} has no gradient checkpointing "
                    f"switch; remove the key (supported: timm, open_clip and hf encoders)"
                )


def build_branches(
    configs: Mapping[str, BranchSection],
    captions: Iterable[str] | None = None,
    tokenizers: Mapping[str, Any] | None = None,
) -> dict[str, Branch]:
    """``{name: BranchConfig or mapping}`` -> ``{name: Branch}`` (a sharing branch after the one it shares).

    Mappings are read with ``BranchConfig.from_mapping`` (an unknown key raises ``ConfigError`` naming
    ``branches.<name>.<key>`` and the nearest valid key; the loss coefficients are accepted and not used here).
    ``captions`` feed learned vocabularies; ``tokenizers`` (``{name: tokenizer}``) replace them for branches
    whose saved tokenizer is at hand. A missing ``expander`` is ``"8192-8192-8192"`` for a branch that owns its
    encoder and the shared branch's expander for a ``shares:`` branch.
    """
    if not configs:
        raise ValueError("a model needs at least one branch (config key `branches`)")
    check_training_options(configs)
    sections = {n: BranchConfig.from_mapping(c, f"branches.{n}").model_section() for n, c in configs.items()}
    for name, section in sections.items():
        shares = section.get("shares")
        if shares is not None and shares not in sections:
            raise ValueError(
                f"branch {name!r} shares {shares!r}, which is not a branch{did_you_mean(shares, sections)}; "
                f"branches: {', '.join(sections)}"
            )
    caption_list = list(captions) if captions is not None else None
    built: dict[str, Branch] = {}
    pending = list(sections)
    while pending:  # a branch that shares another's encoder is built after it
        progressed = False
        for name in list(pending):
            if sections[name].get("shares") not in (None, *built):
                continue
            built[name] = _build_one(name, sections[name], built, caption_list, tokenizers or {})
            pending.remove(name)
            progressed = True
        if not progressed:
            raise ValueError(f"branches {sorted(pending)} share each other in a cycle; one must own an encoder")
    return built
