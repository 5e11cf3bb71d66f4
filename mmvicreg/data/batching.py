"""From raw samples to batches ``{branch: tensor}``: the one collate, the epoch sampler, the one loader builder.

Training, evaluation and ``mmvicreg.encode`` all batch through :func:`make_loader`, so a batch is made the same
way everywhere.

What it takes: ``preprocessors`` maps a branch name to a :class:`Preprocessor` ``(field, fn, pad_id)`` (a plain
3-tuple is accepted; :func:`mmvicreg.data.preprocess.branch_preprocessors` builds them from what a model declares):
``field`` is the raw sample key the branch reads (``"image"``, ``"caption"``, ...), ``fn`` turns ONE raw value into
a tensor (image: uint8 (3, H, W), normalised later on the device; text: 1-D LongTensor of token ids), and
``pad_id`` is the id that right-pads 1-D tensors to the longest in the batch (text), or None for tensors that are
stacked as they are. ``device_stage`` (:class:`~mmvicreg.data.preprocess.DeviceInput`) ends the loader: each batch
reaches its consumer on the device, as the model reads it.

Preprocessing runs inside ``BranchDataset.__getitem__``, hence in DataLoader workers. Two branches may read the
same field (two augmented views of one image for siamese training): each applies its own ``fn`` to it. When
every branch that reads ``"image"`` takes encoded images (``fn.accepts_encoded``: this library's transforms) and the
source can read them so (a :class:`~mmvicreg.data.protocols.SamplesEncoded`), images are read but not decoded
(``sample(i, encoded=True)``) and the transforms decode only what their crops need; an image whose decode fails
there goes back to the source's bad-data policy (a :class:`~mmvicreg.data.protocols.LoadSkips`), and the same
sample is read again.

Images a worker leaves out at load time (``on_bad_image: skip``) travel back with the batch it made (the collate
gathers them under ``SKIPPED_KEY``) and the loader :func:`make_loader` returns records them in the main
process's source before handing the batch on, so ``source.data_report()`` there counts every worker's skips.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from mmvicreg.data.device_decode import EncodedCrop, EncodedCrops
from mmvicreg.data.opencv_kernels import one_thread, use_one_thread
from mmvicreg.data.protocols import LoadSkips, ReadsEncoded, SamplesEncoded
from mmvicreg.data.sources.encoded import EncodedImage
from mmvicreg.data.sources.io import BadImageError
from mmvicreg.data.transforms import accepts_encoded

SKIPPED_KEY = "__skipped_images__"  # a worker's load-time skips, on their way to the main process


class Preprocessor(NamedTuple):
    """How one branch makes its input from a raw sample: read ``field``, apply ``fn``, pad with ``pad_id``."""

    field: str
    fn: Callable[[Any], torch.Tensor]
    pad_id: int | None = None


def as_preprocessor(name: str, spec: Any) -> Preprocessor:
    if not (isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], str) and callable(spec[1])):
        raise ValueError(f"preprocessor of branch {name!r} must be (field, fn, pad_id); got {spec!r}")
    return Preprocessor(*spec)


class BranchDataset(Dataset):
    """``source[i]`` turned into ``{branch: fn(sample[field])}`` for every branch.

    ``extra_fields`` are raw fields copied through unchanged under their own name (e.g. ``"label"`` for k-NN,
    ``"image_index"`` for retrieval); they must not collide with a branch name.
    """

    def __init__(self, source: Dataset, preprocessors: Mapping[str, Preprocessor | tuple],
                 extra_fields: Sequence[str] = ()) -> None:
        if not preprocessors:
            raise ValueError("preprocessors is empty: give at least one branch (name -> (field, fn, pad_id))")
        self.preprocessors = {name: as_preprocessor(name, spec) for name, spec in preprocessors.items()}
        clash = set(extra_fields) & set(preprocessors)
        if clash:
            raise ValueError(f"extra_fields {sorted(clash)} collide with branch names")
        self.source = source
        self.extra_fields = tuple(extra_fields)
        image_fns = [fn for field, fn, _ in self.preprocessors.values() if field == "image"]
        self.encoded = (isinstance(source, SamplesEncoded) and bool(image_fns)
                        and all(accepts_encoded(fn) for fn in image_fns))
        self.policy_source = isinstance(source, LoadSkips)  # late failures and workers' skips go back to it

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{branch: tensor, **extra_fields}``; in a DataLoader worker, plus ``SKIPPED_KEY``: the images the
        source left out while making it (``(index, image, reason)``, for the main process's report)."""
        item = self._item(index)
        skipped = self.source.take_load_skips() if self.policy_source else None
        if skipped and get_worker_info() is not None:  # in the main process the source has them already
            item[SKIPPED_KEY] = skipped
        return item

    def _item(self, index: int) -> dict[str, Any]:
        """Sample ``index`` preprocessed. Read undecoded, an image whose decode fails goes back to the source's
        policy (raise, or leave it out) and the same sample is read again: the source then hands the next good
        image in its place (with one of that image's captions), whatever a sample index means to it (an image,
        or one of its (image, caption) pairs under ``pairs: all``)."""
        if not self.encoded:
            return preprocess_sample(self.source[index], self.preprocessors, self.extra_fields)
        while True:  # each failure marks one more image bad (or raises): this ends
            sample = self.source.sample(index, encoded=True)
            try:
                return preprocess_sample(sample, self.preprocessors, self.extra_fields)
            except BadImageError as exc:
                image = sample.get("image")
                if not (self.policy_source and isinstance(image, EncodedImage) and image.index is not None):
                    raise  # not an image of a source's store read undecoded: nothing to hand back
                self.source.reject_image(image.index, exc)


