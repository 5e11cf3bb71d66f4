"""The joint-embedding model: named branches trained jointly; the loss never needs to know what a branch is.

``JointEmbedding.from_config({"image": {"encoder": "resnet50"}, "caption": {"encoder": "gru"}}, captions=...)``
builds it; ``model({branch: input batch})`` returns ``{branch: z}``; ``model.encode(branch, batch)`` embeds one
ready batch for inference (raw images or strings: ``mmvicreg.encode(model, branch, items)``, the data package's
one loader path); ``model.preprocessing()`` declares each branch's inputs; ``save_pretrained`` / ``from_pretrained``
write and read safetensors + JSON and a model card (:mod:`mmvicreg.model.io`), locally or through the Hugging
Face Hub (``push_to_hub``, ``from_pretrained("org/name")``: :mod:`mmvicreg.model.hub`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from mmvicreg.choices import EMBEDDING_LAYERS, check_choice
from mmvicreg.devices import autocast
from mmvicreg.model import hub, io
from mmvicreg.config import BranchConfig, parse_branches
from mmvicreg.model.branch import Branch, build_branches
from mmvicreg.preprocessing import Preprocessing


class JointEmbedding(nn.Module):
    """Named branches (encoder -> h -> expander -> z each); two may share one encoder's weights (``shares:``).

    ``JointEmbedding.from_config({"image": {"encoder": "resnet50"}, "caption": {"encoder": "gru"}}, captions=...)``
    """

    def __init__(self, branches: Mapping[str, Branch]):
        super().__init__()
        self.branches = nn.ModuleDict(dict(branches))

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def from_config(
        cls,
        branches: Mapping[str, BranchConfig | Mapping[str, Any]],
        captions: Iterable[str] | None = None,
        *,
        tokenizers: Mapping[str, Any] | None = None,
    ) -> "JointEmbedding":
        """Build from ``{name: BranchConfig}`` (as :func:`mmvicreg.config.load_config` parsed them), or from plain
        mappings ``{encoder, expander, field, transform, shares, ...}``, parsed here, once, by the config's parser
        (:func:`mmvicreg.config.parse_branches`): an unknown key raises ``ConfigError`` (a ``ValueError``) naming
        ``branches.<name>.<key>`` and the nearest valid key, and so does a bad expander, transform or encoder
        option; the loss coefficients (``variance_weight``, ``covariance_weight``, ``gamma``) are accepted and
        ignored here. ``captions`` feed learned vocabularies (``gru``, ``hf`` from a config); ``tokenizers``
        (``{branch: tokenizer}``, as saved with a model) stand in for them. A missing ``expander`` is
        ``"8192-8192-8192"``, or for a ``shares:`` branch the shared branch's expander.
        """
        return cls(build_branches(parse_branches(branches), captions, tokenizers))

    @property
    def branch_names(self) -> list[str]:
        return list(self.branches.keys())

    def branch(self, name: str) -> Branch:
        """The branch called ``name``; ``KeyError`` listing this model's branches when there is none."""
        if name not in self.branches:
            raise KeyError(f"no branch {name!r}; this model's branches: {', '.join(self.branch_names)}")
        return self.branches[name]  # type: ignore[return-value]

    def preprocessing(self) -> dict[str, Preprocessing]:
        """``{branch: its declared preprocessing}`` (:attr:`Branch.preprocessing`): what the data package builds a
        loader's transforms and device stage from (``mmvicreg.data.preprocess``)."""
        return {name: b.preprocessing for name, b in self.branches.items()}

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

    def encode(
        self, branch: str, inputs: torch.Tensor, layer: str = "embedding", *, precision: str = "auto"
    ) -> torch.Tensor:
        """One ready batch of ``branch`` -> its (batch, d) float32 CPU embeddings, for inference.

        ``inputs``: what a loader of the data package makes (normalised float images or token ids, on any device;
        uint8 images are normalised here), moved to the model's device. Runs in eval mode, without gradients,
        under ``precision``'s autocast (:func:`mmvicreg.devices.autocast`: ``"auto"`` is bf16 on CUDA, float32 on
        the CPU); the mode the model was in is restored. ``layer``: ``"embedding"`` (z, after the expander: what
        retrieval compares) or ``"representation"`` (h, before it: what k-NN and linear probes use). Raw images
        or strings raise ``TypeError``: embed those with ``mmvicreg.encode(model, branch, items)``.
        """
        check_choice(layer, EMBEDDING_LAYERS, "layer")
        b = self.branch(branch)
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"model.encode takes a batch tensor of branch {branch!r}, got {type(inputs).__name__}; "
                            f"embed raw images or strings with mmvicreg.encode(model, {branch!r}, items)")
        b.encoder.check_input(inputs, branch)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), autocast(device, precision):
                z, h = b(inputs.to(device, non_blocking=True), return_representation=True)
            return (z if layer == "embedding" else h).float().cpu()
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------------------------------ saving

    def shared_prefixes(self) -> list[str]:
        """State-dict prefixes that repeat another branch's weights (siamese sharing): saved once, under the owner."""
        out = []
        for name, b in self.branches.items():
            if b.shares is not None:
                out.append(f"branches.{name}.encoder.")
                if not b.own_expander:
                    out.append(f"branches.{name}.expander.")
        return out

    def frozen_state_keys(self) -> set[str]:
        """State-dict keys of the tensors training never changes: frozen encoders' (``freeze: true``)."""
        return {
            f"branches.{name}.encoder.{key}"
            for name, b in self.branches.items()
            for key in b.encoder.frozen_state_keys()
        }

    def config(self) -> dict[str, Any]:
        """``{"format_version", "branches": {name: section}}``: the JSON that rebuilds this architecture."""
        return {"format_version": io.FORMAT_VERSION, "branches": {n: b.config() for n, b in self.branches.items()}}

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        training_config: Any = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``tokenizers/<branch>/`` and the model card ``README.md``.

        ``training_config`` (a mapping or ``RunConfig``) and ``metrics`` (nested mappings) appear in the card
        only (:mod:`mmvicreg.model.card`). Files are staged and moved in with ``config.json`` last
        (:mod:`mmvicreg.model.io`).
        """
        return io.save_model(self, directory, training_config=training_config, metrics=metrics)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        map_location: str | torch.device = "cpu",
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
    ) -> JointEmbedding:
        """Rebuild a model from a folder written by :meth:`save_pretrained` or from a Hub repo ``"org/name"``.

        An existing folder is read as is (no network). Otherwise a string that is a Hub repo id is fetched with
        ``huggingface_hub.snapshot_download`` (its export files only, into the Hugging Face cache, ``cache_dir``
        if given; a cached repo loads with ``HF_HUB_OFFLINE=1``) and read the same way. Anything else raises
        ``FileNotFoundError`` naming it; Hub failures are one line naming the repo, the cause and the
        alternative (:func:`mmvicreg.model.hub.hub_error`).
        """
        directory = hub.resolve_export(
            name_or_path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
        )
        return io.load_model(cls, directory, map_location)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str | None = None,
        training_config: Any = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> str:
        """Save this model (:meth:`save_pretrained`) into a temporary folder and upload it to ``repo_id``.

        The repo is created if needed (``private`` when asked); ``revision`` is a branch, created if needed.
        Returns the commit's URL. Offline, not authorised or unreachable: a one-line ``OSError`` naming the repo,
        the cause and what to do (:func:`mmvicreg.model.hub.upload_export`).
        """
        with tempfile.TemporaryDirectory(prefix="mmvicreg-export-") as tmp:
            self.save_pretrained(tmp, training_config=training_config, metrics=metrics)
            return hub.upload_export(
                tmp, repo_id, private=private, token=token, revision=revision, commit_message=commit_message
            )
