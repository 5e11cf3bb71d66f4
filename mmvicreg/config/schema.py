"""The typed run configuration: one dataclass per section, each checking its own rules when it is made.

A section cannot exist with a value its rules refuse: ``LossConfig(name="vicrge")`` raises :class:`ConfigError`
naming ``loss.name``, the value, the nearest name and the choices, whether the value came from a YAML file
(:func:`mmvicreg.config.load_config`) or from Python. Rules that look at two sections at once (``loss.pairs``
against the branches, a ``shares:`` that names a branch, ...) are :mod:`mmvicreg.config.checks`'. A branch's
sub-specs (``encoder``, ``expander``, ``transform``) are typed values from :mod:`mmvicreg.config.specs`.

The builders read these objects and check nothing again.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Optional

from mmvicreg.choices import DATA_FORMATS
from mmvicreg.config.keys import KEY_CHOICES
from mmvicreg.config.specs import ConfigError, EncoderSpec, ExpanderSpec, TransformConfig, choice

BRANCH_LOSS_KEYS = ("variance_weight", "covariance_weight", "gamma")
BRANCH_MODEL_KEYS = ("encoder", "expander", "expander_norm", "field", "shares", "transform")
BRANCH_TRAINING_KEYS = ("gradient_checkpointing", "freeze", "unfreeze_last")  # how a branch trains; not saved


def _choose(section: Any, prefix: str) -> None:
    """Check each of ``section``'s keys that :data:`KEY_CHOICES` lists under ``prefix``, keeping the allowed
    spelling (names match in any case)."""
    for key, allowed in KEY_CHOICES.items():
        head, _, name = key.rpartition(".")
        if head == prefix and getattr(section, name) is not None:
            setattr(section, name, choice(getattr(section, name), allowed, key))


def _positive(values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value is not None and not value > 0:  # `not >` also catches NaN
            raise ConfigError(f"{key} must be positive, got {value}")


def _non_negative(values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value is not None and not value >= 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")


def _at_least_one(values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")


@dataclass
class BranchConfig:
    """One branch (``branches.<name>``): its encoder, expander, raw field and preprocessing, and optionally its
    own loss coefficients μ_b, ν_b, γ_b (``None``: the global ``loss.*`` value).

    ``encoder`` (:class:`EncoderSpec`) is a name (``resnet50``, ``gru``, ``open_clip:ViT-B-32``) or a mapping with
    a ``name`` and the encoder's options; left out when ``shares`` names the branch whose encoder this one reuses
    (siamese, same weights). ``expander`` (:class:`ExpanderSpec`) is a width spec (``"8192-8192-8192"``,
    ``"none"``); left out, the model's default (or, for a sharing branch, the shared branch's expander).
    ``transform`` (:class:`TransformConfig`): an image branch's preprocessing keys. Given as written (a name, a
    spec string, a mapping), they are parsed here; their rules are checked by their parsers.
    """

    encoder: Optional[EncoderSpec] = None
    expander: Optional[ExpanderSpec] = None
    expander_norm: Optional[str] = None  # batch (published) | layer | none: the expander's hidden normalisation
    field: Optional[str] = None
    shares: Optional[str] = None
    transform: Optional[TransformConfig] = None
    gradient_checkpointing: Optional[bool] = None  # recompute the encoder's activations in backward (less memory)
    freeze: Optional[bool] = None  # the encoder's weights and normalisation statistics stay as built (open_clip's lock)
    unfreeze_last: Optional[int] = None  # with freeze: the encoder's last N layer groups still train
    variance_weight: Optional[float] = None
    covariance_weight: Optional[float] = None
    gamma: Optional[float] = None

    def __post_init__(self) -> None:
        if self.encoder is not None:
            self.encoder = EncoderSpec.parse(self.encoder, "branch.encoder")
        if self.expander is not None:
            self.expander = ExpanderSpec.parse(self.expander, "branch.expander")
        if self.transform is not None:
            self.transform = TransformConfig.parse(self.transform, "branch.transform")

    def to_dict(self) -> dict[str, Any]:
        """The section as a config writes it, the unset keys left out."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (EncoderSpec, ExpanderSpec, TransformConfig)):
                value = value.to_config()
            if value is not None:
                out[f.name] = value
        return out


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # adamw | lars
    lr: Optional[float] = None  # absolute learning rate; when None: base_lr * batch_size / 256
    base_lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # lars
    eta: float = 0.001  # lars trust coefficient (published: 0.001)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    fused: Optional[bool] = None  # adamw, sgd: one fused kernel per step; None: on CUDA

    def __post_init__(self) -> None:
        _choose(self, "train.optimizer")
        if self.fused and self.name == "lars":
            raise ConfigError("train.optimizer.fused: LARS has no fused step; drop the key (or use adamw / sgd)")
        _positive({"train.optimizer.lr": self.lr, "train.optimizer.base_lr": self.base_lr})
        _non_negative({"train.optimizer.weight_decay": self.weight_decay, "train.optimizer.momentum": self.momentum})


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
    mixed_precision: Optional[str] = None  # no | bf16 | fp16; None: what Accelerate was told (flag, env, config)
    cpu: bool = False  # force the CPU even where a GPU is present
    channels_last: Optional[bool] = None  # convolutional image towers in NHWC; None: on CUDA
    tf32: bool = False  # TensorFloat-32 matmuls for float32 work on CUDA
    compile: bool = False  # torch.compile each encoder and expander (the objective stays eager, float32)
    deterministic: Optional[bool] = None  # torch.use_deterministic_algorithms; None: on with compile
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
    sync_to: Optional[str] = None  # an fsspec URL the checkpoints and the export are mirrored to (and resumed from)
    requeue: bool = False  # on a stop signal under SLURM, run `scontrol requeue $SLURM_JOB_ID` after the checkpoint
    dist_timeout: Optional[float] = None  # seconds a process waits for the others (rendezvous, collectives)

    COUNTS: ClassVar[tuple[str, ...]] = (
        "epochs", "checkpoint_every", "log_every", "rankme_every", "keep_checkpoints", "max_consecutive_skips"
    )

    def __post_init__(self) -> None:
        _choose(self, "train")
        if self.batch_size < 2:
            raise ConfigError(f"train.batch_size is {self.batch_size}; VICReg's variance and covariance need at "
                              f"least 2 samples per batch")
        _at_least_one({f"train.{key}": getattr(self, key) for key in self.COUNTS})
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"train.max_steps must be at least 1 (or null for epochs), got {self.max_steps}")
        _positive({"train.grad_clip": self.grad_clip, "train.dist_timeout": self.dist_timeout})
        _non_negative({"train.warmup_steps": self.warmup_steps, "train.warmup_epochs": self.warmup_epochs,
                       "train.min_lr_ratio": self.min_lr_ratio})
        check_batch_split(self, 1)
        self._check_trackers()
        if self.sync_to is not None:
            check_sync_url(self.sync_to)

    def _check_trackers(self) -> None:
        """``trackers`` are Accelerate's tracker names; ``tracker_init`` has options only for those."""
        if self.trackers:
            from accelerate.utils import LoggerType

            known = sorted(str(k.value) for k in LoggerType)
            for tracker in self.trackers:
                if tracker not in known:
                    raise ConfigError(f"train.trackers names {tracker!r}; known trackers: {', '.join(known)}")
        for tracker in self.tracker_init:
            if tracker not in self.trackers:
                raise ConfigError(f"train.tracker_init has options for {tracker!r}, which is not in train.trackers "
                                  f"({self.trackers}); add it there or remove its options")


