"""``format: webdataset``: a source of webdataset tar shards, streamed (never indexed or held in memory).

``ShardSource(split, shards, shuffle_buffer=1000, on_bad_image="error", on_bad_caption="error")``: ``shards``
as a brace pattern, a list or a ``.txt`` file listing them, local files or ``pipe:`` commands
(:func:`~mmvicreg.data.sources.shards.expand_shards`). The sample count of every shard must be known before
training (``sizes.json`` beside the shards, as ``mmvicreg shards`` and open_clip write it, or a scan of local
tar headers), because the epoch plan (:mod:`mmvicreg.data.streaming`) gives each process and worker its exact
range of the stream. What :class:`~mmvicreg.data.streaming.StreamDataset` asks of a source lives here:
``sizes``, ``shuffle_buffer``, ``raw_samples``, ``decode``, ``new_counts``.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Sequence

from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.shards import BadDataCounts, decode_sample, expand_shards, read_shard, shard_sizes

MISSING = "__missing__"  # a raw sample the shard promised (sizes) but could not give (truncated)


class ShardSource:
    """Webdataset shards as a streamed training source (module docstring)."""

    streaming = True

    def __init__(self, split: str, shards: str | Sequence[str], shuffle_buffer: int = 1000,
                 on_bad_image: str = "error", on_bad_caption: str = "error") -> None:
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be a number of samples >= 0, got {shuffle_buffer!r}")
        self.split, self.shuffle_buffer = split, shuffle_buffer
        self.urls = expand_shards(shards)
        self.sizes = shard_sizes(self.urls)
        self.policy = BadDataPolicy(on_bad_image, on_bad_caption)
        self.counts = BadDataCounts()  # what the training loader met, summed over its batches
        self.name = f"webdataset:{len(self.urls)} shards"

    def __len__(self) -> int:
        return sum(self.sizes)

    def new_counts(self) -> BadDataCounts:
        return BadDataCounts()

    def raw_samples(self, shard: int, first: int, end: int) -> Iterator[dict[str, Any]]:
        """Samples ``first..end-1`` of shard ``shard``, undecoded; a shard cut short pads with ``MISSING``."""
        got = 0
        for raw in itertools.islice(read_shard(self.urls[shard], skip=first), end - first):
            got += 1
            yield raw
        for _ in range(end - first - got):
            yield {MISSING: self.urls[shard]}

    def decode(self, raw: dict[str, Any], counts: BadDataCounts) -> dict[str, Any] | None:
        """``{"image", "caption" | "label", ...}``, or None for a bad sample (counted) under a skip policy."""
        if MISSING in raw:
            if self.policy.on_bad_image == "error":
                raise ValueError(f"shard {raw[MISSING]} holds fewer samples than its size says (truncated?); "
                                 f"set on_bad_image: skip to train past it, or rewrite it")
            counts.add("truncated shard")
            return None
        return decode_sample(raw, self.policy, counts)

    def iter_captions(self) -> Iterator[str]:
        """Every caption of the shards, in shard order (for a vocabulary learned from the training captions)."""
        for url in self.urls:
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
        reasons = self.counts.as_dict()
        captions = {k: v for k, v in reasons.items() if "caption" in k}
        images = {k: v for k, v in reasons.items() if k not in captions}
        return {"source": self.name, "samples": len(self), "skipped_images": sum(images.values()),
                "skipped_image_reasons": images, "skipped_captions": sum(captions.values()),
                "skipped_caption_reasons": captions}
