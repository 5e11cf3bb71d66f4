"""What a resumed run may change: the config of the checkpoint against the config of the resumed run.

A checkpoint restores the weights, the optimiser (its learning rates and weight decays included), the
scheduler's base rates, the RNGs and the data position. So a resumed run that changes the model, the objective,
the data, the batch size, the seed or the optimiser's kind would be recorded in ``config.yaml`` and silently not
be what ran (or would shift where the data resumes); those differences are refused, each named. Settings read
afresh on every run (evaluation, logging, checkpoint cadence, the run's length and schedule shape, precision,
micro-batching, workers) are applied, and so are a new learning rate and weight decay (written over the restored
optimiser's); each change is logged.

The checkpoint's config is the ``config.yaml`` written inside it; checkpoints from before that file existed are
compared with the run folder's ``config.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from mmvicreg.config import ConfigError, RunConfig

CHECKPOINT_CONFIG = "config.yaml"

# Restored with the optimiser, then written over by the config's (optim.apply_resumed_lr).
LR_KEYS = ("train.optimizer.lr", "train.optimizer.base_lr", "train.optimizer.weight_decay")
# Dotted keys (or prefixes ending in ".") that a resumed run reads afresh, so a change takes effect.
MAY_CHANGE = (
    "output_dir", "resume", "overwrite", "eval.", "data.eval", "data.workers", "data.pin_memory",
    "train.max_steps", "train.epochs", "train.warmup_steps", "train.warmup_epochs", "train.min_lr_ratio",
    "train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "train.rankme_every",
    "train.eval_every", "train.progress", "train.trackers", "train.project", "train.run_name",
    "train.tracker_init", "train.on_nonfinite", "train.max_consecutive_skips", "train.micro_batch_size",
    "train.mixed_precision", "train.cpu", "train.grad_clip", "train.channels_last", "train.tf32",
    "train.optimizer.fused", "train.sync_to", "train.requeue", "train.dist_timeout",
    *LR_KEYS,
)
MAY_CHANGE_IN_BRANCH = ("gradient_checkpointing",)  # memory only: the same numbers


def flat_tree(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train.batch_size": 256, ...}``: nested mappings flattened, other values (lists included) as they are."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_tree(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def may_change(key: str) -> bool:
    if any(key == k or (k.endswith(".") and key.startswith(k)) or key.startswith(k + ".") for k in MAY_CHANGE):
        return True
    parts = key.split(".")
    return len(parts) == 3 and parts[0] == "branches" and parts[2] in MAY_CHANGE_IN_BRANCH


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``[(key, saved value, current value)]`` for every dotted key that differs.

    A key the saved config lacks is compared only when the current value is not the library's default (a
    setting added to the library since the checkpoint was written is no difference).
    """
    old, new = flat_tree(saved), flat_tree(current)
    defaults = flat_tree(RunConfig().to_dict())
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if key not in old and key in defaults and after == defaults[key]:
            continue
        if before != after:
            changes.append((key, before, after))
    return changes


def read_saved_config(checkpoint: Path) -> dict[str, Any] | None:
    """The config a checkpoint was written with (see the module docstring), or None when none is found."""
    for path in (checkpoint / CHECKPOINT_CONFIG, checkpoint.parent.parent / CHECKPOINT_CONFIG):
        if path.is_file():
            try:
                tree = yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                raise ConfigError(f"{path} is not valid YAML; it records the config the checkpoint was written "
                                  f"with: restore it") from None
            return tree if isinstance(tree, dict) else None
    return None


def check_resume(config: RunConfig, checkpoint: Path, say: Callable[[str], None]) -> list[str]:
    """Refuse (``ConfigError`` naming every key) what a resumed run cannot change; ``say`` each applied change.

    Returns the dotted keys that changed. The learning-rate keys (:data:`LR_KEYS`) are applied by the caller after
    the checkpoint is restored (``optim.apply_resumed_lr``); every other allowed key is read afresh anyway.
    """
    saved = read_saved_config(checkpoint)
    if saved is None:
        say(f"resume: {checkpoint} records no config; the settings cannot be compared with the run's")
        return []
    changes = config_changes(saved, config.to_dict())
    refused = [c for c in changes if not may_change(c[0])]
    if refused:
        listed = "; ".join(f"{key} {before!r} -> {after!r}" for key, before, after in refused)
        raise ConfigError(
            f"resume=true: these settings differ from the checkpoint {checkpoint} and cannot change in a resumed "
            f"run: {listed}. Set them back (the run's config.yaml holds them), or start a new run in another "
            f"output_dir"
        )
    for key, before, after in changes:
        if key not in ("resume", "overwrite", "output_dir"):
            say(f"resume: {key} {before!r} -> {after!r} (applied)")
    return [key for key, _, _ in changes]
