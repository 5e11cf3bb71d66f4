"""Image-only source from a folder: ``root/<class>/<image>`` (torchvision's ImageFolder layout).

Class subfolders, sorted by name, become labels 0..k-1 (used by k-NN / linear-probe evaluation; siamese
training ignores them). A folder of images without class subfolders is one unlabelled set (label ``-1``).
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from mmvicreg.data.base import FileImages, ImageSource
from mmvicreg.data.io import PathLike


class FolderImages(FileImages, ImageSource):
    """Samples ``{"image": RGB PIL, "label": int}`` from ``root``; ``paths[i]`` is image i's file."""

    def __init__(self, root: PathLike, *, on_bad_image: str = "error", verify: bool = False,
                 extensions: tuple[str, ...] = IMG_EXTENSIONS) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist; pass root= a folder of class subfolders")
        has_subdirs = any(e.is_dir() for e in os.scandir(root))
        if has_subdirs:
            classes, class_to_idx = find_classes(root)
            items = make_dataset(root, class_to_idx, extensions=extensions, allow_empty=True)
        else:
            classes = []
            items = sorted((os.path.join(root, e.name), -1) for e in os.scandir(root)
                           if e.is_file() and e.name.lower().endswith(extensions))
        if not items:
            raise ValueError(f"no images ({', '.join(extensions)}) found under {root}")
        self.paths = [p for p, _ in items]
        super().__init__([label for _, label in items], classes, on_bad_image=on_bad_image, verify=verify,
                         name=f"folder {root}", fix=f"check root={os.fspath(root)!r}")
