"""Encoders by name: a registry over timm, open_clip and our text towers.

Names:
  * any timm model name (``resnet18``…``resnet152``, ``vit_tiny_patch16_224``, ``vit_small_patch16_224``,
    ``vit_base_patch16_224``, the CPU-sized ``test_resnet`` / ``test_vit``, ...): an image encoder;
  * ``open_clip:<model>`` (``open_clip:RN50``, ``open_clip:ViT-B-32``): an open_clip vision tower;
  * ``gru``: the VSE++ GRU over a word vocabulary learned from the training captions;
  * ``hf``: a Hugging Face transformers text encoder from ``config`` (random init) or ``pretrained`` (a local
    folder or a Hub id);
  * ``open_clip_text:<model>``: an open_clip text transformer with open_clip's tokenizer for that model;
  * ``hf_clip`` / ``hf_clip_text``: the image / text tower of a Hugging Face CLIP-style model (``pretrained``: a
    folder or Hub id), with its image processor's settings / its tokenizer (:mod:`.hf_clip`).

Every kind takes ``pretrained`` with one meaning (:mod:`mmvicreg.encoders.weights`): false (random init, the
default, no network), a name the library knows (timm ``true`` or tag, open_clip tag, Hub id: the only values
that may reach the network) or a local file or folder.

Each :class:`Encoder` class answers for itself what a model needs to know before building it: its
``modality``, whether it ``owns_tokenizer``, which options it takes (:meth:`Encoder.options`) and which of them
load weights (:func:`architecture_only` drops them when an export is rebuilt: nothing in a saved spec fetches
weights, opens a file or runs code). :func:`encoder_class` maps a spec to that class (unbuilt),
:func:`check_spec` checks a spec's name and options, and :func:`needs_tokenizer` answers the tokenizer question;
callers never compare encoder names.

Importing this package installs :func:`check_spec` as the config's encoder check
(:func:`mmvicreg.config.register_encoder_check`): a config names an unknown encoder or option when it loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mmvicreg.choices import did_you_mean
from mmvicreg.config import EncoderSpec, register_encoder_check
from mmvicreg.encoders.base import Encoder
from mmvicreg.encoders.hf_clip import HFCLIPImageEncoder, HFCLIPTextEncoder
from mmvicreg.encoders.image import OpenCLIPImageEncoder, TimmImageEncoder
from mmvicreg.encoders.text import GRUTextEncoder, HFTextEncoder, OpenCLIPTextEncoder
from mmvicreg.encoders.text_tokenizers import (
    OpenCLIPTokenizer,
    TextTokenizer,
    hf_tokenizer,
    load_tokenizer,
    word_tokenizer,
    wordpiece_tokenizer,
)
from mmvicreg.encoders.weights import PretrainedUnavailable

OWN_NAMES = ("gru", "hf", "open_clip:<model>", "open_clip_text:<model>", "hf_clip", "hf_clip_text")
EXAMPLE_TIMM = ("resnet18", "resnet50", "resnet152", "vit_tiny_patch16_224", "vit_small_patch16_224", "test_resnet")

__all__ = [
    "Encoder",
    "PretrainedUnavailable",
    "architecture_only",
    "build_encoder",
    "check_spec",
    "encoder_class",
    "known_encoder_names",
    "load_tokenizer",
    "needs_tokenizer",
]


def known_encoder_names() -> list[str]:
    import timm

    return list(OWN_NAMES) + timm.list_models()


def _unknown(name: str, why: str = "") -> ValueError:
    import open_clip

    candidates = known_encoder_names() + [f"open_clip:{m}" for m in open_clip.list_models()]
    return ValueError(
        f"unknown encoder {name!r}{why}{did_you_mean(name, candidates, n=3, cutoff=0.6)}. Known: "
        f"{', '.join(OWN_NAMES)}, or any timm model name (e.g. {', '.join(EXAMPLE_TIMM)}; list them with "
        f"timm.list_models())"
    )


Spec = str | Mapping[str, Any] | EncoderSpec


def _spec_name(spec: Spec) -> str:
    if isinstance(spec, EncoderSpec):
        return spec.name
    name = spec if isinstance(spec, str) else spec.get("name") if isinstance(spec, Mapping) else None
    if not isinstance(name, str):
        raise ValueError(f"an encoder spec needs a string `name`, got {spec!r}")  # noqa: TRY004 - a config error
    return name


def encoder_class(spec: Spec) -> type[Encoder]:
    """The :class:`Encoder` subclass that ``spec`` (a name or ``{"name": ..., **options}``) builds, unbuilt.

    Its class attributes answer what the model needs before building: ``modality`` and ``owns_tokenizer``.
    Raises ``ValueError`` (with the nearest known names) for a name no encoder answers to.
    """
    name = _spec_name(spec)
    if name == "gru":
        return GRUTextEncoder
    if name == "hf":
        return HFTextEncoder
    if name in ("hf_clip", "hf_clip_text"):
        return HFCLIPTextEncoder if name == "hf_clip_text" else HFCLIPImageEncoder
    if name.startswith(("open_clip:", "open_clip_text:")):
        import open_clip

        if name.split(":", 1)[1] not in open_clip.list_models():  # by name only: get_model_config fetches hf-hub:
            raise _unknown(name, " (not an open_clip model; list them with open_clip.list_models())")
        return OpenCLIPTextEncoder if name.startswith("open_clip_text:") else OpenCLIPImageEncoder
    import timm

    if name.startswith(("open_clip", "open_clip_text")) or not timm.is_model(name):
        raise _unknown(name)
    return TimmImageEncoder


def needs_tokenizer(spec: Spec) -> bool:
    """Whether the encoder ``spec`` builds owns a tokenizer (saved with a model, passed back to rebuild it)."""
    return encoder_class(spec).owns_tokenizer


def check_spec(spec: Spec, key: str | None = None) -> type[Encoder]:
    """The :class:`Encoder` class ``spec`` builds, after checking its name and that each option is one that class
    takes (:meth:`Encoder.options`). A ``ValueError`` in one line names the unknown name or option, the nearest
    valid one, and ``key`` (the spec's dotted key in a config, ``branches.image.encoder``) when given."""
    if isinstance(spec, EncoderSpec):
        spec = spec.to_config()
    try:
        cls = encoder_class(spec)
    except ValueError as e:
        where = key if isinstance(spec, str) else f"{key}.name"
        raise ValueError(f"{where}: {e}" if key else str(e)) from None
    if isinstance(spec, str):
        return cls
    name, accepted = spec["name"], cls.options(spec["name"])
    for option in spec:
        if option == "name" or accepted is None or option in accepted:
            continue
        near = did_you_mean(option, sorted(accepted), prefix=f"{key}." if key else "")  # keeps the section
        hint = (f"; {cls.renamed_options[option]}" if option in cls.renamed_options
                else near or f"; it takes {', '.join(sorted(accepted)) or 'none'}")
        if key:
            raise ValueError(f"unknown config key '{key}.{option}' for encoder {name!r}{hint}")
        raise ValueError(f"bad options for encoder {name!r}: unknown option {option!r}{hint}")
    return cls


def _config_check(spec: EncoderSpec, key: str) -> dict[str, Any]:
    """The config's encoder check: :func:`check_spec`, and what the class says of itself."""
    cls = check_spec(spec, key)
    return {
        "modality": cls.modality,
        "owns_tokenizer": cls.owns_tokenizer,
        "supports_gradient_checkpointing": cls.supports_gradient_checkpointing,
        "learns_vocabulary": cls.learns_vocabulary(spec.as_dict()),
    }


register_encoder_check(_config_check)


def architecture_only(spec: str | Mapping[str, Any]) -> str | dict[str, Any]:
    """The encoder ``spec`` without any option that would load weights, open a file or reach the network
    (``pretrained`` for every kind; timm's ``checkpoint_path`` and the like; an hf config's pointers to code):
    building it gives a random init of the same architecture, for weights that come from elsewhere, as when an
    export is loaded. Raises ``ValueError`` for an unknown name or a spec that names no architecture without
    those options (an hf spec with no ``config``)."""
    if isinstance(spec, str):
        encoder_class(spec)
        return spec
    return encoder_class(spec).architecture_only(dict(spec))


def _split_text_options(cls: type[Encoder], spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    tok_keys = set(cls.tokenizer_options)
    return {k: v for k, v in spec.items() if k not in tok_keys}, {k: v for k, v in spec.items() if k in tok_keys}


def build_encoder(
    spec: Spec,
    captions: Iterable[str] | None = None,
    tokenizer: TextTokenizer | OpenCLIPTokenizer | None = None,
) -> Encoder:
    """Build an encoder from an :class:`~mmvicreg.config.EncoderSpec` (checked when it was parsed), a name, or a
    ``{"name": ..., **options}`` dict (checked here, once: :func:`check_spec`).

    Text encoders that learn a vocabulary (``gru``; ``hf`` from a config) need the training ``captions``,
    unless a saved ``tokenizer`` is given (as when loading an export). ``pretrained`` (any kind) is validated
    before any download: a bad value raises ValueError; weights a tag or Hub id names that cannot be had raise
    :class:`PretrainedUnavailable` (one line naming the model, the cause and the local-path alternative).
    """
    if isinstance(spec, EncoderSpec):
        cls, options = encoder_class(spec), spec.as_dict()
    else:
        cls, options = check_spec(spec), ({"name": spec} if isinstance(spec, str) else dict(spec))
    name = options.pop("name")
    try:
        if cls is GRUTextEncoder:
            options, tok_opts = _split_text_options(cls, options)
            tok_opts.pop("vocab_size", None)
            tok = tokenizer or word_tokenizer(captions or [], **tok_opts)  # type: ignore[arg-type]
            return GRUTextEncoder(tok, **options)  # type: ignore[arg-type]
        if cls is HFTextEncoder:
            options, tok_opts = _split_text_options(cls, options)
            if tokenizer is None:
                if options.get("pretrained"):
                    tokenizer = hf_tokenizer(options["pretrained"], tok_opts.get("max_length"))
                else:
                    tokenizer = wordpiece_tokenizer(captions or [], **tok_opts)
            return HFTextEncoder(tokenizer, **options)  # type: ignore[arg-type]
        if cls is HFCLIPTextEncoder:
            options, tok_opts = _split_text_options(cls, options)
            if tokenizer is None:
                if not options.get("pretrained"):
                    raise ValueError("an hf_clip_text encoder from a `config` has no tokenizer: give `pretrained` "
                                     "(the folder or Hub id whose tokenizer it uses)")
                tokenizer = hf_tokenizer(options["pretrained"], tok_opts.get("max_length"))
            return HFCLIPTextEncoder(tokenizer, **options)  # type: ignore[arg-type]
        if cls is HFCLIPImageEncoder:
            return HFCLIPImageEncoder(**options)
        if cls is OpenCLIPTextEncoder:
            return OpenCLIPTextEncoder(name.split(":", 1)[1], tokenizer=tokenizer, **options)  # type: ignore[arg-type]
        if cls is OpenCLIPImageEncoder:
            return OpenCLIPImageEncoder(name.split(":", 1)[1], **options)
    except TypeError as e:
        raise ValueError(f"bad options for encoder {name!r}: {e}") from None
    try:
        return TimmImageEncoder(name, **options)
    except TypeError as e:
        raise ValueError(f"bad options for timm encoder {name!r}: {e}") from None
