"""The two kinds of source (image–caption and image-only) and the evaluation view of a captioned source.

A source is a map-style ``torch.utils.data.Dataset`` of raw samples, made of three parts given to its
constructor:

- its **records**: image ids with their caption lists (:class:`CaptionRecords`), or labels with class names
  (:class:`LabelRecords`);
- an **image store** (``stores.py``): files by path, a Hugging Face dataset column, or in-memory arrays;
- a **bad-data policy** (``policy.py``): ``on_bad_image`` / ``on_bad_caption`` / ``verify`` and the report of
  what was left out.

At construction the policy computes, once, the indices of the usable images (missing files, corrupt images
under ``verify``, images left with no usable caption) and the source applies that list to its records and its
store. At load time a corrupt image met in training raises, or under ``skip`` is replaced by the next good one.

- ``CaptionSource``: samples ``{"image": RGB PIL image, "caption": str, "image_id": ...}``;
  ``eval_set(max_captions=5)`` gives the images in order with the list of their captions (``RetrievalSet``).
- ``ImageSource``: samples ``{"image": RGB PIL image, "label": int}`` (``-1`` where there is no label);
  ``labels`` and ``classes`` in order, for k-NN and linear-probe evaluation.
"""

from __future__ import annotations

import bisect
import collections
import itertools
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from mmvicreg.choices import PAIRS_MODES, check_choice
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.stores import ImageStore


@dataclass
class CaptionRecords:
    """``captions[i]`` describes the image ``image_ids[i]``."""

    image_ids: list[Any]
    captions: list[list[str]]

    def subset(self, indices: Sequence[int]) -> "CaptionRecords":
        return CaptionRecords([self.image_ids[i] for i in indices], [self.captions[i] for i in indices])


@dataclass
class LabelRecords:
    """``labels[i]`` is the label of image i (``-1``: none); ``classes[label]`` names it."""

    labels: list[int]
    classes: list[str]

    def subset(self, indices: Sequence[int]) -> "LabelRecords":
        return LabelRecords([self.labels[i] for i in indices], self.classes)


class _Source(Dataset):
    """What both kinds share: the store, the policy, the report, policy-aware image loading."""

    def __init__(self, store: ImageStore, policy: BadDataPolicy | None, name: str) -> None:
        self.name = name
        self.store = store
        self.policy = policy if policy is not None else BadDataPolicy()
        self.kept: list[int] = list(range(len(store)))  # the store's original indices of the images kept

    def _use_images(self, indices: list[int]) -> None:
        """Keep images ``indices`` of the store, in that order (the caller subsets its records with the same list)."""
        if indices != list(range(len(self.store))):  # an untouched store is not copied (shapes share theirs)
            self.store = self.store.subset(indices)
            self.kept = [self.kept[i] for i in indices]

    @property
    def num_images(self) -> int:
        return len(self.store)

    @property
    def on_bad_image(self) -> str:
        return self.policy.on_bad_image

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(image, reason)`` for every image this process left out under ``on_bad_image='skip'``."""
        return self.policy.skipped

    @property
    def num_skipped(self) -> int:
        return len(self.policy.skipped)

    def data_report(self) -> dict[str, Any]:
        """What was left out under the bad-data policies: counts, counts per reason, and ``[image, reason]`` of
        each image left out at load time (``skipped_while_loading``, what :func:`mmvicreg.data.merge_reports`
        needs to total processes). In the main process it includes what DataLoader workers skipped, once their
        batches have been consumed (:func:`mmvicreg.data.make_loader`)."""
        return {
            "source": self.name,
            "samples": len(self),  # type: ignore[arg-type]
            "skipped_images": self.num_skipped,
            "skipped_image_reasons": dict(collections.Counter(r for _, r in self.skipped)),
            "skipped_while_loading": [list(entry) for entry in self.policy.skipped_while_loading],
        }

    def take_load_skips(self) -> list[tuple[int, str, str]]:
        """The images this process left out at load time since the last call (:meth:`BadDataPolicy.take_load_skips`)."""
        return self.policy.take_load_skips()

    def record_load_skips(self, entries: Sequence[Sequence[Any]]) -> int:
        """Record images a DataLoader worker left out at load time (:meth:`BadDataPolicy.record_load_skips`)."""
        return self.policy.record_load_skips(entries)

    def load_image(self, i: int) -> Image.Image:
        """Image ``i`` as RGB PIL; raises FileNotFoundError / BadImageError (whatever the policy)."""
        return self.store.load(i)

    def load_encoded_image(self, i: int) -> Any:
        """Image ``i`` read but not decoded (an ``EncodedImage``); errors as :meth:`load_image` (when read)."""
        return self.store.load_encoded(i)

    def _load_with_policy(self, i: int, encoded: bool = False) -> tuple[int, Any]:
        return self.policy.load(i, self.store, self.name, encoded)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index`` with its image decoded (an RGB PIL image)."""
        return self.sample(index)

    def sample(self, index: int, encoded: bool = False) -> dict[str, Any]:
        """Sample ``index``; ``encoded``: its image read but not decoded (an ``EncodedImage`` whose transforms
        decode it; a store of decoded images wraps them), and a decode that fails later goes back to
        :meth:`reject_image`."""
        raise NotImplementedError

    def reject_image(self, i: int, exc: Exception) -> None:
        """Image ``i`` of the store failed after loading (e.g. its decode): the bad-data policy decides."""
        self.policy.reject(i, self.store, self.name, exc)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):  # type: ignore[arg-type]
            raise IndexError(f"index {index} out of range for {self.name} of length {len(self)}")  # type: ignore


