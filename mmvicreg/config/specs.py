"""A branch's sub-specs as typed values, each with the one parser that makes it: ``expander``, ``transform``,
``encoder``.

Each ``parse(value, key)`` takes what a config (or a Python caller) wrote, or an already parsed value (returned as
it is), and raises :class:`ConfigError` in one line naming ``key`` (the dotted key, e.g.
``branches.image.expander``), what it holds and what is accepted.

* :func:`parse_expander` is the expander's width spec; :class:`mmvicreg.model.expander.Expander` parses with it too.
* :class:`TransformConfig` holds an image branch's ``transform`` keys; :meth:`TransformConfig.resolve` fills the
  keys it leaves out from the encoder's weights, then from :data:`TRANSFORM_DEFAULTS`.
* :class:`EncoderSpec` is an encoder's name and options. Whether a name is known and an option is one that encoder
  takes is the encoders' knowledge: :mod:`mmvicreg.encoders` registers its check here
  (:func:`register_encoder_check`) when it is imported; the first spec parsed imports it by name (the registry
  pattern of ``OBJECTIVE_CLASSES``), so this leaf has no import edge to the encoders and the check still runs at
  parse time. :func:`encoder_checks` turns it off for a quick first read (the command line's: a config's key,
  type and value mistakes are answered before torch is imported).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

from mmvicreg.choices import AUGMENT_PLACES, INTERPOLATIONS, TRANSFORMS, VICREG_VIEWS, check_choice, did_you_mean


class ConfigError(ValueError):
    """A config problem, named by its dotted key."""


def _config_error(e: ValueError) -> ConfigError:
    return e if isinstance(e, ConfigError) else ConfigError(str(e))


def choice(value: Any, allowed: Any, key: str) -> Any:
    """``value`` when it is one of ``allowed``; else ``ConfigError``: ``key``, the value, the nearest, the choices."""
    try:
        return check_choice(value, tuple(allowed), key)
    except ValueError as e:
        raise ConfigError(str(e)) from None


# ------------------------------------------------------------------------------------------- expander


def parse_expander(spec: Any, key: str | None = None) -> tuple[int, ...]:
    """``"8192-8192-8192"`` -> ``(8192, 8192, 8192)``; ``""``, ``"none"``, ``"identity"`` or None -> ``()``.

    An int is one width; a tuple of widths (or an :class:`ExpanderSpec`) is taken as parsed widths. A bad spec
    raises ``ValueError`` (:class:`ConfigError` naming ``key`` when given) saying how to write one.
    """
    if isinstance(spec, ExpanderSpec):
        return spec.widths
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none", "identity")):
        return ()
    is_widths = isinstance(spec, tuple) and all(isinstance(w, int) and not isinstance(w, bool) for w in spec)
    text = "-".join(map(str, spec)) if is_widths else str(spec).strip().lower()
    widths = []
    for part in text.split("-"):
        if not part.strip().isdigit() or int(part) < 1:
            what = f"{key} is {spec!r}, a bad expander spec" if key else f"bad expander spec {spec!r}"
            error = ConfigError if key else ValueError
            raise error(f"{what}: {part!r} is not a positive width; write layer widths joined by '-', "
                        f"e.g. '8192-8192-8192', or 'none' for no expander")
        widths.append(int(part))
    return tuple(widths)


@dataclass(frozen=True)
class ExpanderSpec:
    """An expander's hidden and output widths (``()``: none, the identity), and the spec as it was written."""

    widths: tuple[int, ...]
    written: Any = None

    @classmethod
    def parse(cls, value: Any, key: str = "expander") -> "ExpanderSpec":
        """``value`` as written in a config (``"8192-8192-8192"``, ``256``, ``"none"``); see :func:`parse_expander`."""
        return value if isinstance(value, cls) else cls(parse_expander(value, key), value)

    def to_config(self) -> Any:
        """The value a config holds for it (as it was written)."""
        return self.written if self.written is not None else "-".join(map(str, self.widths)) or "none"


# ------------------------------------------------------------------------------------------- transform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INTERPOLATION = "bicubic"
DEFAULT_CROP_PCT = 0.875
# Every transform key with the value an image branch gets when neither its config nor its weights give one.
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


def check_transform_value(name: str, value: Any, key: str) -> Any:
    """``value`` of the transform key ``name`` (mean and std as 3 floats), or ``ConfigError`` naming ``key``."""
    if name in ("train", "eval"):
        return choice(value, TRANSFORMS, key)
    if name == "augment_on":
        return choice(value, AUGMENT_PLACES, key)
    if name == "interpolation":
        return choice(value, INTERPOLATIONS, key)
    if name in ("mean", "std"):
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ConfigError(f"{key} must be 3 numbers (one per RGB channel), got {value!r}")
        return tuple(float(v) for v in value)
    if name == "size" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{key} must be a positive integer (pixels), got {value!r}")
    if name == "crop_pct" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1):
        raise ConfigError(f"{key} must be a number in (0, 1], got {value!r}")
    return value


def view_number(transform: str) -> int | None:
    """The published VICReg view (1 or 2) that the transform called ``transform`` is; None for any other."""
    return VICREG_VIEWS.get(transform)


