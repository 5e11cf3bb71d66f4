"""The two kinds of source (image–caption and image-only) and the evaluation view of a captioned source.

Every source is a map-style ``torch.utils.data.Dataset`` of raw samples:

- ``CaptionSource``: ``{"image": RGB PIL image, "caption": str, "image_id": ...}``;
  ``eval_set(max_captions=5)`` gives the images in order with the list of their captions (``RetrievalSet``).
- ``ImageSource``: ``{"image": RGB PIL image, "label": int}`` (``-1`` where there is no label);
  ``labels`` and ``classes`` in order, for k-NN and linear-probe evaluation.

Concrete sources implement ``_load_image(i)`` and, when images are files, ``_image_path(i)``; the base class
applies the bad-image policy (see ``io.py``) at construction (missing files, and with ``verify=True`` every
image decoded once) and at load time (a corrupt image met in training is replaced by the next good one).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from mmvicreg.data.io import BadImageTracker, caption_problem, check_caption_policy, open_image, verify_images

logger = logging.getLogger("mmvicreg.data")

PAIRS_MODES = ("one", "all")


class _ImageBacked(Dataset):
    """Shared plumbing: a list of images, a bad-image policy, construction-time checks."""

    name: str = "source"

    def __init__(self, *, on_bad_image: str = "error", verify: bool = False, fix: str = "check the paths") -> None:
        self._tracker = BadImageTracker(on_bad_image, self.name)
        self._check_images(verify, fix)

    # -- hooks for concrete sources ---------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        raise NotImplementedError

    def _load_image(self, i: int) -> Image.Image:
        raise NotImplementedError

    def _image_path(self, i: int) -> str | None:
        """The file behind image ``i``, when there is one (used to find missing files cheaply)."""
        return None

    def _keep(self, indices: list[int]) -> None:
        """Keep only images ``indices`` (in that order) in every per-image list."""
        raise NotImplementedError

    # -- policy -----------------------------------------------------------------------------------------------
    @property
    def on_bad_image(self) -> str:
        return self._tracker.on_bad_image

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(image, reason)`` for every image this process left out under ``on_bad_image='skip'``."""
        return self._tracker.skipped

    @property
    def num_skipped(self) -> int:
        return len(self._tracker.skipped)

    def data_report(self) -> dict[str, Any]:
        """What was left out under the bad-data policies (in this process): counts and counts per reason."""
        return {
            "source": self.name,
            "samples": len(self),  # type: ignore[arg-type]
            "skipped_images": self.num_skipped,
            "skipped_image_reasons": dict(collections.Counter(r for _, r in self.skipped)),
        }

    def load_image(self, i: int) -> Image.Image:
        """Image ``i`` as RGB PIL; raises FileNotFoundError / BadImageError (whatever the policy)."""
        return self._load_image(i)

    def _check_images(self, verify: bool, fix: str) -> None:
        n = self.num_images
        paths = [self._image_path(i) for i in range(n)]
        missing = [i for i, p in enumerate(paths) if p is not None and not os.path.isfile(p)]
        if missing:
            self._tracker.drop([paths[i] for i in missing], ["missing"] * len(missing), n, fix)
            gone = set(missing)
            self._keep([i for i in range(n) if i not in gone])
        if verify:
            good, bad, reasons = verify_images(
                self.num_images, self._load_image, lambda i: self._image_path(i) or f"image {i}"
            )
            if bad:
                self._tracker.drop(bad, reasons, n, fix)
                self._keep(good)

    def _load_with_policy(self, i: int) -> tuple[int, Image.Image]:
        return self._tracker.load(i, self.num_images, self._load_image, lambda k: self._image_path(k) or f"image {k}")


class FileImages:
    """Mixin for sources whose images are files: ``self.paths[i]`` is image i (set before ``__init__`` of the base)."""

    paths: list[str]

    def _image_path(self, i: int) -> str:
        return self.paths[i]

    def _load_image(self, i: int) -> Image.Image:
        return open_image(self.paths[i])

    def _keep(self, indices: list[int]) -> None:
        self.paths = [self.paths[i] for i in indices]
        super()._keep(indices)  # type: ignore[misc]