class CaptionSource(_Source):
    """Images, each with a list of captions.

    ``pairs`` decides what one epoch is:
      ``"one"`` (default): one sample per image, with one of its captions drawn at random each time. An epoch
        decodes every image once, a batch never holds the same image twice (a duplicated image in a batch would
        add identical rows to the variance/covariance statistics), and over epochs every caption is used;
      ``"all"``: one sample per (image, caption) pair, so an epoch is ``num_pairs`` samples (5× for COCO).
    Caption draws use torch's RNG, which a seeded DataLoader seeds in each worker: runs are reproducible.
    ``fix`` ends the message of an unusable image (e.g. ``"check images='...'"``).
    """

    def __init__(
        self,
        image_ids: Sequence[Any],
        captions: Sequence[Sequence[str]],
        store: ImageStore,
        *,
        pairs: str = "one",
        policy: BadDataPolicy | None = None,
        name: str = "captions",
        fix: str = "check the image folder",
    ) -> None:
        super().__init__(store, policy, name)
        self.pairs = check_choice(pairs, PAIRS_MODES, "pairs")
        if len(image_ids) != len(captions) or len(captions) != len(store):
            raise ValueError(f"{len(image_ids)} image ids, {len(captions)} caption lists and {len(store)} images; "
                             f"a source needs one of each per image")
        keep = self.policy.usable_images(store, name, fix)
        records = CaptionRecords(list(image_ids), [list(c) for c in captions]).subset(keep)
        usable_captions, usable = self.policy.usable_captions(records.image_ids, records.captions, name)
        self.records = CaptionRecords(records.image_ids, usable_captions).subset(usable)
        self._use_images([keep[k] for k in usable])
        if any(len(c) == 0 for c in self.captions):
            raise ValueError(f"{name}: every image needs at least one caption")
        self._offsets = list(itertools.accumulate((len(c) for c in self.captions), initial=0))

    @property
    def image_ids(self) -> list[Any]:
        return self.records.image_ids

    @property
    def captions(self) -> list[list[str]]:
        return self.records.captions

    @property
    def on_bad_caption(self) -> str:
        return self.policy.on_bad_caption

    @property
    def skipped_captions(self) -> list[tuple[str, str]]:
        """``(where, reason)`` for every caption left out under ``on_bad_caption='skip'``."""
        return self.policy.skipped_captions

    @property
    def num_pairs(self) -> int:
        return sum(len(c) for c in self.captions)

    def data_report(self) -> dict[str, Any]:
        return {
            **super().data_report(),
            "captions": self.num_pairs,
            "skipped_captions": len(self.skipped_captions),
            "skipped_caption_reasons": dict(collections.Counter(r for _, r in self.skipped_captions)),
        }

    def __len__(self) -> int:
        return self.num_images if self.pairs == "one" else self.num_pairs

    def sample(self, index: int, encoded: bool = False) -> dict[str, Any]:
        self._check_index(index)
        if self.pairs == "one":
            i, j = index, None
        else:
            i = bisect.bisect_right(self._offsets, index) - 1
            j = index - self._offsets[i]
        used, image = self._load_with_policy(i, encoded)
        captions = self.captions[used]
        if j is None or used != i:
            j = int(torch.randint(len(captions), ()).item())
        return {"image": image, "caption": captions[j], "image_id": self.image_ids[used]}

    def eval_set(self, max_captions: int | None = 5) -> "RetrievalSet":
        """The images in order with their first ``max_captions`` captions (retrieval protocols keep 5).

        Images are decoded on access and a corrupt one raises whatever the policy (dropping it would shift
        the image/caption alignment); build the source with ``on_bad_image="skip", verify=True`` to leave
        corrupt images out before evaluating.
        """
        if max_captions is not None and max_captions < 1:
            raise ValueError(f"max_captions must be >= 1 or None; got {max_captions}")
        caps = [c[:max_captions] if max_captions else list(c) for c in self.captions]
        return RetrievalSet(images=LazyImages(self), captions=caps, image_ids=list(self.image_ids))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, images={self.num_images}, pairs={self.num_pairs}, "
                f"mode={self.pairs!r}, skipped={self.num_skipped})")


