"""Image-only source from a folder: ``images/<class>/<image>`` (torchvision's ImageFolder layout).

Class subfolders, sorted by name, become labels 0..k-1 (used by k-NN / linear-probe evaluation; siamese
training ignores them). A folder of images without class subfolders is one unlabelled set (label ``-1``).
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from mmvicreg.data.sources.base import ImageSource
from mmvicreg.data.sources.io import PathLike
from mmvicreg.data.sources.policy import BadDataPolicy
from mmvicreg.data.sources.stores import FileStore


class FolderImages(ImageSource):
    """Samples ``{"image": RGB PIL, "label": int}`` from the folder ``images``; ``paths[i]`` is image i's file."""

    def __init__(self, images: PathLike, *, on_bad_image: str = "error", verify: bool = False,
                 extensions: tuple[str, ...] = IMG_EXTENSIONS) -> None:
        root = Path(images)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist; pass images= a folder of class subfolders")
        if any(e.is_dir() for e in os.scandir(root)):
            classes, class_to_idx = find_classes(root)
            items = make_dataset(root, class_to_idx, extensions=extensions, allow_empty=True)
        else:
            classes = []
            items = sorted((os.path.join(root, e.name), -1) for e in os.scandir(root)
                           if e.is_file() and e.name.lower().endswith(extensions))
        if not items:
            raise ValueError(f"no images ({', '.join(extensions)}) found under {root}")
        super().__init__([label for _, label in items], classes, FileStore([p for p, _ in items]),
                         policy=BadDataPolicy(on_bad_image, verify=verify), name=f"folder {root}",
                         fix=f"check images={os.fspath(root)!r}")

    @property
    def paths(self) -> list[str]:
        """``paths[i]`` is the file of image i."""
        return self.store.paths  # type: ignore[attr-defined]