@dataclass(frozen=True)
class TransformConfig:
    """An image branch's ``transform`` keys (:data:`TRANSFORM_KEYS`); None: not given (weights, then defaults).

    ``train``/``eval``: a transform name (``vicreg_view1``, ``vicreg_view2``, ``light``, ``eval``); ``size``
    (pixels), ``mean``/``std`` (3 floats), ``interpolation``, ``crop_pct`` (the eval centre crop, in (0, 1]),
    ``augment_on`` (``workers``, or ``device``: the colour half of a VICReg view runs on the batch).
    """

    train: Optional[str] = None
    eval: Optional[str] = None
    size: Optional[int] = None
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    interpolation: Optional[str] = None
    crop_pct: Optional[float] = None
    augment_on: Optional[str] = None

    @classmethod
    def parse(cls, value: Any, key: str = "transform") -> "TransformConfig":
        """A ``transform`` mapping, every key and value checked; unknown keys are named with the nearest."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping of {', '.join(TRANSFORM_KEYS)}, got {value!r}")
        for name in value:
            if name not in TRANSFORM_KEYS:
                raise ConfigError(f"{key}.{name}: unknown transform key {name!r}"
                                  f"{did_you_mean(name, TRANSFORM_KEYS)}; known: {', '.join(TRANSFORM_KEYS)}")
        spec = cls(**{n: check_transform_value(n, v, f"{key}.{n}") for n, v in value.items() if v is not None})
        train = spec.train or TRANSFORM_DEFAULTS["train"]
        if spec.augment_on == "device" and view_number(train) is None:
            raise ConfigError(f"{key}.augment_on: device moves the colour half of a VICReg view to the device, but "
                              f"its transform.train is {train!r}; use vicreg_view1/vicreg_view2 or augment_on: workers")
        return spec

    def given(self) -> dict[str, Any]:
        """The keys the config gives (not None)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def to_config(self) -> dict[str, Any]:
        """The mapping a config holds for it (lists for mean and std)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.given().items()}

    def resolve(self, weights: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every key resolved: the config's value, else what the encoder's weights expect (``weights``: its
        ``preprocessing()``, each value checked alike), else :data:`TRANSFORM_DEFAULTS`. Mean and std as lists."""
        given, weights = self.given(), {k: v for k, v in (weights or {}).items() if v is not None}
        resolved = {}
        for name, default in TRANSFORM_DEFAULTS.items():
            if name in given:
                value = given[name]
            elif name in weights:
                value = check_transform_value(name, weights[name], f"the encoder's preprocessing {name}")
            else:
                value = default
            resolved[name] = list(value) if isinstance(value, tuple) else value
        return resolved


# ------------------------------------------------------------------------------------------- encoder

EncoderCheck = Callable[["EncoderSpec", str], Mapping[str, Any]]
_ENCODER_CHECK: dict[str, EncoderCheck] = {}
_ENCODERS_MODULE = "mmvicreg.encoders"  # registers its check when imported
_CHECK_ENCODERS = contextvars.ContextVar("check_encoders", default=True)


@contextlib.contextmanager
def encoder_checks(enabled: bool) -> Iterator[None]:
    """Inside the block, :meth:`EncoderSpec.parse` checks names and options only when ``enabled`` (its traits
    stay empty otherwise: a config read this way is for reporting mistakes, not for building)."""
    token = _CHECK_ENCODERS.set(enabled)
    try:
        yield
    finally:
        _CHECK_ENCODERS.reset(token)


def register_encoder_check(check: EncoderCheck) -> None:
    """Install the encoders' check (:mod:`mmvicreg.encoders` does, at import): ``check(spec, key)`` raises
    ``ValueError`` naming ``key`` for an unknown name or option, and returns the encoder's traits
    (``modality``, ``supports_gradient_checkpointing``, ``learns_vocabulary``)."""
    _ENCODER_CHECK["encoder"] = check


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder's ``name`` (``resnet50``, ``gru``, ``open_clip:ViT-B-32``) and its ``options``.

    ``bare``: it was written as a name alone (saved back that way). ``traits``: what the encoders' check said of
    it when it was parsed (empty when no check was registered).
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    bare: bool = False
    traits: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, value: Any, key: str = "encoder") -> "EncoderSpec":
        """A name or a mapping with a ``name`` and the encoder's options, checked by the encoders' check."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            spec = cls(value, {}, bare=True)
        elif isinstance(value, Mapping) and isinstance(value.get("name"), str):
            spec = cls(value["name"], {k: v for k, v in value.items() if k != "name"})
        else:
            raise ConfigError(f"{key} must be a name (e.g. resnet50, gru) or a mapping with a `name`, got {value!r}")
        if not _CHECK_ENCODERS.get():
            return spec
        if "encoder" not in _ENCODER_CHECK:
            importlib.import_module(_ENCODERS_MODULE)
        check = _ENCODER_CHECK["encoder"]
        try:
            traits = check(spec, key)
        except ValueError as e:
            raise _config_error(e) from None
        return dataclasses.replace(spec, traits=dict(traits))

    def as_dict(self) -> dict[str, Any]:
        """``{"name": ..., **options}``: the spec as the encoders' builders read it."""
        return {"name": self.name, **self.options}

    def to_config(self) -> Any:
        """The value a config holds for it: the bare name, or the mapping."""
        return self.name if self.bare and not self.options else self.as_dict()
