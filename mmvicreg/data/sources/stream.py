"""``format: webdataset``: a source of webdataset tar shards, streamed (never indexed or held in memory).

``ShardSource(split, shards, shuffle_buffer=1000, on_bad_image="error", on_bad_caption="error")``: ``shards`` as a
brace pattern, a list or a ``.txt`` file listing them, local files, URLs or, with ``allow_pipe=True`` and written in
``shards`` itself, ``pipe:`` commands (:func:`~mmvicreg.data.sources.shard_list.expand_shards`). The sample count of
every shard must be known before training (``sizes.json`` beside the shards, as ``mmvicreg shards`` and open_clip
write it, or a scan of local tar headers), because the epoch plan (:mod:`mmvicreg.data.streaming`) gives each
process and worker its exact range of the stream. What :class:`~mmvicreg.data.streaming.StreamDataset` asks of a
source lives here: ``sizes``, ``shuffle_buffer``, ``raw_samples``, ``decode``, ``new_counts``. ``resample: true``
draws the shards as open_clip's ``--dataset-resampled`` does (each reader its own shards of each new permutation,
without end; an epoch is ``train.samples_per_epoch`` samples, default the data's count), which is also how shards of
unknown size are read.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Sequence

from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.shard_list import expand_shards
from mmvicreg.data.sources.shards import BadDataCounts, decode_sample, read_shard, shard_sizes

MISSING = "__missing__"  # a raw sample the shard promised (sizes) but could not give (truncated)


def missing_sample(url: str, reason: str, detail: str) -> dict[str, Any]:
    """The stand-in for a sample a shard promised but could not give: the plan's counts stay whole."""
    return {MISSING: url, "__reason__": reason, "__detail__": detail}


def reject_missing(raw: dict[str, Any], policy: BadDataPolicy, counts: BadDataCounts) -> None:
    """A :func:`missing_sample` under ``on_bad_image``: one line under ``error``, else counted by its reason."""
    if policy.on_bad_image == "error":
        raise ValueError(f"{raw['__detail__']}; set on_bad_image: skip to train past it, or rewrite it")
    counts.add(raw["__reason__"])


class ShardSource:
    """Webdataset shards as a streamed training source (module docstring): a
    :class:`~mmvicreg.data.protocols.StreamedSource`."""

    def __init__(self, split: str, shards: str | Sequence[str], shuffle_buffer: int = 1000,
                 on_bad_image: str = "error", on_bad_caption: str = "error", resample: bool = False,
                 allow_pipe: bool = False, switch: str = "allow_pipe=True") -> None:
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be a number of samples >= 0, got {shuffle_buffer!r}")
        self.split, self.shuffle_buffer, self.resample = split, shuffle_buffer, bool(resample)
        self.urls = expand_shards(shards, allow_pipe, switch)  # switch: how messages name allow_pipe
        try:
            self.sizes: list[int] | None = shard_sizes(self.urls)
            self.unsized = ""
        except ValueError as e:  # pipe: shards without sizes.json: an epoch then needs train.samples_per_epoch
            self.sizes, self.unsized = None, str(e)
        self.policy = BadDataPolicy(on_bad_image, on_bad_caption)
        self.counts = BadDataCounts()  # what the training loader met, summed over its batches
        self.name = f"webdataset:{len(self.urls)} shards"

    def __len__(self) -> int:
        if self.sizes is None:
            raise TypeError(f"{self.name} has no known length: {self.unsized}")
        return sum(self.sizes)

    @property
    def num_shards(self) -> int:
        return len(self.urls)

    def new_counts(self) -> BadDataCounts:
        return BadDataCounts()

    def raw_samples(self, shard: int, first: int, end: int | None) -> Iterator[dict[str, Any]]:
        """Samples ``first..end-1`` (None: to the end) of shard ``shard``, undecoded; a shard cut short of
        ``end`` pads with ``MISSING``."""
        got = 0
        for raw in itertools.islice(read_shard(self.urls[shard], skip=first), None if end is None else end - first):
            got += 1
            yield raw
        url = self.urls[shard]
        for _ in range(0 if end is None else end - first - got):
            yield missing_sample(url, "truncated shard", f"shard {url} holds fewer samples than its size says "
                                                         f"(truncated?)")

    def decode(self, raw: dict[str, Any], counts: BadDataCounts) -> dict[str, Any] | None:
        """``{"image", "caption" | "label", ...}``, or None for a bad sample (counted) under a skip policy."""
        if MISSING in raw:
            reject_missing(raw, self.policy, counts)
            return None
        return decode_sample(raw, self.policy, counts)

    def iter_captions(self) -> Iterator[str]:
        """Every caption of the shards, in shard order (for a vocabulary learned from the training captions)."""
        for url in self.urls:  # pipe: shards are read once more here
            for raw in read_shard(url):
                text = raw.get("txt")
                if isinstance(text, bytes):
                    try:
                        text = text.decode("utf-8").strip()
                    except UnicodeDecodeError:
                        continue
                if text:
                    yield text

    def data_report(self) -> dict[str, Any]:
        return self.counts.report(self.name, len(self) if self.sizes is not None else -1)