def check_sync_url(url: str) -> None:
    """``train.sync_to`` names a protocol fsspec knows and whose library is installed (``s3://`` needs s3fs);
    nothing is contacted here."""
    import fsspec

    protocol = fsspec.core.split_protocol(url)[0] or "file"
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"train.sync_to {url!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                          f"install the fsspec implementation of {protocol}:// (s3fs, gcsfs, adlfs, ...)") from None


def divisor_near(n: int, m: int) -> int:
    """The largest divisor of ``n`` not above ``m`` (a micro-batch size to suggest)."""
    return max(d for d in range(1, min(n, m) + 1) if n % d == 0)


def check_batch_split(train: TrainConfig, world: int = 1) -> None:
    """The global ``train.batch_size`` splits over ``world`` processes (at least 2 samples each), and each
    process's share into ``train.micro_batch_size`` chunks.

    The one home of the batch-split rules: run with ``world=1`` when a config is made, and with the number of
    processes when it is known (:func:`mmvicreg.train.setup.make_accelerator`).
    """
    b, m = train.batch_size, train.micro_batch_size
    if world > 1 and b % world:
        raise ConfigError(f"train.batch_size {b} must be divisible by the number of processes ({world})")
    if world > 1 and b // world < 2:
        raise ConfigError(f"train.batch_size {b} over {world} processes leaves < 2 samples per process")
    if m is None:
        return
    if m < 1 or m > b:
        raise ConfigError(f"train.micro_batch_size is {m}; it must be between 1 and train.batch_size ({b})")
    if b % m:
        raise ConfigError(f"train.micro_batch_size {m} does not divide train.batch_size {b}; choose a divisor "
                          f"(e.g. {divisor_near(b, m)})")
    per = b // world
    if m > per or per % m:
        raise ConfigError(
            f"train.micro_batch_size {m} does not divide each process's share of the batch, {per} "
            f"(train.batch_size {b} over {world} processes); choose a divisor of {per}, e.g. {divisor_near(per, m)}"
        )


