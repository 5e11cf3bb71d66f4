"""Targets: the raw sample fields an objective reads besides the branches' outputs (``supervised``'s labels).

An objective that reads targets (:class:`~mmvicreg.objective.supervised.ReadsTargets`) names them in
``target_fields`` and the branch output it reads in ``layer``. The loader then carries those fields beside the
branches' inputs (``make_loader(extra_fields=...)``), the step takes them off the batch before the model sees it
(:func:`split_targets`), and the objective is called as ``objective(outputs, targets)`` on the whole batch, chunked
or not (:mod:`mmvicreg.train.chunked`): a target is a per-sample value, so the gradient cache stays exact. Every
other objective is called as ``objective(zs)``, as before.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from mmvicreg.config import ConfigError, RunConfig
from mmvicreg.data import ImageSource
from mmvicreg.model import JointEmbedding
from mmvicreg.objective.supervised import ReadsTargets


def target_fields(objective: Any) -> tuple[str, ...]:
    """The raw fields ``objective`` reads besides the branches' outputs (none for a pairwise objective)."""
    return tuple(objective.target_fields) if isinstance(objective, ReadsTargets) else ()


def reads_representations(objective: Any) -> bool:
    """Whether ``objective`` reads each branch's representation ``h`` rather than its embedding ``z``."""
    return isinstance(objective, ReadsTargets) and objective.layer == "representation"


def split_targets(batch: Mapping[str, Any], fields: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model inputs, targets)``: the batch without ``fields``, and those fields."""
    inputs = {k: v for k, v in batch.items() if k not in fields}
    return inputs, {k: batch[k] for k in fields}


def branch_outputs(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor], objective: Any) -> dict[str, Any]:
    """What ``objective`` reads of the model on ``inputs``: ``{branch: z}``, or ``{branch: h}`` (module docstring)."""
    if reads_representations(objective):
        return model(inputs, return_representations=True)[1]
    return model(inputs)


def call_objective(objective: Any, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, Any]) -> Any:
    """``objective(outputs, targets)`` when it reads targets, else ``objective(outputs)``."""
    return objective(outputs, targets) if isinstance(objective, ReadsTargets) else objective(outputs)


def check_labelled(config: RunConfig, source: Any) -> None:
    """ConfigError, before the model is built, when ``loss.name: supervised`` meets training images without labels
    (a folder without class subfolders, an hf dataset without labels): the config could not see it."""
    classes = len(source.classes) if isinstance(source, ImageSource) else 0
    if config.loss.name == "supervised" and (classes < 2 or min(source.labels, default=-1) < 0):
        name = source.name if isinstance(source, ImageSource) else "a source without labels"
        raise ConfigError(f"loss.name: supervised needs every training image labelled with one of at least 2 "
                          f"classes; data.train ({name}) has {classes} classes"
                          f"{' and unlabelled images (label -1)' if classes else ''}: give folder class "
                          f"subfolders, digits with labels, or hf with caption_column: null and label_column")


def objective_facts(source: Any, model: JointEmbedding) -> dict[str, Any]:
    """What an objective may take from the data and the model: ``build_objective``'s ``num_classes`` (None for a
    source without classes) and ``representation_dims`` (``{branch: encoder output width}``)."""
    classes = len(source.classes) if isinstance(source, ImageSource) else None
    dims = {name: model.branch(name).encoder.output_dim for name in model.branch_names}
    return {"num_classes": classes, "representation_dims": dims}
