"""Typed run configuration: YAML + ``dotted.key=value`` overrides; unknown keys and wrong types are errors.

Hand-written over dataclasses rather than a config framework because the checks we need are specific: the
nearest valid key in every error, and ``data.*`` sections whose valid keys depend on their ``format``
(overriding ``data.train.format`` on the command line drops the keys that only the old format had).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import yaml

from mmvicreg.choices import did_you_mean

BRANCH_LOSS_KEYS = ("variance_weight", "covariance_weight", "gamma")
BRANCH_MODEL_KEYS = ("encoder", "expander", "expander_norm", "field", "shares", "transform")
BRANCH_TRAINING_KEYS = ("gradient_checkpointing", "freeze", "unfreeze_last")  # how a branch trains; not saved


class ConfigError(ValueError):
    """A config problem, named by its dotted key."""


@dataclass
class BranchConfig:
    """One branch (``branches.<name>``): its encoder, expander, raw field and preprocessing, and optionally its
    own loss coefficients μ_b, ν_b, γ_b (``None``: the global ``loss.*`` value).

    ``encoder`` is a name (``resnet50``, ``gru``, ``open_clip:ViT-B-32``) or a mapping with a ``name`` and the
    encoder's options; leave it out when ``shares`` names the branch whose encoder this one reuses (siamese, same
    weights). ``expander`` is a width spec (``"8192-8192-8192"``, ``"none"``); left out, the model's default (or,
    for a sharing branch, the shared branch's expander).
    """

    encoder: Any = None
    expander: Any = None
    expander_norm: Optional[str] = None  # batch (published) | layer | none: the expander's hidden normalisation
    field: Optional[str] = None
    shares: Optional[str] = None
    transform: Optional[dict[str, Any]] = None
    gradient_checkpointing: Optional[bool] = None  # recompute the encoder's activations in backward (less memory)
    freeze: Optional[bool] = None  # the encoder's weights and normalisation statistics stay as built (open_clip's lock)
    unfreeze_last: Optional[int] = None  # with freeze: the encoder's last N layer groups still train
    variance_weight: Optional[float] = None
    covariance_weight: Optional[float] = None
    gamma: Optional[float] = None

    @classmethod
    def from_mapping(cls, values: Any, where: str = "branch") -> "BranchConfig":
        """A branch section given as a plain mapping, with unknown keys and wrong types named (``ConfigError``)."""
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise ConfigError(f"{where} must be a mapping (encoder, expander, field, ...), got {values!r}")
        return _build(cls, values, where)

    def model_section(self) -> dict[str, Any]:
        """The keys that describe the network (what ``JointEmbedding.from_config`` reads), the unset ones left out."""
        keys = (*BRANCH_MODEL_KEYS, *BRANCH_TRAINING_KEYS)
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # adamw | lars
    lr: Optional[float] = None  # absolute learning rate; when None: base_lr * batch_size / 256
    base_lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # lars
    eta: float = 0.001  # lars trust coefficient (published: 0.001)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw


@dataclass
class TrainConfig:
    batch_size: int = 256
    micro_batch_size: Optional[int] = None  # run each process's batch in chunks this size; the loss sees it whole
    epochs: int = 1
    samples_per_epoch: Optional[int] = None  # streamed data: cap an epoch at this many samples (open_clip's)
    max_steps: Optional[int] = None
    checkpoint_every: int = 500
    seed: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    warmup_steps: Optional[int] = None
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.001
    grad_clip: Optional[float] = None
    mixed_precision: str = "no"  # no | bf16 | fp16
    cpu: bool = False  # force the CPU even where a GPU is present
    log_every: int = 10
    rankme_every: int = 100
    eval_every: Optional[int] = None
    on_nonfinite: str = "stop"  # stop | skip
    max_consecutive_skips: int = 20  # with skip: this many non-finite batches in a row stop the run
    trackers: list[str] = field(default_factory=list)  # tensorboard, wandb, mlflow, ... (Accelerate's names)
    project: str = "mmvicreg"  # the trackers' project (wandb project, mlflow experiment, tensorboard folder)
    run_name: Optional[str] = None  # the run's name in the trackers; None: the output_dir's folder name
    tracker_init: dict[str, dict[str, Any]] = field(default_factory=dict)  # {tracker: its init options}
    progress: bool = True
    keep_checkpoints: int = 2


@dataclass
class LossConfig:
    name: str = "vicreg"
    invariance_weight: float = 25.0
    variance_weight: float = 25.0
    covariance_weight: float = 1.0
    gamma: float = 1.0
    eps: float = 1e-4
    covariance: str = "auto"
    pairs: Optional[list[list[str]]] = None  # default: every pair of branches
    ablation: Optional[str] = None  # vicreg only: invariance | invariance_variance | full
    temperature: float = 0.07  # infonce: initial temperature
    learn_temperature: bool = True  # infonce
    margin: float = 0.2  # triplet (VSE++ hinge)
    max_violation: bool = True  # triplet: hardest negative (VSE++) rather than the sum over negatives
    barlow_lambda: float = 0.0051  # barlow: weight of the off-diagonal cross-correlation terms
    vcreg_layers: list[str] = field(default_factory=list)  # VCReg on intermediate layers (dotted module names)
    vcreg_variance_weight: float = 1.0
    vcreg_covariance_weight: float = 0.04
    vcreg_spatial: str = "locations"  # locations | pool | flatten


@dataclass
class DataConfig:
    train: dict[str, Any] = field(default_factory=lambda: {"format": "shapes", "split": "train"})
    eval: Optional[dict[str, Any]] = None
    workers: int = 0
    pin_memory: bool = False


@dataclass
class EvalConfig:
    batch_size: int = 256
    protocol: str = "5k"  # 5k | 1k
    branches: Optional[list[str]] = None  # [image branch, text branch]; default: the first two
    captions_per_image: int = 5
    device: Optional[str] = None  # cpu | cuda | cuda:N; None: the training device (CLI: cuda when present)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    workers: Optional[int] = None  # DataLoader worker processes for decoding; None: data.workers
    index: str = "exact"  # retrieval ranks: exact | flat | ivf | hnsw (FAISS; on the GPU when it can)
    index_options: dict[str, Any] = field(default_factory=dict)  # hnsw: m, ef_construction, ef_search; ivf: nlist, nprobe
    reference: Optional[dict[str, Any]] = None  # a labelled data section: the k-NN / linear memory (default: data.train)


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    resume: bool = False  # continue the run in output_dir from its last checkpoint
    overwrite: bool = False  # replace the earlier run in output_dir (its files only) and start afresh
    branches: dict[str, BranchConfig] = field(default_factory=dict)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        tree = dataclasses.asdict(self)
        tree["branches"] = {n: {k: v for k, v in b.items() if v is not None} for n, b in tree["branches"].items()}
        return tree


# ------------------------------------------------------------------------------------------- parsing


def _nearest(key: str, valid: list[str]) -> str:
    return did_you_mean(key, valid) or f"; valid keys: {', '.join(valid)}"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        _, item = typing.get_args(tp) or (str, Any)
        return {k: _coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is str and isinstance(value, bool):  # YAML 1.1 reads an unquoted no/yes (off/on) as a boolean
        value = "yes" if value else "no"
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    expected = "a number" if tp is float else getattr(tp, "__name__", tp)
    raise ConfigError(f"{key} must be {expected}, got {type(value).__name__} {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {dotted!r}{_nearest(str(key), names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[str, Any]:
    """``train.batch_size=64`` -> ``("train.batch_size", 64)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like dotted.key=value (e.g. train.batch_size=64)")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def load_config(
    source: str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    format_keys: Callable[[str], set[str] | None] | None = None,
) -> RunConfig:
    """Read a YAML file (or a dict), apply overrides, check every key and type.

    ``format_keys(format)`` gives the option names a data format accepts (None for an unknown format); it lets a
    ``data.<section>.format=...`` override drop the options that only the previous format had.
    """
    if isinstance(source, dict):
        tree = yaml.safe_load(yaml.safe_dump(source))  # a deep copy
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:  # PyYAML's own message spans several lines; keep the cause and the place
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{path} is not valid YAML{where}: {what}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path} must hold a YAML mapping at the top level")
    for text in overrides or []:
        key, value = parse_override(text)
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "data" and parts[2] == "format" and format_keys is not None:
            section = tree.get("data", {}).get(parts[1])
            if isinstance(section, dict) and section.get("format") != value:
                keep = (format_keys(str(value)) or set()) | {"format"}
                explicit = {o.split("=", 1)[0].split(".")[2] for o in overrides or [] if o.startswith(f"data.{parts[1]}.")}
                tree["data"][parts[1]] = {k: v for k, v in section.items() if k in keep or k in explicit}
        _set_dotted(tree, key, value)
    config = _build(RunConfig, tree)
    validate(config, format_keys)
    return config


def validate(config: RunConfig, format_keys: Callable[[str], set[str] | None] | None = None) -> None:
    """Cross-field checks that types alone do not catch (:mod:`mmvicreg.config_checks`)."""
    from mmvicreg.config_checks import check_config

    check_config(config, format_keys)


def dump_config(config: RunConfig, path: Path) -> None:
    from mmvicreg.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
