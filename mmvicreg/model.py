"""Branches and the joint-embedding model.

A :class:`Branch` is an encoder + an expander + the raw field it reads + its preprocessing (an image transform
or a tokenizer). :class:`JointEmbedding` holds named branches; it turns ``{branch: input batch}`` into
``{branch: embedding z}``, encodes raw items for evaluation, and saves/loads itself as safetensors + JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmvicreg.batching import collate_items
from mmvicreg.data.transforms import TRANSFORM_NAMES, build_transform
from mmvicreg.encoders import Encoder, build_encoder, load_tokenizer
from mmvicreg.heads import Expander

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizers"
FORMAT_VERSION = 1

BRANCH_KEYS = ("encoder", "expander", "field", "shares", "transform")
TRANSFORM_KEYS = ("train", "eval", "size", "mean", "std")

Preprocessor = Callable[[Any], torch.Tensor]


def _default_transform(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    t = {"train": "vicreg_view1", "eval": "eval", "size": 224, "mean": None, "std": None}
    for key, value in (spec or {}).items():
        if key not in TRANSFORM_KEYS:
            raise ValueError(f"unknown transform key {key!r}; known: {', '.join(TRANSFORM_KEYS)}")
        t[key] = value
    for key in ("train", "eval"):
        if t[key] not in TRANSFORM_NAMES:
            raise ValueError(f"transform.{key} is {t[key]!r}; known transforms: {', '.join(TRANSFORM_NAMES)}")
    return t


class Branch(nn.Module):
    """encoder -> representation h -> expander -> embedding z, with the field it reads and its preprocessing."""

    def __init__(
        self,
        encoder: Encoder,
        expander: Expander,
        field: str | None = None,
        transform: Mapping[str, Any] | None = None,
        shares: str | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.expander = expander
        self.field = field or ("image" if encoder.modality == "image" else "caption")
        self.transform_spec = _default_transform(transform) if encoder.modality == "image" else None
        self.shares = shares
        self.own_expander = True  # False when a sharing branch also reuses the shared branch's expander
        self._transforms: dict[bool, Callable] = {}

    @property
    def modality(self) -> str:
        return self.encoder.modality

    @property
    def tokenizer(self):
        return getattr(self.encoder, "tokenizer", None)

    @property
    def pad_id(self) -> int | None:
        return self.tokenizer.pad_id if self.modality == "text" else None

    @property
    def embedding_dim(self) -> int:
        return self.expander.output_dim

    def forward(self, x: torch.Tensor, return_representation: bool = False):
        h = self.encoder(x)
        z = self.expander(h)
        return (z, h) if return_representation else z

    def preprocess(self, item: Any, train: bool = False) -> torch.Tensor:
        """One raw item (PIL image or str) -> the tensor this branch's encoder reads (before batching)."""
        if self.modality == "text":
            return self.tokenizer.encode(item)
        if isinstance(item, Image.Image):
            item = item if item.mode == "RGB" else item.convert("RGB")
        elif not isinstance(item, (torch.Tensor, np.ndarray)):
            raise TypeError(
                f"this branch reads images (field {self.field!r}), got {type(item).__name__}; "
                f"is a caption routed to an image branch?"
            )
        if train not in self._transforms:
            t = self.transform_spec
            self._transforms[train] = build_transform(t["train" if train else "eval"], t["size"], t["mean"], t["std"])
        return self._transforms[train](item)

    def config(self) -> dict[str, Any]:
        return {
            "encoder": None if self.shares else self.encoder.spec(),
            "expander": self.expander.spec if self.own_expander else None,
            "field": self.field,
            "shares": self.shares,
            **({"transform": self.transform_spec} if self.transform_spec else {}),
        }


def _check_branch_config(name: str, cfg: Mapping[str, Any]) -> None:
    unknown = set(cfg) - set(BRANCH_KEYS)
    if unknown:
        raise ValueError(f"branch {name!r} has unknown keys {sorted(unknown)}; known: {', '.join(BRANCH_KEYS)}")