def preprocess_sample(sample: Mapping[str, Any], preprocessors: Mapping[str, Preprocessor],
                      extra_fields: Sequence[str] = ()) -> dict[str, Any]:
    """``{branch: fn(sample[field])}`` for every branch, plus the ``extra_fields`` copied through unchanged."""
    out: dict[str, Any] = {}
    for name, (field, fn, _) in preprocessors.items():
        if field not in sample:
            raise KeyError(f"branch {name!r} reads field {field!r}, but samples of this source have "
                           f"{sorted(sample)}; select the branches that read those fields")
        out[name] = fn(sample[field])
    for field in extra_fields:
        out[field] = sample[field]
    return out


class RawItems(Dataset):
    """A sequence of raw items (PIL images, strings) as samples ``{field: item}``, e.g. for ``encode``.

    ``sample(i, encoded=True)`` reads item ``i`` undecoded when the sequence can (a source's ``LazyImages``:
    ``encoded(i)``), so that an image transform that decodes (the eval transform) decodes a huge image reduced.
    """

    def __init__(self, items: Sequence[Any], field: str) -> None:
        self.items, self.field = items, field

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {self.field: self.items[index]}

    def sample(self, index: int, encoded: bool = False) -> dict[str, Any]:
        if encoded and isinstance(self.items, ReadsEncoded):
            return {self.field: self.items.encoded(index)}
        return self[index]


def collate(items: Sequence[Mapping[str, Any]], pad_ids: Mapping[str, int | None]) -> dict[str, Any]:
    """The one collate: ``{key: batch}`` from a list of ``{key: value}`` items.

    A key in ``pad_ids`` is a branch: its tensors are stacked (``pad_id`` None: they must share a shape) or,
    1-D id tensors, right-padded to the longest with ``pad_id``; its undecoded crops (``decode_on: device``) are
    kept as one :class:`~mmvicreg.data.device_decode.EncodedCrops`. Any other key (labels, indices) goes through
    ``default_collate``, except ``SKIPPED_KEY``: the items' lists of skipped images, joined into one.
    """
    batch: dict[str, Any] = {}
    skipped = [entry for item in items for entry in item.get(SKIPPED_KEY, ())]
    if skipped:
        batch[SKIPPED_KEY] = skipped
    for key in (k for k in items[0] if k != SKIPPED_KEY):
        values = [item[key] for item in items]
        if key not in pad_ids:
            batch[key] = default_collate(values)
        elif isinstance(values[0], EncodedCrop):
            batch[key] = EncodedCrops(values)
        elif pad_ids[key] is None:
            batch[key] = torch.stack(values)
        else:
            batch[key] = pad_sequence(values, batch_first=True, padding_value=pad_ids[key])
    return batch


class BranchCollator:
    """``collate`` bound to the branches' pad ids (a picklable object, for DataLoader workers)."""

    def __init__(self, pad_ids: Mapping[str, int | None]) -> None:
        self.pad_ids = dict(pad_ids)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(items, self.pad_ids)


def collate_branches(pad_ids: Mapping[str, int | None]) -> BranchCollator:
    """A picklable collate function for ``{branch: tensor}`` items (``pad_ids``: branch -> pad id or None)."""
    return BranchCollator(pad_ids)


class EpochBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch shuffling into full global batches; each process takes its slice of every batch.

    Used instead of ``accelerator.prepare(dataloader)`` because resuming mid-epoch must replay exactly the same
    batches: the order depends only on (seed, epoch), and ``set_epoch(epoch, start)`` skips the ``start``
    batches already consumed. ``global_batch`` is split evenly over ``world`` processes; the last incomplete
    global batch is dropped.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.local = global_batch // world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.global_batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        for b in range(self.start, self.n // self.global_batch):
            first = b * self.global_batch + self.rank * self.local
            yield order[first : first + self.local]


class BranchLoader(DataLoader):
    """A DataLoader over a :class:`BranchDataset` that records, in the main process, the images its workers left
    out at load time (``SKIPPED_KEY`` of each batch, taken off before the batch is handed on).

    ``device_stage`` (e.g. :class:`~mmvicreg.data.preprocess.DeviceInput`), when given, is the last stage: each
    batch goes through it (to the device, as the model reads it) before it is handed on.

    Without workers the main process runs the transforms, with OpenCV on one thread while it iterates
    (:func:`~mmvicreg.data.opencv_kernels.one_thread`); each worker sets its own (:func:`seed_worker`)."""

    def __init__(self, *args: Any, device_stage: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device_stage = device_stage

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        source = self.dataset.source
        with one_thread() if self.num_workers == 0 else contextlib.nullcontext():
            for batch in super().__iter__():
                skipped = batch.pop(SKIPPED_KEY, None)
                if skipped and isinstance(source, LoadSkips):
                    source.record_load_skips(skipped)
                yield self.device_stage(batch) if self.device_stage is not None else batch


def seed_worker(worker_id: int) -> None:
    """A DataLoader worker's init: numpy seeded from the worker's torch seed (torch seeds torch and ``random``
    from the loader's generator, but leaves numpy alone), and OpenCV on one thread (the loader parallelises over
    workers; an OpenCV pool in a forked worker can hang it)."""
    np.random.seed(torch.initial_seed() % 2**32)
    use_one_thread()


def make_loader(
    dataset: Dataset,
    preprocessors: Mapping[str, Preprocessor | tuple],
    *,
    batch_size: int | None = None,
    batch_sampler: Sampler[list[int]] | None = None,
    train: bool = False,
    workers: int = 0,
    pin_memory: bool | None = None,
    seed: int = 0,
    extra_fields: Sequence[str] = (),
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
    device_stage: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> BranchLoader:
    """A DataLoader (:class:`BranchLoader`) of ``{branch: tensor}`` batches over the raw samples of ``dataset``;
    what its workers skip at load time is recorded in ``dataset``'s bad-data report as the batches arrive.

    Give ``batch_size`` or ``batch_sampler``. With ``batch_size``, ``train=True`` shuffles with a generator
    seeded by ``seed`` and drops the last incomplete batch, because the variance and covariance statistics need
    full batches; ``train=False`` keeps the order and every sample. With ``batch_sampler`` (e.g.
    :class:`EpochBatchSampler`) the sampler alone decides the batches.

    The loader always owns a generator seeded with ``seed``, so creating an iterator (e.g. mid-epoch, on
    resume) never draws from the global torch RNG that the augmentations use. With ``workers > 0`` the same seed
    and worker count also repeat the augmentations and caption draws (each worker's torch, ``random`` and numpy
    RNGs are seeded from the generator); with ``workers=0`` those use the process's global RNGs.
    ``pin_memory`` defaults to whether CUDA is available. ``device_stage`` turns each batch into the model's input
    (:class:`~mmvicreg.data.preprocess.DeviceInput`); without it, batches are CPU tensors as collated.
    """
    if (batch_size is None) == (batch_sampler is None):
        raise ValueError("give make_loader either batch_size or batch_sampler (exactly one)")
    preprocessors = {name: as_preprocessor(name, spec) for name, spec in preprocessors.items()}
    branches = BranchDataset(dataset, preprocessors, extra_fields)
    batching: dict[str, Any] = {"batch_sampler": batch_sampler}
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if train and len(branches) < batch_size:
            raise ValueError(f"the source has {len(branches)} samples, fewer than one training batch of "
                             f"{batch_size} (the last incomplete batch is dropped); lower batch_size")
        batching = {"batch_size": batch_size, "shuffle": train, "drop_last": train}
    return BranchLoader(
        branches,
        **batching,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        collate_fn=collate_branches({name: spec.pad_id for name, spec in preprocessors.items()}),
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=seed_worker if workers > 0 else None,
        persistent_workers=persistent_workers and workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
        device_stage=device_stage,
    )
