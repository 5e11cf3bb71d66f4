"""Raw items (PIL images, strings) -> embeddings: the one encode path, ``mmvicreg.encode(model, branch, items)``.

The input half is this package's: the branch's declared preprocessing (``model.branch(name).preprocessing``) built
into an eval transform or its tokenizer (:mod:`mmvicreg.data.preprocess`), one DataLoader (:func:`make_loader`,
``workers`` processes decode and preprocess) whose last stage puts each batch on the model's device as the encoder
reads it (:class:`~mmvicreg.data.preprocess.DeviceInput`). The network half is the model's:
``model.encode(branch, batch, layer=..., precision=...)`` runs one ready batch in eval mode, without gradients,
under autocast. The model is duck-typed (``branch(name)`` with ``preprocessing``, ``embedding_dim`` and
``encoder.output_dim``; ``parameters()``; ``encode``): this package imports no model code.

Training's evaluation, ``mmvicreg eval``, the search index and users all embed through these two functions.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import torch
from PIL import Image

from mmvicreg.choices import EMBEDDING_LAYERS, check_choice
from mmvicreg.data.batching import RawItems, make_loader
from mmvicreg.data.preprocess import DeviceInput, branch_preprocessors


def encode_batches(
    model: Any,
    branch: str,
    items: Sequence[Any],
    batch_size: int = 64,
    layer: str = "embedding",
    progress: bool = False,
    *,
    workers: int = 0,
    precision: str = "auto",
    decode_on: str = "workers",
) -> Iterator[torch.Tensor]:
    """Raw items of ``branch``'s field -> (batch, d) float32 CPU tensors in order, one per batch.

    ``items``: a sequence (``len`` and integer indexing; picklable for ``workers > 0``, as lists and the data
    package's lazy views are; a ``LazyImages`` is read undecoded, so a huge JPEG decodes reduced). ``layer``:
    ``"embedding"`` (z, after the expander: what retrieval compares) or ``"representation"`` (h, before it: what
    k-NN and linear probes use). ``precision``: ``"auto"`` is bf16 on CUDA, float32 on the CPU
    (:func:`mmvicreg.devices.autocast`). ``decode_on``: ``"workers"`` decode JPEGs, or ``"device"``: the model's
    device decodes each batch (:mod:`mmvicreg.data.device_decode`). An unknown branch raises ``KeyError`` listing
    the model's branches; a single item not in a list, or an item of the wrong kind (a caption for an image
    branch), ``TypeError``.
    """
    check_choice(layer, EMBEDDING_LAYERS, "layer")
    declaration = model.branch(branch).preprocessing
    if isinstance(items, (str, Image.Image)):
        raise TypeError(f"encode takes a list of items; wrap the single {type(items).__name__} in a list")
    device = next(model.parameters()).device
    loader = make_loader(
        RawItems(items, declaration.field),
        branch_preprocessors({branch: declaration}, train=False, decode_on=decode_on),
        batch_size=batch_size,
        train=False,
        workers=workers,
        pin_memory=device.type == "cuda",
        device_stage=DeviceInput({branch: declaration}, train=False, device=device),
    )
    batches: Iterable[dict[str, Any]] = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc=f"encode {branch}", unit="batch")
    for batch in batches:
        yield model.encode(branch, batch[branch], layer=layer, precision=precision)


def encode(
    model: Any,
    branch: str,
    items: Sequence[Any],
    batch_size: int = 64,
    layer: str = "embedding",
    progress: bool = False,
    *,
    workers: int = 0,
    precision: str = "auto",
    decode_on: str = "workers",
) -> torch.Tensor:
    """Raw items -> one (n, d) float32 CPU tensor: :func:`encode_batches` concatenated; no items give (0, d).

    ``mmvicreg.encode(model, "caption", ["a dog on the grass"])``; ``mmvicreg.encode(model, "image",
    [PIL.Image.open("dog.jpg")], workers=4)``.
    """
    out = list(encode_batches(model, branch, items, batch_size, layer, progress, workers=workers,
                              precision=precision, decode_on=decode_on))
    if out:
        return torch.cat(out)
    b = model.branch(branch)
    return torch.empty(0, b.embedding_dim if layer == "embedding" else b.encoder.output_dim)