def _build_branches(
    configs: Mapping[str, Mapping[str, Any]],
    captions: Iterable[str] | None,
    tokenizers: Mapping[str, Any] | None = None,
) -> dict[str, Branch]:
    if not configs:
        raise ValueError("a model needs at least one branch (config key `branches`)")
    caption_list = list(captions) if captions is not None else None
    branches: dict[str, Branch] = {}
    pending = dict(configs)
    while pending:  # branches that share another's encoder are built after it
        progressed = False
        for name, cfg in list(pending.items()):
            _check_branch_config(name, cfg)
            shares = cfg.get("shares")
            if shares is not None:
                if shares not in configs:
                    raise ValueError(
                        f"branch {name!r} shares {shares!r}, which is not a branch; branches: {', '.join(configs)}"
                    )
                if shares not in branches:
                    continue
                source = branches[shares]
                encoder = source.encoder
                expander = source.expander if cfg.get("expander") is None else Expander(encoder.output_dim, cfg["expander"])
            else:
                if cfg.get("encoder") is None:
                    raise ValueError(f"branch {name!r} needs an `encoder` (e.g. resnet50, gru) or `shares: <branch>`")
                tok = (tokenizers or {}).get(name)
                encoder = build_encoder(cfg["encoder"], captions=caption_list, tokenizer=tok)
                expander = Expander(encoder.output_dim, cfg.get("expander", "8192-8192-8192"))
            branches[name] = Branch(encoder, expander, cfg.get("field"), cfg.get("transform"), shares)
            branches[name].own_expander = shares is None or expander is not branches[shares].expander
            del pending[name]
            progressed = True
        if not progressed:
            raise ValueError(f"branches {sorted(pending)} share each other in a cycle; one must own an encoder")
    return branches


