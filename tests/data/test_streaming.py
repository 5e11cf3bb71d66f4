"""The epoch plan of streamed data: every sample once per epoch over processes and workers, equal batch counts,
and a resumed iterator that gives the very batches an uninterrupted one would."""

from collections import Counter

import pytest
import torch

from mmvicreg.data.streaming import EpochPlan, StreamDataset, StreamLoader


class Counts:
    def __init__(self):
        self.counts = Counter()

    def add(self, reason):
        self.counts[reason] += 1

    def merge(self, other):
        self.counts.update(other.counts)

    def as_dict(self):
        return dict(self.counts)


class FakeShards:
    """Shards of integer keys; a sample is bad when its key is in ``bad``."""

    resample = False

    def __init__(self, sizes, shuffle_buffer=8, bad=()):
        self.sizes, self.shuffle_buffer, self.bad = list(sizes), shuffle_buffer, set(bad)
        self.counts = Counts()
        starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.keys = [list(range(s, s + n)) for s, n in zip(starts, self.sizes)]

    @property
    def num_shards(self):
        return len(self.keys)

    def new_counts(self):
        return Counts()

    def raw_samples(self, shard, first, end):
        yield from ({"key": k} for k in self.keys[shard][first:end])


    def decode(self, raw, counts):
        if raw["key"] in self.bad:
            counts.add("corrupt image")
            return None
        return {"key": raw["key"], "noise": None}


class UnsizedShards(FakeShards):
    """Shards whose sizes are not known up front (pipe: shards without sizes.json)."""

    def __init__(self, sizes, **options):
        super().__init__(sizes, **options)
        self.urls, self.sizes = [f"pipe:cat {i}.tar" for i in range(len(sizes))], None


KEY = {"key": ("key", lambda k: torch.tensor([k, int(torch.randint(0, 10**6, ()))]), None)}


def _keys(batch):
    return batch["key"][:, 0].tolist()


@pytest.mark.parametrize("world, workers", [(1, 1), (2, 1), (2, 3), (3, 2)])
def test_every_sample_is_planned_once_and_processes_step_together(world, workers):
    sizes = (7, 13, 5, 9, 11, 1)
    plans = [EpochPlan(sizes, 12, seed=3, epoch=1, rank=r, world=world, workers=workers) for r in range(world)]
    steps = plans[0].steps
    assert steps == sum(sizes) // 12
    seen = Counter()
    for plan in plans:
        assert sum(len(plan.batches_of(o)) for o in range(workers)) == steps  # each process: every batch once
        for owner in range(workers):
            for shard, first, end in plan.segments(owner):
                seen.update((shard, i) for i in range(first, end))
    assert max(seen.values()) == 1 and len(seen) == steps * 12  # once each; only the final partial batch is left


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_reads_each_key_once_and_epochs_differ(workers):
    source = FakeShards((10, 7, 13, 6), shuffle_buffer=5)
    epochs = []
    for epoch in range(2):
        keys = []
        for rank in range(2):  # two processes, each its own loader
            loader = StreamLoader(StreamDataset(source, KEY, 8, seed=0, rank=rank, world=2, workers=workers), workers)
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader) == 36 // 8 and all(len(_keys(b)) == 4 for b in batches)
            keys += [k for b in batches for k in _keys(b)]
        assert len(keys) == len(set(keys)) == 32
        epochs.append(keys)
    assert epochs[0] != epochs[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_epoch_gives_the_batches_of_an_uninterrupted_one(workers):
    source = FakeShards((10, 7, 13, 6, 12), shuffle_buffer=6)
    loader = StreamLoader(StreamDataset(source, KEY, 4, seed=1, workers=workers), workers)
    loader.set_epoch(2)
    whole = [b["key"] for b in loader]
    for start in (1, 3, 6):
        loader.set_epoch(2, start)
        resumed = [b["key"] for b in loader]
        assert len(resumed) == len(whole) - start
        for a, b in zip(whole[start:], resumed):
            assert torch.equal(a, b)  # the same keys and the same augmentation draws


def test_bad_samples_are_replaced_within_their_batch_and_counted():
    source = FakeShards((16, 16), shuffle_buffer=0, bad={3, 20})
    loader = StreamLoader(StreamDataset(source, KEY, 8, seed=0), 0)
    loader.set_epoch(0)
    keys = [k for b in loader for k in _keys(b)]
    assert len(keys) == 32 and not {3, 20} & set(keys)
    assert source.counts.as_dict() == {"corrupt image": 2}


@pytest.mark.parametrize("workers", [0, 2])
def test_shards_of_unknown_size_give_samples_per_epoch_and_resume_exactly(workers):
    source = UnsizedShards((10, 7, 13, 6, 12), shuffle_buffer=4)
    lengths, first = [], None
    for rank in range(2):
        loader = StreamLoader(StreamDataset(source, KEY, 8, seed=0, rank=rank, world=2, workers=workers,
                                            samples_per_epoch=100), workers)
        loader.set_epoch(0)
        batches = [b["key"] for b in loader]
        lengths.append(len(batches))
        first = first or batches
    assert lengths == [12, 12]  # 100 // 8 steps for every process, more than the data holds: shards come again
    loader = StreamLoader(StreamDataset(source, KEY, 8, seed=0, rank=0, world=2, workers=workers,
                                        samples_per_epoch=100), workers)
    loader.set_epoch(0, 5)
    assert all(torch.equal(a, b) for a, b in zip(first[5:], [b["key"] for b in loader]))


def test_resampled_shards_draw_an_epoch_of_the_requested_size():
    source = FakeShards((10, 7, 13, 6, 12), shuffle_buffer=4)
    source.resample, source.urls = True, [str(i) for i in range(5)]
    loader = StreamLoader(StreamDataset(source, KEY, 8, seed=0, samples_per_epoch=200), 0)
    loader.set_epoch(0)
    keys = [k for b in loader for k in _keys(b)]
    assert len(keys) == 48 // 8 * 8 and len(set(keys)) < len(keys)  # capped at the data's 48; shards repeat
