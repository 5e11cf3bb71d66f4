"""The cross-field checks of a run configuration (:func:`check_config`), run by ``load_config`` after the types.

Each check names the dotted key at fault, what it holds and what would be accepted, in one line.
"""

from __future__ import annotations

from typing import Callable

from mmvicreg.choices import (
    COVARIANCE_ALGORITHMS,
    DATA_FORMATS,
    EVAL_PRECISIONS,
    MIXED_PRECISION,
    NONFINITE_POLICIES,
    OBJECTIVES,
    OPTIMIZERS,
    RENAMED_DATA_KEYS,
    RETRIEVAL_INDEXES,
    RETRIEVAL_PROTOCOLS,
    did_you_mean,
)
from mmvicreg.config import BRANCH_LOSS_KEYS, BRANCH_TRAINING_KEYS, ConfigError, RunConfig


def _nearest(key: str, valid: list[str]) -> str:
    return did_you_mean(key, valid) or f"; valid keys: {', '.join(valid)}"


def check_config(config: RunConfig, format_keys: Callable[[str], set[str] | None] | None = None) -> None:
    """Cross-field checks that types alone do not catch; the first problem raises ``ConfigError`` naming its key."""
    t = config.train
    choices = {
        "train.mixed_precision": (t.mixed_precision, MIXED_PRECISION),
        "train.on_nonfinite": (t.on_nonfinite, NONFINITE_POLICIES),
        "train.optimizer.name": (t.optimizer.name, OPTIMIZERS),
        "loss.covariance": (config.loss.covariance, COVARIANCE_ALGORITHMS),
        "loss.name": (config.loss.name, OBJECTIVES),
        "eval.protocol": (config.eval.protocol, RETRIEVAL_PROTOCOLS),
        "eval.precision": (config.eval.precision, EVAL_PRECISIONS),
        "eval.index": (config.eval.index, RETRIEVAL_INDEXES),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key} is {value!r}{did_you_mean(value, allowed)}; choose one of {', '.join(allowed)}")
    if t.batch_size < 2:
        raise ConfigError(
            f"train.batch_size is {t.batch_size}; VICReg's variance and covariance need at least 2 samples per batch"
        )
    for key in ("epochs", "checkpoint_every", "log_every", "rankme_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {getattr(t, key)}")
    if t.max_steps is not None and t.max_steps < 1:
        raise ConfigError(f"train.max_steps must be at least 1 (or null for epochs), got {t.max_steps}")
    if config.resume and config.overwrite:
        raise ConfigError("resume=true and overwrite=true ask for opposite things (continue the run in output_dir, "
                          "or replace it); set one of them")
    _check_ranges(config)
    _check_micro_batch(config)
    if not config.branches:
        raise ConfigError("the config names no branches; add `branches:` with at least two (e.g. image, caption)")
    names = list(config.branches)
    for name, branch in config.branches.items():
        for key in BRANCH_LOSS_KEYS:
            value = getattr(branch, key)
            if value is not None and not value >= 0:
                raise ConfigError(f"branches.{name}.{key} must be >= 0, got {value!r}")
        encoder = branch.encoder
        if encoder is not None and not (
            isinstance(encoder, str) or (isinstance(encoder, dict) and isinstance(encoder.get("name"), str))
        ):
            raise ConfigError(
                f"branches.{name}.encoder must be a name (e.g. resnet50, gru) or a mapping with a `name`, "
                f"got {encoder!r}"
            )
    _check_branch_training(config)
    if config.loss.name == "vicreg" and len(names) < 2 and not config.loss.pairs:
        raise ConfigError(f"VICReg compares branches in pairs; the config has only {names}")
    for pair in config.loss.pairs or []:
        if len(pair) != 2:
            raise ConfigError(f"loss.pairs entries must be two branch names, got {pair}")
        for b in pair:
            if b not in names:
                raise ConfigError(f"loss.pairs names branch {b!r}, which is not a branch{_nearest(b, names)}")
    for section in ("train", "eval"):
        data = getattr(config.data, section)
        if data is None:
            continue
        if "format" not in data:
            raise ConfigError(f"data.{section} needs a `format` ({', '.join(DATA_FORMATS)})")
        if format_keys is not None:
            valid = format_keys(str(data["format"]))
            if valid is None:
                raise ConfigError(
                    f"data.{section}.format is {data['format']!r}{did_you_mean(data['format'], DATA_FORMATS)}; "
                    f"known formats: {', '.join(DATA_FORMATS)}"
                )
            for key in data:
                if key != "format" and key not in valid:
                    renamed = RENAMED_DATA_KEYS.get(key)
                    hint = (f"; it is called {renamed!r} (every caption source names its caption file `captions` "
                            f"and its image folder `images`)" if renamed in valid
                            else _nearest(key, sorted(valid | {"format"})))
                    raise ConfigError(f"unknown config key 'data.{section}.{key}' for format {data['format']!r}{hint}")