class JointEmbedding(nn.Module):
    """Named branches trained jointly; the loss never needs to know what a branch is.

    ``JointEmbedding.from_config({"image": {"encoder": "resnet50"}, "caption": {"encoder": "gru"}}, captions=...)``
    """

    def __init__(self, branches: Mapping[str, Branch]):
        super().__init__()
        self.branches = nn.ModuleDict(dict(branches))

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def from_config(
        cls, branches: Mapping[str, Mapping[str, Any]], captions: Iterable[str] | None = None
    ) -> "JointEmbedding":
        """Build from ``{name: {encoder, expander, field, transform, shares}}``; ``captions`` feed learned vocabularies."""
        return cls(_build_branches(branches, captions))

    @property
    def branch_names(self) -> list[str]:
        return list(self.branches.keys())

    def branch(self, name: str) -> Branch:
        if name not in self.branches:
            raise KeyError(f"no branch {name!r}; this model's branches: {', '.join(self.branch_names)}")
        return self.branches[name]  # type: ignore[return-value]

    def preprocessors(self, train: bool) -> dict[str, tuple[str, Preprocessor, int | None]]:
        """``{branch: (raw field, item -> tensor, pad id or None)}``: what a data loader needs to build batches."""
        out = {}
        for name, b in self.branches.items():
            fn = (lambda item, b=b: b.preprocess(item, train=train))
            out[name] = (b.field, fn, b.pad_id)
        return out

    # ------------------------------------------------------------------------------------------ running

    def forward(
        self, batch: Mapping[str, torch.Tensor], return_representations: bool = False
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``{branch: input batch}`` -> ``{branch: z}`` (and ``{branch: h}`` when asked)."""
        unknown = [k for k in batch if k not in self.branches]
        if unknown:
            raise KeyError(f"batch has keys {unknown} that are not branches; branches: {', '.join(self.branch_names)}")
        zs, hs = {}, {}
        for name, x in batch.items():
            branch = self.branches[name]
            branch.encoder.check_input(x, name)
            zs[name], hs[name] = branch(x, return_representation=True)
        return (zs, hs) if return_representations else zs

    @torch.no_grad()
    def encode(
        self,
        branch: str,
        items: Sequence[Any],
        batch_size: int = 64,
        layer: str = "embedding",
        progress: bool = False,
    ) -> torch.Tensor:
        """Raw items (PIL images or strings) -> (n, d) float32 CPU tensor, batched, in eval mode, without gradients.

        ``layer``: ``"embedding"`` (z, after the expander: what retrieval compares) or ``"representation"``
        (h, before it: what k-NN and linear probes use).
        """
        if layer not in ("embedding", "representation"):
            raise ValueError(f"layer must be 'embedding' or 'representation', got {layer!r}")
        b = self.branch(branch)
        if isinstance(items, (str, Image.Image)):
            raise TypeError(f"encode takes a list of items; wrap the single {type(items).__name__} in a list")
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            out = []
            starts = range(0, len(items), batch_size)
            if progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc=f"encode {branch}", unit="batch")
            for start in starts:
                chunk = [b.preprocess(item, train=False) for item in items[start : start + batch_size]]
                x = collate_items(chunk, b.pad_id).to(device)
                z, h = b(x, return_representation=True)
                out.append((z if layer == "embedding" else h).float().cpu())
            if not out:
                dim = b.embedding_dim if layer == "embedding" else b.encoder.output_dim
                return torch.empty(0, dim)
            return torch.cat(out)
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------------------ saving

    def _shared_prefixes(self) -> list[str]:
        """State-dict prefixes that repeat another branch's weights (siamese sharing): saved once, under the owner."""
        out = []
        for name, b in self.branches.items():
            if b.shares is not None:
                out.append(f"branches.{name}.encoder.")
                if not b.own_expander:
                    out.append(f"branches.{name}.expander.")
        return out

    def config(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "branches": {n: b.config() for n, b in self.branches.items()}}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``tokenizers/<branch>/`` (JSON only, no pickle)."""
        from safetensors.torch import save_file

        from mmvicreg.safety import fsync_tree

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        shared = tuple(self._shared_prefixes())
        # clone: safetensors refuses tensors that share storage (tied or viewed weights)
        state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items() if not k.startswith(shared)}
        text = json.dumps(self.config(), indent=2)
        # Every file is written into a staging folder first, then renamed into place (tokenizers, weights, and
        # the config last): a failure while writing (a full disk) leaves the previous export whole and loadable.
        staging = Path(tempfile.mkdtemp(dir=directory, prefix=".staging-"))
        try:
            for name, b in self.branches.items():
                if b.modality == "text" and b.shares is None:
                    b.tokenizer.save(staging / TOKENIZER_DIR / name)
            save_file(state, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
            (staging / CONFIG_FILE).write_text(text)
            fsync_tree(staging)
            for src in sorted((staging / TOKENIZER_DIR).rglob("*")):
                if src.is_file():
                    dst = directory / src.relative_to(staging)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, dst)
            os.replace(staging / WEIGHTS_FILE, directory / WEIGHTS_FILE)
            os.replace(staging / CONFIG_FILE, directory / CONFIG_FILE)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "JointEmbedding":
        """Rebuild a model written by :meth:`save_pretrained`: architecture from JSON, weights from safetensors."""
        from safetensors.torch import load_file

        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is not a directory; pass the folder written by save_pretrained")
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: {directory} is not a complete mmvicreg export "
                    f"(needs {CONFIG_FILE}, {WEIGHTS_FILE} and {TOKENIZER_DIR}/ for text branches)"
                )
        try:
            config = json.loads(config_path.read_text())
            branch_configs = config["branches"]
            if not isinstance(branch_configs, dict) or not all(isinstance(c, dict) for c in branch_configs.values()):
                raise TypeError("'branches' must map branch names to mappings")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{config_path} is not an mmvicreg model config ({type(e).__name__}: {e})") from None
        tokenizers = {}
        for name, cfg in branch_configs.items():
            spec = cfg.get("encoder") or {}
            name_of = spec.get("name", "") if isinstance(spec, dict) else str(spec)
            if cfg.get("shares") is None and (name_of in ("gru", "hf") or name_of.startswith("open_clip_text:")):
                try:
                    tokenizers[name] = load_tokenizer(directory / TOKENIZER_DIR / name)
                except (ValueError, KeyError, TypeError, OSError) as e:  # JSON errors are ValueErrors
                    if isinstance(e, FileNotFoundError):
                        raise
                    raise ValueError(
                        f"the tokenizer of branch {name!r} in {directory / TOKENIZER_DIR / name} cannot be read "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); re-export the model"
                    ) from None
        model = cls(_build_branches(branch_configs, None, tokenizers))
        try:
            state = load_file(str(weights_path), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types for truncated or foreign files
            raise ValueError(f"{weights_path} could not be read as safetensors weights ({e})") from None
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # same names, other shapes: torch lists every mismatch on its own line
            lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
            raise ValueError(
                f"{weights_path} does not match {config_path}: {len(lines)} tensor(s) have other shapes, e.g. "
                f"{lines[0] if lines else str(e).splitlines()[0]}"
            ) from None
        missing = [k for k in missing if not k.startswith(tuple(model._shared_prefixes()))]
        if missing or unexpected:
            raise ValueError(
                f"{weights_path} does not match {config_path}: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        return model
