"""From raw samples to batches ``{branch: tensor}``.

Contract with the model side: ``preprocessors`` maps a branch name to ``(field, fn, pad_id)``:
``field`` is the raw sample key the branch reads (``"image"``, ``"caption"``, ...), ``fn`` turns ONE raw value
into a tensor (image: float (3, H, W); text: 1-D LongTensor of token ids), and ``pad_id`` is the id that
right-pads 1-D tensors to the longest in the batch (text), or None for tensors that are stacked as they are.

Preprocessing runs inside ``BranchDataset.__getitem__``, hence in DataLoader workers. Two branches may read the
same field (two augmented views of one image for siamese training): each applies its own ``fn`` to it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, default_collate

Preprocessor = tuple[str, Callable[[Any], torch.Tensor], "int | None"]


class BranchDataset(Dataset):
    """``source[i]`` turned into ``{branch: fn(sample[field])}`` for every branch.

    ``extra_fields`` are raw fields copied through unchanged under their own name (e.g. ``"label"`` for k-NN,
    ``"image_index"`` for retrieval); they must not collide with a branch name.
    """

    def __init__(self, source: Dataset, preprocessors: Mapping[str, Preprocessor],
                 extra_fields: Sequence[str] = ()) -> None:
        if not preprocessors:
            raise ValueError("preprocessors is empty: give at least one branch (name -> (field, fn, pad_id))")
        for name, spec in preprocessors.items():
            if not (isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], str) and callable(spec[1])):
                raise ValueError(f"preprocessor of branch {name!r} must be (field, fn, pad_id); got {spec!r}")
        clash = set(extra_fields) & set(preprocessors)
        if clash:
            raise ValueError(f"extra_fields {sorted(clash)} collide with branch names")
        self.source = source
        self.preprocessors = dict(preprocessors)
        self.extra_fields = tuple(extra_fields)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.source[index]
        out: dict[str, Any] = {}
        for name, (field, fn, _) in self.preprocessors.items():
            if field not in sample:
                raise KeyError(f"branch {name!r} reads field {field!r}, but samples of this source have "
                               f"{sorted(sample)}; select the branches that read those fields")
            out[name] = fn(sample[field])
        for field in self.extra_fields:
            out[field] = sample[field]
        return out


class BranchCollator:
    """Stacks each branch's tensors, right-padding 1-D ones with the branch's pad id; extras via default_collate."""

    def __init__(self, pad_ids: Mapping[str, int | None]) -> None:
        self.pad_ids = dict(pad_ids)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if key not in self.pad_ids:
                batch[key] = default_collate(values)
            elif self.pad_ids[key] is None:
                batch[key] = torch.stack(values)
            else:
                batch[key] = pad_sequence(values, batch_first=True, padding_value=self.pad_ids[key])
        return batch


def collate_branches(pad_ids: Mapping[str, int | None]) -> BranchCollator:
    """A picklable collate function for ``{branch: tensor}`` items (``pad_ids``: branch -> pad id or None)."""
    return BranchCollator(pad_ids)


def select_branches(preprocessors: Mapping[str, Preprocessor], field: str) -> dict[str, Preprocessor]:
    """The branches that read ``field``: e.g. the image branches to embed a retrieval set's images."""
    return {name: spec for name, spec in preprocessors.items() if spec[0] == field}


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker (torch and `random`) from the loader's generator, but leaves numpy alone.
    np.random.seed(torch.initial_seed() % 2**32)


def make_loader(
    source: Dataset,
    preprocessors: Mapping[str, Preprocessor],
    batch_size: int,
    train: bool,
    workers: int = 0,
    pin_memory: bool | None = None,
    seed: int = 0,
    extra_fields: Sequence[str] = (),
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """A DataLoader of ``{branch: tensor}`` batches over ``source``.

    ``train=True``: shuffled by a generator seeded with ``seed`` and the last incomplete batch dropped, because
    the variance and covariance statistics need full batches. ``train=False``: in order, every sample kept.
    With ``workers > 0`` the same seed and worker count also repeat the augmentations and caption draws (each
    worker's RNG is seeded from the generator); with ``workers=0`` those use the process's global torch RNG.
    ``pin_memory`` defaults to whether CUDA is available.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    dataset = BranchDataset(source, preprocessors, extra_fields)
    if train and len(dataset) < batch_size:
        raise ValueError(f"the source has {len(dataset)} samples, fewer than one training batch of {batch_size} "
                         f"(the last incomplete batch is dropped); lower batch_size")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        collate_fn=collate_branches({name: spec[2] for name, spec in preprocessors.items()}),
        generator=generator,
        worker_init_fn=_seed_worker if workers > 0 else None,
        persistent_workers=persistent_workers and workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
    )
