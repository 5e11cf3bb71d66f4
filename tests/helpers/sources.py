"""Views of the data package's sources that only the tests use (the package itself never needed them).

* :func:`eval_images` / :func:`eval_captions`: a captioned source's images in order (decoded on access) and its
  first ``max_captions`` captions per image;
* :func:`image_dataset` / :func:`caption_dataset`: a ``RetrievalSet``'s images (``{"image", "image_id",
  "image_index"}``) and its captions flattened in order (``{"caption", "image_index"}``), as map-style datasets
  that plug into ``make_loader(..., train=False)`` like any source;
* :func:`select_branches`: the branches of a ``{branch: Preprocessor}`` mapping that read one field.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch.utils.data import Dataset

from mmvicreg.data import LazyImages, Preprocessor, RetrievalSet
from mmvicreg.data.batching import as_preprocessor


def eval_images(source: Any) -> LazyImages:
    """The images of ``source`` in order, decoded on access."""
    return LazyImages(source)


def eval_captions(source: Any, max_captions: int | None = 5) -> list[list[str]]:
    """The first ``max_captions`` captions of each image of ``source`` (all of them when None)."""
    return source.eval_set(max_captions).captions


class ImagesOnly(Dataset):
    """The images of a ``RetrievalSet``: item ``i`` is ``{"image", "image_id", "image_index": i}``."""

    def __init__(self, rs: RetrievalSet) -> None:
        self.rs = rs

    def __len__(self) -> int:
        return len(self.rs.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.rs.images[i], "image_id": self.rs.image_ids[i], "image_index": i}


class CaptionsOnly(Dataset):
    """Captions flattened in order: item ``k`` is ``{"caption", "image_index"}`` (the image caption k describes)."""

    def __init__(self, captions: list[str], image_index: list[int]) -> None:
        self.captions, self.image_index = captions, image_index

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return {"caption": self.captions[k], "image_index": self.image_index[k]}


def image_dataset(rs: RetrievalSet) -> ImagesOnly:
    """``rs``'s images as a dataset."""
    return ImagesOnly(rs)


def caption_dataset(rs: RetrievalSet) -> CaptionsOnly:
    """``rs``'s captions, flattened in order, as a dataset."""
    return CaptionsOnly(rs.flat_captions, rs.caption_image_index)


def select_branches(preprocessors: Mapping[str, Preprocessor | tuple], field: str) -> dict[str, Preprocessor]:
    """The branches that read ``field``: e.g. the image branches to embed a retrieval set's images."""
    return {name: as_preprocessor(name, spec) for name, spec in preprocessors.items() if spec[0] == field}
