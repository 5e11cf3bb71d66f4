"""Where an encoder's weights come from: one meaning of ``pretrained`` for every encoder kind.

``pretrained`` is
  * ``false`` (or None): random init, the default; never touches the network;
  * a name the library knows: for timm ``true`` (timm's default weights) or a tag (``tv_in1k`` or the full
    ``resnet152.tv_in1k``); for open_clip a tag (``laion2b_s34b_b79k``, ``openai``); for ``hf`` a Hub id
    (``sentence-transformers/all-MiniLM-L6-v2``);
  * a local file or folder (an existing path wins over a name): timm and open_clip weights files, or a
    Hugging Face model folder.

The network is opt-in: only ``true``, a tag or a Hub id may reach it (weights already in the Hugging Face
cache load offline). When that fails, :class:`PretrainedUnavailable` says so in one line, naming the model, the
cause and the local-path alternative. A name that is neither an existing path nor a known tag raises
``ValueError`` naming both possibilities (and, for tags, the known ones). A checkpoint's own Python code never
runs (``trust_remote_code=False``), and an export never loads ``pretrained`` at all
(:func:`mmvicreg.encoders.architecture_only`).
"""

from __future__ import annotations

import os
import socket
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from mmvicreg.choices import did_you_mean

T = TypeVar("T")
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_EXAMPLE = "sentence-transformers/all-MiniLM-L6-v2"


class PretrainedUnavailable(RuntimeError):
    """Pretrained weights named by a tag or Hub id could not be had (no network, Hub offline, not cached)."""


def _check_type(pretrained: Any, what: str) -> None:
    if (pretrained is not None and not isinstance(pretrained, (bool, str, os.PathLike))) or pretrained == "":
        raise ValueError(f"pretrained for {what} must be false, a known tag or a local path, got {pretrained!r}")


def local_path(pretrained: str | os.PathLike) -> Path | None:
    """The existing file or folder ``pretrained`` names (``~`` expanded), or None when there is none."""
    path = Path(pretrained).expanduser()
    return path if path.exists() else None


def weights_file(path: Path, names: tuple[str, ...], what: str) -> str:
    """``path`` itself when a file, else the first of ``names`` inside that folder; FileNotFoundError if none."""
    if path.is_file():
        return str(path)
    for name in names:
        if (path / name).is_file():
            return str(path / name)
    raise FileNotFoundError(f"folder {path} given as pretrained for {what} holds none of {', '.join(names)}")


def _neither(pretrained: Any, what: str, tags: list[str]) -> ValueError:
    known = f"known tags: {', '.join(tags[:8])}{', ...' if len(tags) > 8 else ''}" if tags else "it has no known tags"
    return ValueError(
        f"pretrained {str(pretrained)!r} for {what} is neither an existing local file or folder nor a known "
        f"pretrained tag{did_you_mean(pretrained, tags, n=3, cutoff=0.5)}; {known}"
    )


def _cause(err: BaseException) -> str:
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    chain, seen = [], err
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    network = (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, urllib.error.URLError, socket.gaierror)
    if any(isinstance(e, network) for e in chain):
        if is_offline_mode():
            return "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1) and they are not in the cache"
        return "no network (the Hub cannot be reached) and they are not in the cache"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def fetch(load: Callable[[], T], pretrained: Any, what: str, alternative: str) -> T:
    """``load()``, which may reach the network; its failure (OSError, RuntimeError) becomes one line of
    :class:`PretrainedUnavailable` naming ``what``, the cause and the local ``alternative``."""
    weights = "the default pretrained weights" if pretrained is True else f"pretrained weights {str(pretrained)!r}"
    try:
        return load()
    except (OSError, RuntimeError) as e:  # each library raises its own kind; the user needs one clear line
        raise PretrainedUnavailable(
            f"cannot load {weights} for {what}: {_cause(e)}; download them elsewhere and set pretrained: {alternative}"
        ) from None


def timm_tags(arch: str) -> list[str]:
    """The pretrained tags timm knows for architecture ``arch`` (``resnet152`` -> ``a1_in1k``, ``tv_in1k``, ...)."""
    import timm

    return [full.split(".", 1)[1] for full in timm.list_pretrained(f"{arch}.*") if full.split(".", 1)[0] == arch]


def timm_source(name: str, pretrained: Any) -> tuple[str, bool, dict[str, Any], bool]:
    """``(name to create, pretrained flag, create kwargs, remote)`` for ``timm.create_model``; validates tags.

    ``name`` may carry a tag (``vit_tiny_patch16_224.augreg_in21k``): its pretrained config then applies, also
    to a local weights file. ``remote`` is True when the weights come from the network (or its cache).
    """
    _check_type(pretrained, f"timm model {name!r}")
    arch, _, name_tag = name.partition(".")
    if name_tag and name_tag not in timm_tags(arch):
        raise _neither(name_tag, f"timm model {arch!r} (the tag in encoder name {name!r})", timm_tags(arch))
    if pretrained is None or pretrained is False:
        return name, False, {}, False
    if pretrained is True:
        if not timm_tags(arch):
            raise ValueError(f"timm model {arch!r} has no pretrained weights; use pretrained: false or a local file")
        return name, True, {}, True
    path = local_path(pretrained)
    if path is not None:
        overlay = {"file": weights_file(path, TIMM_FILES, f"timm model {name!r}")}
        return name, True, {"pretrained_cfg_overlay": overlay}, False
    tag = str(pretrained)
    tag = tag[len(arch) + 1 :] if tag.startswith(f"{arch}.") else tag
    if tag not in timm_tags(arch):
        raise _neither(pretrained, f"timm model {arch!r}", timm_tags(arch))
    if name_tag and name_tag != tag:
        raise ValueError(f"encoder name {name!r} and pretrained {str(pretrained)!r} name different tags; give one")
    return f"{arch}.{tag}", True, {}, True


