"""What the data package asks of a source, written as ``typing.Protocol`` classes instead of attribute probes.

Every protocol is ``runtime_checkable``: code that accepts several kinds of source asks ``isinstance(source, P)``,
which checks that the members are there (not their signatures; the classes named below implement them).

==================  ================================================================================================
StreamedSource      shards read as a stream (``ShardSource``, ``HFStreamSource``): what ``StreamDataset`` reads
SamplesEncoded      map-style samples whose image can come read but not decoded (``sample(i, encoded=True)``)
LoadSkips           a map-style source with a bad-data policy (``CaptionSource``, ``ImageSource``): late image
                    failures go back to it, and DataLoader workers' skips are recorded in the main process's copy
ReadsEncoded        a sequence of images that can hand image ``i`` undecoded (``LazyImages``)
DataReporting       anything with a bad-data report (every source of this package)
CaptionedSource     an image–caption source with a retrieval view (``CaptionSource.eval_set``)
DeclaresEncoded     a transform that says whether it takes an undecoded ``EncodedImage`` (``accepts_encoded``)
==================  ================================================================================================
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence, runtime_checkable


@runtime_checkable
class DataReporting(Protocol):
    """A source that reports what its bad-data policies left out (``data_report.json`` of a run)."""

    def data_report(self) -> dict[str, Any]:
        """Counts of samples, of what was skipped, and why."""
        ...


@runtime_checkable
class StreamedSource(Protocol):
    """Training data read as a stream of shards, never indexed (:mod:`mmvicreg.data.streaming`).

    ``sizes``: samples per shard, or None when not known up front (``unsized`` then says why and an epoch needs
    ``train.samples_per_epoch``); ``num_shards``; ``shuffle_buffer`` (samples); ``resample``: shards drawn again and
    again (open_clip's ``--dataset-resampled``); ``counts``: the bad samples the training loader met (summed from
    each batch's ``new_counts()``); ``name`` for messages.
    """

    sizes: list[int] | None
    unsized: str
    shuffle_buffer: int
    resample: bool
    counts: Any
    name: str

    @property
    def num_shards(self) -> int:
        """How many shards the stream is made of."""
        ...

    def new_counts(self) -> Any:
        """An empty tally of bad samples (``BadDataCounts``) for one batch."""
        ...

    def raw_samples(self, shard: int, first: int, end: int | None) -> Iterator[dict[str, Any]]:
        """Samples ``first..end-1`` (None: to the end) of shard ``shard``, undecoded."""
        ...

    def decode(self, raw: dict[str, Any], counts: Any) -> dict[str, Any] | None:
        """A raw sample decoded, or None for a bad one under a skip policy (counted in ``counts``)."""
        ...

    def iter_captions(self) -> Iterator[str]:
        """Every caption of the stream, once (for a vocabulary learned from the training captions)."""
        ...

    def data_report(self) -> dict[str, Any]:
        """What the training loader left out, per reason."""
        ...


@runtime_checkable
class SamplesEncoded(Protocol):
    """A map-style dataset whose samples can come with the image read but not decoded."""

    def sample(self, index: int, encoded: bool = False) -> dict[str, Any]:
        """Sample ``index``; ``encoded``: its ``"image"`` an ``EncodedImage`` the transforms decode."""
        ...


@runtime_checkable
class LoadSkips(Protocol):
    """A map-style source whose bad-data policy decides about images that fail after loading (their decode)."""

    def reject_image(self, i: int, exc: Exception) -> None:
        """Image ``i`` of the store failed: raise under ``on_bad_image: error``, else leave it out from now on."""
        ...

    def take_load_skips(self) -> list[tuple[int, str, str]]:
        """``(index, image, reason)`` of the images this process left out since the last call."""
        ...

    def record_load_skips(self, entries: Sequence[Sequence[Any]]) -> int:
        """Record images a DataLoader worker left out; returns how many were new."""
        ...


@runtime_checkable
class ReadsEncoded(Protocol):
    """A sequence of images that can hand image ``i`` read but not decoded (an ``EncodedImage``)."""

    def encoded(self, i: int) -> Any:
        """Image ``i`` undecoded."""
        ...


@runtime_checkable
class CaptionedSource(Protocol):
    """An image–caption source with a retrieval view (scored by image–text retrieval)."""

    def eval_set(self, max_captions: int | None = 5) -> Any:
        """The images in order with their first ``max_captions`` captions (a ``RetrievalSet``)."""
        ...


@runtime_checkable
class DeclaresEncoded(Protocol):
    """A callable transform that says whether it takes an ``EncodedImage`` (and decodes it itself)."""

    accepts_encoded: bool
