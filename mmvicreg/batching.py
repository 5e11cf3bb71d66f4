"""Turn a list of preprocessed items into one batch tensor: stack images, right-pad token ids."""

from __future__ import annotations

from typing import Sequence

import torch


def collate_items(items: Sequence[torch.Tensor], pad_id: int | None) -> torch.Tensor:
    """Stack same-shape tensors (``pad_id`` None), or right-pad 1-D id tensors to the longest with ``pad_id``."""
    if pad_id is None:
        return torch.stack(list(items))
    return torch.nn.utils.rnn.pad_sequence(list(items), batch_first=True, padding_value=pad_id)