def timm_model(name: str, pretrained: Any, image_size: int | None, **kwargs: Any) -> tuple[nn.Module, str]:
    """``(timm.create_model(..., num_classes=0), the name it was created with)``; see :func:`timm_source`."""
    import timm

    full, flag, extra, remote = timm_source(name, pretrained)
    create_kwargs: dict[str, Any] = dict(num_classes=0, pretrained=flag, **extra, **kwargs)

    def create() -> nn.Module:
        if image_size:
            try:
                return timm.create_model(full, img_size=image_size, **create_kwargs)
            except TypeError as e:  # this architecture has no img_size argument (CNNs): they take any size
                if "img_size" not in str(e):
                    raise
        return timm.create_model(full, **create_kwargs)

    if not remote:
        return create(), full
    return fetch(create, pretrained, f"timm model {full!r}", "/path/to/model.safetensors"), full


def open_clip_source(model: str, pretrained: Any) -> tuple[str | None, bool]:
    """``(value for open_clip.create_model's pretrained, remote)``: None, a validated tag, or a local file."""
    import open_clip

    what = f"open_clip model {model!r}"
    _check_type(pretrained, what)
    if pretrained is None or pretrained is False:
        return None, False
    tags = open_clip.list_pretrained_tags_by_model(model)
    if pretrained is True:
        raise ValueError(f"pretrained for {what} names a tag ({', '.join(tags) or 'it has none'}) or a local file")
    path = local_path(pretrained)
    if path is not None:
        return weights_file(path, OPEN_CLIP_FILES, what), False
    if str(pretrained).lower().replace("-", "_") not in tags:
        raise _neither(pretrained, what, tags)
    return str(pretrained), True


def open_clip_model(model: str, pretrained: Any, **kwargs: Any) -> nn.Module:
    """The full open_clip model (both towers) with the weights ``pretrained`` names; never default tower weights.

    Each tower calls this with the same ``pretrained``, so both load the same file (or cached Hub file).
    """
    import open_clip

    source, remote = open_clip_source(model, pretrained)

    def create() -> nn.Module:
        return open_clip.create_model(model, pretrained=source, pretrained_text=False, **kwargs)

    if not remote:
        return create()
    return fetch(create, pretrained, f"open_clip model {model!r}", "/path/to/open_clip_pytorch_model.bin")


def hf_source(pretrained: Any) -> tuple[str, bool]:
    """``(folder or Hub id, local)`` for a Hugging Face ``pretrained``; ValueError when it is neither."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    _check_type(pretrained, "the hf encoder")
    if pretrained is True:
        raise ValueError(f"pretrained for the hf encoder is a local folder or a Hub id (like {HF_EXAMPLE!r}), not true")
    path = local_path(pretrained)
    if path is not None:
        if not path.is_dir():
            raise ValueError(
                f"pretrained {str(path)!r} for the hf encoder is a file; give the folder holding config.json, the "
                f"weights and the tokenizer files"
            )
        return str(path), True
    try:
        validate_repo_id(str(pretrained))
    except HFValidationError:
        raise ValueError(
            f"pretrained {str(pretrained)!r} for the hf encoder is neither an existing local folder nor a Hugging "
            f"Face Hub id (like {HF_EXAMPLE!r})"
        ) from None
    return str(pretrained), False


def hf_load(load: Callable[..., T], pretrained: Any, what: str, **kwargs: Any) -> T:
    """``load(source, local_files_only=..., trust_remote_code=False, **kwargs)`` for a folder or Hub id
    (``AutoModel.from_pretrained``...): a checkpoint's own code never runs, and transformers never asks whether
    it may. A checkpoint that cannot load without its code is refused with one ``ValueError`` line."""
    source, local = hf_source(pretrained)
    kwargs["trust_remote_code"] = False
    try:
        if local:
            return load(source, local_files_only=True, **kwargs)
        alternative = "/path/to/model-folder (config.json, weights and tokenizer files)"
        return fetch(lambda: load(source, **kwargs), pretrained, what, alternative)
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise ValueError(
            f"{what}: {source} needs its own Python code (auto_map) to load, and mmvicreg never runs a checkpoint's "
            f"code; use a checkpoint whose architecture and tokenizer transformers ships"
        ) from None


def hf_model(pretrained: Any) -> nn.Module:
    """``transformers.AutoModel`` from a local folder or Hub id, in float32 (the dtype training starts from)."""
    from transformers import AutoModel

    return hf_load(AutoModel.from_pretrained, pretrained, "the hf encoder", dtype=torch.float32)