def _check_ranges(config: RunConfig) -> None:
    """Numbers that parse but would train silently wrong (a negative clip flips the gradient) or fail deep inside."""
    t, o, loss = config.train, config.train.optimizer, config.loss
    positive = {"train.optimizer.lr": o.lr, "train.optimizer.base_lr": o.base_lr, "train.grad_clip": t.grad_clip,
                "eval.batch_size": config.eval.batch_size}
    non_negative = {
        "train.optimizer.weight_decay": o.weight_decay, "train.optimizer.momentum": o.momentum,
        "train.warmup_steps": t.warmup_steps, "train.warmup_epochs": t.warmup_epochs,
        "train.min_lr_ratio": t.min_lr_ratio, "data.workers": config.data.workers,
        "loss.invariance_weight": loss.invariance_weight, "loss.variance_weight": loss.variance_weight,
        "loss.covariance_weight": loss.covariance_weight,
    }
    for key, value in positive.items():
        if value is not None and not value > 0:  # `not >` also catches NaN
            raise ConfigError(f"{key} must be positive, got {value}")
    for key, value in non_negative.items():
        if value is not None and not value >= 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    for key in ("keep_checkpoints", "max_consecutive_skips"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {getattr(t, key)}")
    for b in config.eval.branches or []:
        if b not in config.branches:
            raise ConfigError(f"eval.branches names {b!r}, which is not a branch{_nearest(b, list(config.branches))}")


def _check_micro_batch(config: RunConfig) -> None:
    """``train.micro_batch_size`` splits the global batch into equal chunks (per process: checked at launch)."""
    t = config.train
    m = t.micro_batch_size
    if m is None:
        return
    if m < 1 or m > t.batch_size:
        raise ConfigError(f"train.micro_batch_size is {m}; it must be between 1 and train.batch_size ({t.batch_size})")
    if t.batch_size % m:
        raise ConfigError(
            f"train.micro_batch_size {m} does not divide train.batch_size {t.batch_size}; choose a divisor "
            f"(e.g. {divisor_near(t.batch_size, m)})"
        )


def divisor_near(n: int, m: int) -> int:
    """The largest divisor of ``n`` not above ``m`` (a micro-batch size to suggest)."""
    return max(d for d in range(1, min(n, m) + 1) if n % d == 0)


def _check_branch_training(config: RunConfig) -> None:
    """``freeze`` / ``unfreeze_last`` / ``gradient_checkpointing``: sane alone, and one setting per shared encoder."""
    branches = config.branches
    for name, b in branches.items():
        if b.unfreeze_last is not None and (b.unfreeze_last < 0 or not b.freeze):
            raise ConfigError(
                f"branches.{name}.unfreeze_last is {b.unfreeze_last}; it counts the encoder's last layer groups that "
                f"still train under `freeze: true`: set freeze: true and a number >= 0"
            )
    for name, b in branches.items():
        owner = branches.get(b.shares) if b.shares else None
        if owner is None:
            continue
        for key in BRANCH_TRAINING_KEYS:
            mine, theirs = getattr(b, key), getattr(owner, key)
            if mine is not None and mine != theirs:
                raise ConfigError(
                    f"branches.{name}.{key} is {mine!r} but branch {b.shares!r}, whose encoder it shares, has "
                    f"{theirs!r}: one encoder trains one way; set {key} on {b.shares!r} only"
                )