class CaptionSource(_ImageBacked):
    """Images, each with a list of captions.

    ``pairs`` decides what one epoch is:
      ``"one"`` (default): one sample per image, with one of its captions drawn at random each time. An epoch
        decodes every image once, a batch never holds the same image twice (a duplicated image in a batch would
        add identical rows to the variance/covariance statistics), and over epochs every caption is used;
      ``"all"``: one sample per (image, caption) pair, so an epoch is ``num_pairs`` samples (5× for COCO).
    Caption draws use torch's RNG, which a seeded DataLoader seeds in each worker: runs are reproducible.
    """

    def __init__(
        self,
        image_ids: Sequence[Any],
        captions: Sequence[Sequence[str]],
        *,
        pairs: str = "one",
        on_bad_image: str = "error",
        on_bad_caption: str = "error",
        verify: bool = False,
        name: str = "captions",
        fix: str = "check the image root",
    ) -> None:
        self.on_bad_caption = check_caption_policy(on_bad_caption)
        self.skipped_captions: list[tuple[str, str]] = []
        if pairs not in PAIRS_MODES:
            raise ValueError(f"pairs must be one of {', '.join(PAIRS_MODES)}; got {pairs!r}")
        if len(image_ids) != len(captions):
            raise ValueError(f"{len(image_ids)} image ids but {len(captions)} caption lists")
        self.name = name
        self.pairs = pairs
        self.image_ids = list(image_ids)
        self.captions = [list(c) for c in captions]
        super().__init__(on_bad_image=on_bad_image, verify=verify, fix=fix)
        self._check_captions()
        if any(len(c) == 0 for c in self.captions):
            raise ValueError(f"{name}: every image needs at least one caption")
        self._offsets = list(itertools.accumulate((len(c) for c in self.captions), initial=0))

    def _check_captions(self) -> None:
        """The caption policy: empty captions and captions from bytes that are not UTF-8 raise or are left out."""
        bad = [(i, j, why) for i, caps in enumerate(self.captions) for j, c in enumerate(caps)
               if (why := caption_problem(c)) is not None]
        if not bad:
            return
        total = sum(len(c) for c in self.captions)
        where = [f"image {self.image_ids[i]!r} caption #{j}" for i, j, _ in bad]
        if self.on_bad_caption == "error":
            examples = "; ".join(
                f"{w} ({why}{': ' + ascii(self.captions[i][j][:40]) if why != 'empty' else ''})"
                for w, (i, j, why) in list(zip(where, bad))[:3]
            )
            hint = (" The caption file is not UTF-8 text: re-encode it (e.g. iconv -f latin1 -t utf-8)."
                    if any(why == "not UTF-8" for *_, why in bad) else "")
            raise ValueError(
                f"{len(bad)} of {total} captions of {self.name} are unusable, e.g. {examples}.{hint} Fix the captions "
                f"or pass on_bad_caption='skip' to leave them out"
            )
        drop = {(i, j) for i, j, _ in bad}
        self.captions = [[c for j, c in enumerate(caps) if (i, j) not in drop] for i, caps in enumerate(self.captions)]
        self.skipped_captions.extend((w, why) for w, (*_, why) in zip(where, bad))
        logger.warning("%s: skipped %d of %d captions (%s), e.g. %s", self.name, len(bad), total,
                       ", ".join(sorted({why for *_, why in bad})), where[0])
        bare = [i for i, c in enumerate(self.captions) if not c]
        if bare:  # images whose every caption was left out cannot make a pair
            self._tracker.skipped.extend((str(self.image_ids[i]), "no usable caption") for i in bare)
            gone = set(bare)
            self._keep([i for i in range(len(self.captions)) if i not in gone])

    def data_report(self) -> dict[str, Any]:
        return {
            **super().data_report(),
            "captions": self.num_pairs,
            "skipped_captions": len(self.skipped_captions),
            "skipped_caption_reasons": dict(collections.Counter(r for _, r in self.skipped_captions)),
        }

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_pairs(self) -> int:
        return sum(len(c) for c in self.captions)

    def _keep(self, indices: list[int]) -> None:
        self.image_ids = [self.image_ids[i] for i in indices]
        self.captions = [self.captions[i] for i in indices]

    def __len__(self) -> int:
        return self.num_images if self.pairs == "one" else self.num_pairs

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} of length {len(self)}")
        if self.pairs == "one":
            i, j = index, None
        else:
            i = bisect.bisect_right(self._offsets, index) - 1
            j = index - self._offsets[i]
        used, image = self._load_with_policy(i)
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

    def eval_images(self) -> "LazyImages":
        return LazyImages(self)

    def eval_captions(self, max_captions: int | None = 5) -> list[list[str]]:
        return self.eval_set(max_captions).captions

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, images={self.num_images}, pairs={self.num_pairs}, "
                f"mode={self.pairs!r}, skipped={self.num_skipped})")


class ImageSource(_ImageBacked):
    """Images with integer labels (``-1`` = unlabelled); ``classes[label]`` names a label."""

    def __init__(
        self,
        labels: Sequence[int],
        classes: Sequence[str],
        *,
        on_bad_image: str = "error",
        verify: bool = False,
        name: str = "images",
        fix: str = "check the image root",
    ) -> None:
        self.name = name
        self.labels = [int(x) for x in labels]
        self.classes = list(classes)
        super().__init__(on_bad_image=on_bad_image, verify=verify, fix=fix)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def _keep(self, indices: list[int]) -> None:
        self.labels = [self.labels[i] for i in indices]

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.name} of length {len(self)}")
        used, image = self._load_with_policy(index)
        return {"image": image, "label": self.labels[used]}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, images={self.num_images}, classes={len(self.classes)}, "
                f"skipped={self.num_skipped})")


class LazyImages(Sequence):
    """The images of a source in order, decoded on access (a 5k-image eval set does not sit in memory)."""

    def __init__(self, source: _ImageBacked) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.num_images

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.source.load_image(i % len(self))


@dataclass
class RetrievalSet:
    """Evaluation view of a captioned source: ``images[i]`` is described by ``captions[i]`` (a list).

    ``caption_dataset()`` flattens the captions in order; ``caption_image_index[k]`` is the image of caption k.
    Both datasets plug into ``make_loader(..., train=False)`` like any source.
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

    def image_dataset(self) -> "_ImagesOnly":
        return _ImagesOnly(self)

    def caption_dataset(self) -> "_CaptionsOnly":
        return _CaptionsOnly(self.flat_captions, self.caption_image_index)


class _ImagesOnly(Dataset):
    def __init__(self, rs: RetrievalSet) -> None:
        self.rs = rs

    def __len__(self) -> int:
        return len(self.rs.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.rs.images[i], "image_id": self.rs.image_ids[i], "image_index": i}


class _CaptionsOnly(Dataset):
    def __init__(self, captions: list[str], image_index: list[int]) -> None:
        self.captions, self.image_index = captions, image_index

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return {"caption": self.captions[k], "image_index": self.image_index[k]}
