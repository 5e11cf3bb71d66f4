"""Streamed training data: shards read in a planned order, each sample once per epoch, resumable at any batch.

The plan of an epoch (:class:`EpochPlan`) depends only on (shard sizes, global batch, seed, epoch, processes,
workers):

* the shards are permuted by (seed, epoch) and read as one stream of ``N = Σ sizes`` samples;
* ``S = min(N, samples_per_epoch) // global_batch`` steps: only the final partial global batch is dropped;
* process ``r`` reads the contiguous range ``[r·S·b, (r+1)·S·b)`` of the stream (``b`` = its share of the batch),
  so every process yields the same ``S`` batches and no sample is read by two processes;
* inside a process, batch ``j`` belongs to worker ``j mod W``; each worker reads its own contiguous part of the
  process's range, through a shuffle buffer seeded by (seed, epoch, rank, worker), ``b`` samples per batch;
* a batch's augmentations draw from RNGs seeded by (seed, epoch, rank, batch index), not from a worker's history.

So batch ``j`` of an epoch is the same whether the run was interrupted or not: resuming at batch ``k`` (the
checkpoint's ``TrainState.batch``), each worker skips its batches before ``k`` without decoding them (raw bytes
through the same shuffle buffer). Hand-written because webdataset's own splitting (``split_by_node``,
``split_by_worker``, ``with_epoch``) gives ranks unequal sample counts and repeats or drops samples to even them
out, and its shuffle has no resumable position.

Bad samples (a corrupt image, a sample without caption, a truncated shard) follow ``on_bad_image`` /
``on_bad_caption``; under ``skip`` a bad sample's place in its batch is taken by another sample of the same
batch, so the plan holds, and the counts per reason travel with the batches to :class:`StreamLoader`.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmvicreg.data.batching import Preprocessor, as_preprocessor, collate, preprocess_sample
from mmvicreg.data.opencv_kernels import one_thread, use_one_thread
from mmvicreg.data.protocols import StreamedSource

BAD_KEY = "__bad_data__"


def _mix(*numbers: int) -> int:
    """A 63-bit seed from several integers (stable across processes and Python runs)."""
    return int(np.random.SeedSequence([int(n) & 0xFFFFFFFF for n in numbers]).generate_state(1, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class EpochPlan:
    """Which samples each process and worker reads in one epoch (module docstring)."""

    sizes: tuple[int, ...] | None  # None: not known up front (then samples_per_epoch sets the epoch)
    global_batch: int
    seed: int
    epoch: int
    rank: int = 0
    world: int = 1
    workers: int = 1
    samples_per_epoch: int | None = None
    shards: int = 0  # how many shards (needed when sizes is None)

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world

    @property
    def steps(self) -> int:
        if self.sizes is None:
            return (self.samples_per_epoch or 0) // self.global_batch
        n = sum(self.sizes)
        if self.samples_per_epoch is not None:
            n = min(n, self.samples_per_epoch)
        return n // self.global_batch

    def shard_order(self, cycle: int = 0) -> list[int]:
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, 0x5A4D, cycle))
        return torch.randperm(len(self.sizes) if self.sizes is not None else self.shards, generator=g).tolist()

    def shards_of(self, owner: int) -> Iterator[int]:
        """Shards of unknown size (open_clip's way): reader ``rank·workers + owner`` takes every
        ``world·workers``-th shard of each new seeded permutation, without end. Readers do not share shards
        within a permutation, but an epoch's sample count is ``samples_per_epoch``, not the data's."""
        slot, readers = self.rank * self.workers + owner, self.world * self.workers
        for cycle in itertools.count():
            order = self.shard_order(cycle)
            yield from order[slot % len(order) :: readers]

    def batches_of(self, owner: int) -> list[int]:
        """The batch indices of the epoch that worker ``owner`` makes: ``j ≡ owner (mod workers)``."""
        return list(range(owner, self.steps, self.workers))

    def segments(self, owner: int) -> list[tuple[int, int, int]]:
        """``(shard index, first sample, end sample)`` pieces of the stream worker ``owner`` reads, in order."""
        b = self.local_batch
        before = sum(len(self.batches_of(o)) for o in range(owner))
        start = self.rank * self.steps * b + before * b
        stop = start + len(self.batches_of(owner)) * b
        pieces, offset = [], 0
        for shard in self.shard_order():
            size = self.sizes[shard]
            lo, hi = max(start, offset), min(stop, offset + size)
            if lo < hi:
                pieces.append((shard, lo - offset, hi - offset))
            offset += size
            if offset >= stop:
                break
        return pieces


class ShuffleBuffer:
    """Reservoir-style shuffle of a stream through ``size`` slots, from a seeded generator (size ≤ 1: in order)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.rng = size, random.Random(seed)

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        if self.size <= 1:
            yield from items
            return
        buffer: list[Any] = []
        for item in items:
            if len(buffer) < self.size:
                buffer.append(item)
                continue
            i = self.rng.randrange(len(buffer))
            buffer[i], item = item, buffer[i]
            yield item
        self.rng.shuffle(buffer)
        yield from buffer


class StreamDataset(IterableDataset):
    """The batches of one process for one epoch of a streamed source (a
    :class:`~mmvicreg.data.protocols.StreamedSource`: shards, sizes, ``raw_samples(shard, skip, stop)``,
    ``decode(raw, counts)``).

    Call :meth:`set_epoch` before iterating (the training loop does, with the batches already consumed).
    ``extra_fields`` are decoded fields passed through unchanged (e.g. ``"key"``, to count what was read).
    """

    def __init__(self, source: StreamedSource, preprocessors: Mapping[str, Preprocessor | tuple], global_batch: int,
                 seed: int, rank: int = 0, world: int = 1, workers: int = 0, samples_per_epoch: int | None = None,
                 extra_fields: tuple[str, ...] = ()) -> None:
        self.source, self.extra_fields = source, tuple(extra_fields)
        self.preprocessors = {n: as_preprocessor(n, p) for n, p in preprocessors.items()}
        self.global_batch, self.seed, self.rank, self.world = global_batch, seed, rank, world
        self.workers, self.samples_per_epoch = max(1, workers), samples_per_epoch
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def plan(self) -> EpochPlan:
        sizes = tuple(self.source.sizes) if self.source.sizes is not None else None
        samples, shards = self.samples_per_epoch, self.source.num_shards
        if self.source.resample:  # shards drawn again and again, whatever their sizes
            samples, sizes = min(samples or sum(sizes or ()), sum(sizes)) if sizes else samples, None
        return EpochPlan(sizes, self.global_batch, self.seed, self.epoch, self.rank, self.world, self.workers,
                         samples, shards)

    def __len__(self) -> int:
        return max(0, self.plan().steps - self.start)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        slot = info.id if info is not None else 0
        plan = self.plan()
        owner = (slot + self.start) % plan.workers  # the DataLoader asks its workers in turn from slot 0
        batches = plan.batches_of(owner)
        skip = sum(1 for j in batches if j < self.start)
        raw = self._raw(plan.segments(owner)) if plan.sizes is not None else self._unsized(plan, owner)
        stream = ShuffleBuffer(self.source.shuffle_buffer, _mix(self.seed, self.epoch, self.rank, owner))(raw)
        b = plan.local_batch
        for n, j in enumerate(batches):
            raws = [next(stream) for _ in range(b)]
            if n >= skip:
                yield self._batch(raws, plan, j)

    def _raw(self, segments: list[tuple[int, int, int]]) -> Iterator[Any]:
        for shard, first, end in segments:
            yield from self.source.raw_samples(shard, first, end)

    def _unsized(self, plan: EpochPlan, owner: int) -> Iterator[Any]:
        for shard in plan.shards_of(owner):
            yield from self.source.raw_samples(shard, 0, None)

    def _batch(self, raws: list[Any], plan: EpochPlan, index: int) -> dict[str, Any]:
        """Decode, preprocess and collate one batch under RNGs seeded by (seed, epoch, rank, batch index)."""
        counts = self.source.new_counts()
        seed = _mix(self.seed, plan.epoch, self.rank, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = random.getstate()
            random.seed(seed)
            try:
                samples = [s for s in (self.source.decode(raw, counts) for raw in raws) if s is not None]
                if not samples:
                    raise ValueError(f"every sample of batch {index} of epoch {plan.epoch} is bad "
                                     f"({counts.as_dict()}); check the shards (mmvicreg shards rewrites them)")
                filler = random.Random(seed)
                samples += [filler.choice(samples) for _ in range(len(raws) - len(samples))]
                items = [preprocess_sample(s, self.preprocessors, self.extra_fields) for s in samples]
            finally:
                random.setstate(state)
        batch = collate(items, {name: p.pad_id for name, p in self.preprocessors.items()})
        batch[BAD_KEY] = counts
        return batch


class StreamLoader:
    """A DataLoader over a :class:`StreamDataset` that takes the bad-data counts off each batch and sums them.

    ``set_epoch(epoch, start)`` positions the next iteration (as ``EpochBatchSampler.set_epoch`` does for
    map-style data); each batch's counts are added to the source's ``counts`` (its ``data_report``). OpenCV runs
    on one thread in each worker, and in the main process while it iterates without workers. ``device_stage``, when
    given, is the last stage (:class:`~mmvicreg.data.preprocess.DeviceInput`: the batch as the model reads it).
    """

    def __init__(self, dataset: StreamDataset, workers: int = 0, pin_memory: bool = False,
                 device_stage: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.dataset = dataset
        self.counts = dataset.source.counts
        self.loader = DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                                 worker_init_fn=use_one_thread if workers > 0 else None)
        self.workers, self.device_stage = workers, device_stage

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.dataset.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with one_thread() if self.workers == 0 else contextlib.nullcontext():
            for batch in self.loader:
                self.counts.merge(batch.pop(BAD_KEY))
                yield self.device_stage(batch) if self.device_stage is not None else batch
