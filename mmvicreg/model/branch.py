"""A branch: encoder -> representation h -> expander -> embedding z, with the raw field it reads and the
preprocessing it declares (:mod:`mmvicreg.preprocessing`: an image transform's settings, or the tokenizer its text
encoder owns); the data package builds that preprocessing, the branch builds none of it.

:func:`build_branches` turns parsed branch sections (``BranchConfig``, checked when the config loaded) into
branches; a branch with ``shares: other`` reuses ``other``'s encoder (siamese, same weights) and, unless it names
its own, its expander.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from mmvicreg.config import BranchConfig, TransformConfig
from mmvicreg.encoders import Encoder, build_encoder, encoder_class
from mmvicreg.model.expander import DEFAULT_EXPANDER, Expander
from mmvicreg.preprocessing import ImagePreprocessing, TextPreprocessing

def transform_spec(
    spec: TransformConfig | Mapping[str, Any] | None, weights: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An image branch's ``transform``, every key resolved (:meth:`mmvicreg.config.TransformConfig.resolve`).

    Each key comes from the config when it gives one (not None), else from ``weights`` (what the encoder's
    pretrained weights expect: :meth:`~mmvicreg.encoders.Encoder.preprocessing`), else from
    ``mmvicreg.config.specs.TRANSFORM_DEFAULTS`` (ImageNet statistics, bicubic, 224 px, eval crop 0.875). A
    mapping is parsed by the config's one transform parser (unknown keys and bad values raise ``ConfigError``).
    """
    return TransformConfig.parse(spec or {}, "transform").resolve(weights)


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
        transform: TransformConfig | Mapping[str, Any] | None = None,
        shares: str | None = None,
        own_expander: bool = True,
    ):
        super().__init__()
        self.encoder = encoder
        self.expander = expander
        self.field = field or ("image" if encoder.modality == "image" else "caption")
        image = encoder.modality == "image"
        self.transform_spec = transform_spec(transform, encoder.preprocessing()) if image else None
        self.shares = shares
        self.own_expander = own_expander

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

    @property
    def preprocessing(self) -> ImagePreprocessing | TextPreprocessing:
        """What this branch's inputs are made with, declared (:mod:`mmvicreg.preprocessing`): an image branch's
        resolved ``transform`` (size, mean/std, interpolation, eval crop, training transform and where its colour
        half runs), a text branch's tokenizer. ``mmvicreg.data`` builds the transforms and the device stage from
        it (``mmvicreg.data.preprocess``); the branch builds none of it."""
        if self.transform_spec is None:
            return TextPreprocessing(self.field, self.tokenizer)
        return ImagePreprocessing.from_spec(self.field, self.transform_spec)

    def forward(self, x: torch.Tensor, return_representation: bool = False):
        """``z`` (and ``h``) of a batch as the encoder reads it: float images already normalised (what a loader
        with the data package's device stage gives) or token ids. uint8 images (B, 3, H, W) handed over directly
        are normalised first with this branch's mean and std (:meth:`ImagePreprocessing.normalize`); no
        augmentation ever runs here."""
        if x.dtype == torch.uint8 and self.transform_spec is not None:
            x = self.preprocessing.normalize(x)
        h = self.encoder(x)
        z = self.expander(h)
        return (z, h) if return_representation else z

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
    section: BranchConfig,
    built: Mapping[str, Branch],
    captions: list[str] | None,
    tokenizers: Mapping[str, Any],
) -> Branch:
    norm = section.expander_norm or "batch"
    if section.shares is not None:
        source = built[section.shares]
        encoder = source.encoder
        own_spec = section.expander is not None or section.expander_norm is not None
        expander = (
            Expander(encoder.output_dim, section.expander or source.expander.spec, norm) if own_spec
            else source.expander
        )
    else:
        encoder = build_encoder(section.encoder, captions=captions, tokenizer=tokenizers.get(name))  # type: ignore[arg-type]
        expander = Expander(encoder.output_dim, section.expander or DEFAULT_EXPANDER, norm)
        # a sharing branch trains its owner's encoder, which the owner's settings already set
        if section.gradient_checkpointing:
            encoder.set_gradient_checkpointing(True)
        if section.freeze:
            encoder.freeze(section.unfreeze_last or 0)
    own = section.shares is None or expander is not built[section.shares].expander
    return Branch(encoder, expander, section.field, section.transform, section.shares, own_expander=own)


def needs_vocabulary(configs: Mapping[str, BranchConfig]) -> bool:
    """Whether any branch's encoder learns its vocabulary from the training captions (``gru``; ``hf`` from a
    config): a streamed source then reads its captions once before the model is built."""
    return any(c.encoder is not None and encoder_class(c.encoder).learns_vocabulary(c.encoder.as_dict())
               for c in configs.values())


def build_branches(
    configs: Mapping[str, BranchConfig],
    captions: Iterable[str] | None = None,
    tokenizers: Mapping[str, Any] | None = None,
) -> dict[str, Branch]:
    """``{name: BranchConfig}`` (parsed and checked: :func:`mmvicreg.config.parse_branches`) ->
    ``{name: Branch}``, a sharing branch built after the one it shares.

    ``captions`` feed learned vocabularies; ``tokenizers`` (``{name: tokenizer}``) replace them for branches
    whose saved tokenizer is at hand. A missing ``expander`` is ``"8192-8192-8192"`` for a branch that owns its
    encoder and the shared branch's expander for a ``shares:`` branch.
    """
    if not configs:
        raise ValueError("a model needs at least one branch (config key `branches`)")
    caption_list = list(captions) if captions is not None else None
    built: dict[str, Branch] = {}
    pending = list(configs)
    while pending:  # a branch that shares another's encoder is built after it (no cycle: checked when parsed)
        ready = [n for n in pending if configs[n].shares in (None, *built)]
        if not ready:  # branches made in Python and never checked (mmvicreg.config.check_branches)
            raise ValueError(f"branches {sorted(pending)} share a branch that is not built; see check_branches")
        for name in ready:
            built[name] = _build_one(name, configs[name], built, caption_list, tokenizers or {})
            pending.remove(name)
    return built
