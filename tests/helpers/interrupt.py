"""A run that dies right after a given step's checkpoint (the state a crash leaves), for resume tests."""

from mmvicreg.train import Callback


class Interrupted(Exception):
    """Raised by :class:`DieAfterCheckpoint`: the training run stops as a killed process would."""


class DieAfterCheckpoint(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_checkpoint_end(self, step, path):
        if step == self.step:
            raise Interrupted