class ImageSource(_Source):
    """Images with integer labels (``-1`` = unlabelled); ``classes[label]`` names a label."""

    def __init__(
        self,
        labels: Sequence[int],
        classes: Sequence[str],
        store: ImageStore,
        *,
        policy: BadDataPolicy | None = None,
        name: str = "images",
        fix: str = "check the image folder",
    ) -> None:
        super().__init__(store, policy, name)
        if len(labels) != len(store):
            raise ValueError(f"{len(labels)} labels for {len(store)} images; a source needs one label per image")
        keep = self.policy.usable_images(store, name, fix)
        self.records = LabelRecords([int(x) for x in labels], list(classes)).subset(keep)
        self._use_images(keep)

    def keep_classes(self, names: Sequence[str]) -> None:
        """Keep only the images of the classes ``names`` (class names, as in ``classes``), relabelled
        ``0..k-1`` in the order given; ValueError naming an unknown class and the source's classes."""
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = [n for n in names if n not in index]
        if unknown or not names:
            raise ValueError(f"classes {list(names)}: {self.name} has no class {unknown[0] if unknown else 'named'!r}; "
                             f"its classes: {self.classes or 'none (the source is unlabelled)'}")
        new = {index[n]: k for k, n in enumerate(names)}
        keep = [i for i, label in enumerate(self.labels) if label in new]
        self.records = LabelRecords([new[self.labels[i]] for i in keep], [str(n) for n in names])
        self._use_images(keep)
        self.name = f"{self.name} classes {','.join(map(str, names))}"

    @property
    def labels(self) -> list[int]:
        return self.records.labels

    @property
    def classes(self) -> list[str]:
        return self.records.classes

    def __len__(self) -> int:
        return self.num_images

    def sample(self, index: int, encoded: bool = False) -> dict[str, Any]:
        self._check_index(index)
        used, image = self._load_with_policy(index, encoded)
        return {"image": image, "label": self.labels[used]}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, images={self.num_images}, classes={len(self.classes)}, "
                f"skipped={self.num_skipped})")


class LazyImages(Sequence):
    """The images of a source in order, decoded on access (a 5k-image eval set does not sit in memory)."""

    def __init__(self, source: _Source) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.num_images

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.source.load_image(i % len(self))

    def encoded(self, i: int) -> Any:
        """Image ``i`` read but not decoded (an ``EncodedImage``), for a loader whose transform decodes it at the
        scale it needs (the eval transform decodes a huge JPEG reduced)."""
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.source.load_encoded_image(i % len(self))


@dataclass
class RetrievalSet:
    """Evaluation view of a captioned source: ``images[i]`` is described by ``captions[i]`` (a list).

    ``flat_captions`` lists the captions in order; ``caption_image_index[k]`` is the image of caption k.
    """

    images: Sequence[Image.Image]
    captions: list[list[str]]
    image_ids: list[Any]

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def flat_captions(self) -> list[str]:
        return [c for caps in self.captions for c in caps]

    @property
    def caption_image_index(self) -> list[int]:
        return [i for i, caps in enumerate(self.captions) for _ in caps]