@dataclass
class LossConfig:
    name: str = "vicreg"  # a key of mmvicreg.choices.OBJECTIVE_CLASSES
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
    vcreg_form: str = "vicreg"  # vicreg | paper: the normalisation of the VCReg penalty
    vcreg_fast: bool = False  # the VCReg paper's fast path: the penalty's gradient written by hand

    def __post_init__(self) -> None:
        _choose(self, "loss")  # loss.name: the objective registry's names
        if self.ablation is not None:
            if self.name != "vicreg" and self.ablation != "full":
                raise ConfigError(f"loss.ablation={self.ablation!r} applies to the vicreg objective only, "
                                  f"not to {self.name!r}")
        _non_negative({"loss.invariance_weight": self.invariance_weight, "loss.variance_weight": self.variance_weight,
                       "loss.covariance_weight": self.covariance_weight})
        if self.name == "infonce":
            _positive({"loss.temperature": self.temperature})
        for pair in self.pairs or []:
            if len(pair) != 2:
                raise ConfigError(f"loss.pairs entries must be two branch names, got {pair}")
        self._check_vcreg()

    def _check_vcreg(self) -> None:
        _non_negative({"loss.vcreg_variance_weight": self.vcreg_variance_weight,
                       "loss.vcreg_covariance_weight": self.vcreg_covariance_weight})
        if not self.vcreg_layers:
            changed = [f"loss.{f.name}" for f in fields(self) if f.name.startswith("vcreg_") and f.name != "vcreg_layers"
                       and getattr(self, f.name) != f.default]
            if changed:
                raise ConfigError(f"{', '.join(changed)} set but loss.vcreg_layers is empty: name the layers VCReg "
                                  f"regularises (e.g. loss.vcreg_layers=[blocks]) or drop the setting")
        if self.vcreg_fast and self.vcreg_spatial == "pool":
            raise ConfigError("loss.vcreg_fast needs loss.vcreg_spatial: locations or flatten (pooling needs "
                              "autograd); set loss.vcreg_fast: false")


@dataclass
class DataConfig:
    train: dict[str, Any] = field(default_factory=lambda: {"format": "shapes", "split": "train"})
    eval: Optional[dict[str, Any]] = None
    workers: int = 0
    pin_memory: Optional[bool] = None  # page-locked batches for non-blocking copies; None: when training on CUDA
    decode_on: str = "workers"  # workers | device: where JPEGs decode (mmvicreg.data.device_decode)

    def __post_init__(self) -> None:
        _choose(self, "data")
        _non_negative({"data.workers": self.workers})
        for section in ("train", "eval"):
            data = getattr(self, section)
            if data is not None and "format" not in data:
                raise ConfigError(f"data.{section} needs a `format` ({', '.join(DATA_FORMATS)})")


@dataclass
class EvalConfig:
    batch_size: int = 256
    protocol: str = "5k"  # 5k | 1k
    branches: Optional[list[str]] = None  # [image branch, text branch]; default: the first two
    captions_per_image: int = 5
    device: Optional[str] = None  # cpu | cuda | cuda:N; None: the training device (CLI: cuda when present)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    workers: Optional[int] = None  # DataLoader worker processes for decoding; None: data.workers
    decode_on: Optional[str] = None  # workers | device; None: data.decode_on
    index_kind: str = "exact"  # retrieval ranks: exact | flat | ivf | hnsw (FAISS; on the GPU when it can)
    index_options: dict[str, Any] = field(default_factory=dict)  # hnsw: m, ef_construction, ef_search; ivf: nlist, nprobe
    reference: Optional[dict[str, Any]] = None  # a labelled data section: the k-NN / linear memory (default: data.train)

    def __post_init__(self) -> None:
        _choose(self, "eval")
        _positive({"eval.batch_size": self.batch_size})


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

    def __post_init__(self) -> None:
        if "://" in self.output_dir:
            raise ConfigError(
                f"output_dir {self.output_dir!r} is a URL; output_dir is a local folder (Accelerate writes there): "
                f"set train.sync_to={self.output_dir} to keep the run's checkpoints and export there, and a local "
                f"(or shared) folder as output_dir"
            )
        if self.resume and self.overwrite:
            raise ConfigError("resume=true and overwrite=true ask for opposite things (continue the run in "
                              "output_dir, or replace it); set one of them")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (what ``config.yaml`` holds); each branch without its unset keys."""
        tree = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "branches"}
        tree = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in tree.items()}
        tree["branches"] = {name: copy.deepcopy(b.to_dict()) for name, b in self.branches.items()}
        return {f.name: tree[f.name] for f in dataclasses.fields(self)}
