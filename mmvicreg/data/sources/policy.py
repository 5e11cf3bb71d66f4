"""The bad-data policy every source holds: what to do with images and captions it cannot use, and the report.

``on_bad_image``:
  ``"error"`` (default): the first missing or corrupt image raises (``FileNotFoundError`` / ``BadImageError``);
  ``"skip"``: it is left out; ``skipped`` lists ``(what, reason)`` and a warning is logged with the count.
``verify``: decode every image once when the source is built, so that corrupt files are found before training
(without it a corrupt image is met at load time: under ``skip`` it is replaced by the next good one).

``on_bad_caption`` (captioned sources), for empty captions and captions whose bytes are not UTF-8:
  ``"error"`` (default): building the source raises, naming the file, the image and the caption;
  ``"skip"``: those captions are left out (an image left with none is skipped too, reason
  ``"no usable caption"``) and counted in ``skipped_captions``.

The policy only decides and reports: it returns the indices of what to keep, and the source applies that one
index list to its records and its image store. Images left out at load time are also queued
(:meth:`BadDataPolicy.take_load_skips`): a DataLoader worker hands its queue back with the batch it made, and
the main process's policy records it (:meth:`BadDataPolicy.record_load_skips`, each image once), so the main
process's report counts what every worker skipped (:func:`mmvicreg.data.batching.make_loader` does this).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

from mmvicreg.choices import BAD_DATA_POLICIES, did_you_mean
from mmvicreg.data.sources.io import BadImageError, caption_problem
from mmvicreg.data.sources.stores import ImageStore

logger = logging.getLogger("mmvicreg.data")


def image_problem(exc: BaseException) -> str:
    """The report's reason for an image that failed with ``exc``: ``"missing"``, ``"corrupt"``,
    ``"over the pixel limit"`` (``BadImageError.reason``)."""
    if isinstance(exc, FileNotFoundError):
        return "missing"
    return exc.reason if isinstance(exc, BadImageError) else "corrupt"


def _check(what: str, value: str) -> str:
    if value not in BAD_DATA_POLICIES:
        hint = did_you_mean(value, BAD_DATA_POLICIES) if isinstance(value, str) else ""
        raise ValueError(f"{what} must be one of {', '.join(BAD_DATA_POLICIES)}; got {value!r}{hint}")
    return value


class BadDataPolicy:
    """``on_bad_image``, ``on_bad_caption`` and ``verify`` (validated here), and what was left out so far."""

    def __init__(self, on_bad_image: str = "error", on_bad_caption: str = "error", verify: bool = False) -> None:
        self.on_bad_caption = _check("on_bad_caption", on_bad_caption)
        self.on_bad_image = _check("on_bad_image", on_bad_image)
        self.verify = bool(verify)
        self.skipped: list[tuple[str, str]] = []  # (image, reason)
        self.skipped_captions: list[tuple[str, str]] = []  # (where, reason)
        self._bad: dict[int, tuple[str, str]] = {}  # found bad at load time: store index -> (image, reason)
        self._queued: list[tuple[int, str, str]] = []  # (index, image, reason) not yet taken by take_load_skips

    def __repr__(self) -> str:
        return (f"BadDataPolicy(on_bad_image={self.on_bad_image!r}, on_bad_caption={self.on_bad_caption!r}, "
                f"verify={self.verify})")

    # -- images -----------------------------------------------------------------------------------------------
    def drop_images(self, items: Sequence[str], reasons: Sequence[str], total: int, name: str, fix: str) -> None:
        """Apply the policy to bad images found while building source ``name``: raise, or record and warn."""
        if not items:
            return
        if self.on_bad_image == "error":
            examples = "; ".join(f"{i} ({r})" for i, r in list(zip(items, reasons))[:3])
            raise (FileNotFoundError if all(r == "missing" for r in reasons) else BadImageError)(
                f"{len(items)} of {total} images of {name} are unusable, e.g. {examples}; {fix}, "
                f"or pass on_bad_image='skip' to leave them out"
            )
        self.skipped.extend(zip(items, reasons))
        logger.warning("%s: skipped %d of %d images (%s), e.g. %s", name, len(items), total,
                       ", ".join(sorted(set(reasons))), items[0])

    def usable_images(self, store: ImageStore, name: str, fix: str) -> list[int]:
        """The indices of ``store`` to keep: files that exist and, with ``verify``, images that decode."""
        total = len(store)
        keep = list(range(total))
        paths = [store.path(i) for i in keep]
        missing = [i for i, p in enumerate(paths) if p is not None and not os.path.isfile(p)]
        if missing:
            found = [str(paths[i]) for i in missing]
            self.drop_images(found, ["missing"] * len(missing), total, name, fix)
            gone = set(missing)
            keep = [i for i in keep if i not in gone]
        if self.verify:
            good, bad, reasons = [], [], []
            for i in keep:
                try:
                    store.load(i)
                    good.append(i)
                except (FileNotFoundError, BadImageError) as exc:
                    bad.append(store.describe(i))
                    reasons.append(image_problem(exc))
            if bad:
                self.drop_images(bad, reasons, total, name, fix)
                keep = good
        return keep

    def load(self, index: int, store: ImageStore, name: str, encoded: bool = False) -> tuple[int, Any]:
        """``(index_used, image)``: under ``skip`` a bad image is replaced by the next good one (and remembered).

        ``encoded``: the image read but not decoded (``store.load_encoded``, its ``index`` set), for a loader
        whose transforms decode; a decode that then fails comes back through :meth:`reject`.
        """
        n = len(store)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                if not encoded:
                    return i, store.load(i)
                image = store.load_encoded(i)
                image.index = i
                return i, image
            except (FileNotFoundError, BadImageError) as exc:
                self.reject(i, store, name, exc)
        raise BadImageError(f"{name}: every one of its {n} images failed to load; see the warnings above")

    def reject(self, i: int, store: ImageStore, name: str, exc: Exception) -> None:
        """Image ``i`` of ``store`` could not be used: raise ``exc`` under ``error``; under ``skip`` remember it
        (``load`` passes it by from now on), report it and warn."""
        if self.on_bad_image == "error":
            raise exc
        entry = (i, store.describe(i), image_problem(exc))
        self.record_load_skips([entry])
        self._queued.append(entry)
        logger.warning("%s: skipped image %d (%d skipped so far in this process): %s", name, i, len(self.skipped), exc)

    def take_load_skips(self) -> list[tuple[int, str, str]]:
        """``(index, image, reason)`` of the images left out at load time since the last call (then forgotten
        here): what a DataLoader worker hands back to the main process with a batch."""
        taken, self._queued = self._queued, []
        return taken

    def record_load_skips(self, entries: Sequence[Sequence[Any]]) -> int:
        """Record ``(index, image, reason)`` entries of images left out at load time (by this process or a
        worker); an image already recorded is not counted again. Returns how many were new."""
        new = 0
        for i, what, reason in entries:
            if int(i) not in self._bad:
                self._bad[int(i)] = (str(what), str(reason))
                self.skipped.append((str(what), str(reason)))
                new += 1
        return new

    @property
    def skipped_while_loading(self) -> list[tuple[str, str]]:
        """``(image, reason)`` of the images left out at load time (also in ``skipped``), in the order met."""
        return list(self._bad.values())

    # -- captions ---------------------------------------------------------------------------------------------
    def usable_captions(
        self, image_ids: Sequence[Any], captions: Sequence[Sequence[str]], name: str
    ) -> tuple[list[list[str]], list[int]]:
        """``(captions without the unusable ones, indices of the images that keep at least one)``.

        Under ``on_bad_caption="error"`` any empty or non-UTF-8 caption raises, naming a few of them.
        """
        captions = [list(c) for c in captions]
        everything = list(range(len(captions)))
        bad = [(i, j, why) for i, caps in enumerate(captions) for j, c in enumerate(caps)
               if (why := caption_problem(c)) is not None]
        if not bad:
            return captions, everything
        total = sum(len(c) for c in captions)
        where = [f"image {image_ids[i]!r} caption #{j}" for i, j, _ in bad]
        if self.on_bad_caption == "error":
            examples = "; ".join(
                f"{w} ({why}{': ' + ascii(captions[i][j][:40]) if why != 'empty' else ''})"
                for w, (i, j, why) in list(zip(where, bad))[:3]
            )
            hint = (" The caption file is not UTF-8 text: re-encode it (e.g. iconv -f latin1 -t utf-8)."
                    if any(why == "not UTF-8" for *_, why in bad) else "")
            raise ValueError(
                f"{len(bad)} of {total} captions of {name} are unusable, e.g. {examples}.{hint} Fix the captions "
                f"or pass on_bad_caption='skip' to leave them out"
            )
        drop = {(i, j) for i, j, _ in bad}
        captions = [[c for j, c in enumerate(caps) if (i, j) not in drop] for i, caps in enumerate(captions)]
        self.skipped_captions.extend((w, why) for w, (*_, why) in zip(where, bad))
        logger.warning("%s: skipped %d of %d captions (%s), e.g. %s", name, len(bad), total,
                       ", ".join(sorted({why for *_, why in bad})), where[0])
        bare = {i for i, c in enumerate(captions) if not c}  # images whose every caption was left out: no pair
        self.skipped.extend((str(image_ids[i]), "no usable caption") for i in sorted(bare))
        return captions, [i for i in everything if i not in bare]
