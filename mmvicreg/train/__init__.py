"""Training: ``train(config)`` runs the loop of ``loop.py`` over the parts ``setup.py`` builds from a config."""

from mmvicreg.train.callbacks import Callback
from mmvicreg.train.checkpoint import (
    CheckpointError,
    TrainState,
    UnsafeCheckpointError,
    latest_checkpoint,
    safe_torch_load,
    verify_checkpoint,
)
from mmvicreg.train.loop import train
from mmvicreg.train.preempt import PREEMPTED_EXIT_CODE, Preempted
from mmvicreg.train.step import NonFiniteLossError

__all__ = [
    "Callback",
    "CheckpointError",
    "NonFiniteLossError",
    "PREEMPTED_EXIT_CODE",
    "Preempted",
    "TrainState",
    "UnsafeCheckpointError",
    "latest_checkpoint",
    "safe_torch_load",
    "train",
    "verify_checkpoint",
]
