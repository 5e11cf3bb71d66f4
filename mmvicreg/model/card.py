"""The model card: the ``README.md`` written beside every export and shown as the model's page on the Hub.

:func:`model_card` renders it from the model itself (YAML front matter from ``huggingface_hub.ModelCardData``,
a description, the branches, the training config and the metrics when given, and the lines of Python that load
the model); :func:`write_model_card` rewrites only the card of an existing export (a run exports its model
before it evaluates, then adds the metrics); :func:`card_for_repo` points the card's snippet at a Hub repo. ``model`` is a
:class:`~mmvicreg.model.JointEmbedding`, annotated ``nn.Module``: the model imports this module, not the reverse.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from numbers import Integral, Number
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmvicreg.files import atomic_write_text
from mmvicreg.model.export_files import CARD_FILE, CONFIG_FILE

if TYPE_CHECKING:
    from torch import nn

LIBRARY_NAME = "mmvicreg"
LOCAL_PLACEHOLDER = "path/to/model"  # what the snippet loads when the card does not know its Hub repo
_LOAD_LINE = re.compile(r'JointEmbedding\.from_pretrained\("[^"\n]*"\)')

# loss.name -> (title word, tag, what the description says trained it); a card without a config: the default
OBJECTIVES = {
    "vicreg": ("VICReg", "vicreg", "VICReg (Variance-Invariance-Covariance Regularization, Bardes, Ponce and LeCun, "
                                   "ICLR 2022)"),
    "infonce": ("InfoNCE", "infonce", "InfoNCE, the symmetric contrastive loss of CLIP"),
    "triplet": ("VSE++", "vse++", "the hinge triplet loss of VSE++ (Faghri et al., 2018)"),
    "barlow": ("Barlow Twins", "barlow-twins", "Barlow Twins (Zbontar et al., ICML 2021)"),
    "supervised": ("Supervised", "supervised", "cross-entropy on class labels (loss.name: supervised)"),
}
BRANCHES = (
    "Each branch maps one kind of input (images or text) through its encoder to a representation *h* and through "
    "its expander to an embedding *z*."
)
VICREG_AIM = (
    "The branches were trained together so that matching inputs (an image and its caption, or two views of one "
    "image) get close embeddings while each embedding dimension keeps its variance and stays decorrelated from "
    "the others."
)
USE = "Compare embeddings *z* for retrieval; use representations *h* for probes and k-NN."


def objective_of(training_config: Any) -> str:
    """The ``loss.name`` a training config names (``vicreg`` when there is none: the library's default)."""
    loss = (_plain(training_config) or {}).get("loss") if training_config is not None else None
    name = loss.get("name") if isinstance(loss, Mapping) else None
    return name if name in OBJECTIVES else "vicreg"


def description(objective: str) -> str:
    """The card's paragraph: what trained the model, what its branches give, how to use them."""
    trained = f"A joint-embedding model trained with {OBJECTIVES[objective][2]} with the mmvicreg library."
    return " ".join([trained, BRANCHES, *([VICREG_AIM] if objective == "vicreg" else []), USE])


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"i2t": {"R@1": 80.0}, "rsum": 400.0}`` -> ``{"i2t.R@1": 80.0, "rsum": 400.0}``: scalars only, in order.

    Lists and other non-scalar values are left out (the card shows numbers and short labels, not arrays); floats
    are rounded to 4 decimals (``0.7000000000000001`` -> ``0.7``).
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, (str, bool)) or value is None:
            out[name] = value
        elif isinstance(value, Number):  # numpy scalars too
            out[name] = int(value) if isinstance(value, Integral) else round(float(value), 4)  # type: ignore[arg-type]
        elif getattr(value, "ndim", None) == 0:  # 0-d arrays and tensors
            out[name] = round(float(value), 4)
    return out


def _plain(config: Any) -> Any:
    """A training config (mapping, ``RunConfig`` with ``to_dict``, or dataclass) as plain JSON-able data."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    return json.loads(json.dumps(config, default=str))


def _tags(model: nn.Module, objective: str = "vicreg") -> list[str]:
    modalities = sorted({b.modality for b in model.branches.values()})
    kinds = ["image-text-retrieval"] if modalities == ["image", "text"] else modalities
    return [OBJECTIVES[objective][1], LIBRARY_NAME, *kinds]


def _front_matter(model: nn.Module, flat: Mapping[str, Any], objective: str = "vicreg") -> str:
    from huggingface_hub import ModelCardData

    numbers = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    data = ModelCardData(library_name=LIBRARY_NAME, tags=_tags(model, objective),
                         **({"eval_metrics": numbers} if numbers else {}))
    return f"---\n{data.to_yaml()}\n---"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = round(value, 4)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _branch_table(model: nn.Module) -> str:
    rows = [
        "| branch | encoder | modality | field | representation dim | expander | embedding dim |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, b in model.branches.items():
        encoder = f"shares `{b.shares}`" if b.shares else f"`{b.encoder.spec().get('name', type(b.encoder).__name__)}`"
        expander = (b.expander.spec or "none") if b.own_expander else f"shares `{b.shares}`"
        rows.append(
            f"| `{name}` | {encoder} | {b.modality} | `{b.field}` | {b.encoder.output_dim} | {expander} "
            f"| {b.embedding_dim} |"
        )
    return "\n".join(rows)


def _snippet(model: nn.Module, target: str) -> str:
    first = {}
    for name, b in model.branches.items():
        first.setdefault(b.modality, name)
    lines = ["from mmvicreg import JointEmbedding, encode",
             f"model = JointEmbedding.from_pretrained({json.dumps(target)})"]
    if "text" in first:
        lines.append(f'z_text = encode(model, "{first["text"]}", ["a dog on the grass"])')
    if "image" in first:
        lines[0] = "import PIL.Image\n" + lines[0]
        lines.append(f'z_image = encode(model, "{first["image"]}", [PIL.Image.open("dog.jpg")])')
    return "```python\n" + "\n".join(lines) + "\n```"


def model_card(
    model: nn.Module,
    *,
    training_config: Any = None,
    metrics: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
) -> str:
    """The card's Markdown: front matter, description, branch table, config, metrics, usage; deterministic.

    Front matter: ``library_name: mmvicreg``, ``tags`` (the objective's: ``vicreg`` unless ``training_config``'s
    ``loss.name`` says another, ``mmvicreg``, then
    ``image-text-retrieval`` for an image–text model or the modalities present) and, with metrics, their
    numeric values flattened to dotted keys (``eval_metrics``). ``training_config`` (a mapping or a
    ``RunConfig``) is shown as YAML; ``metrics`` (nested mappings) as a table of dotted keys. The snippet loads
    ``repo_id``, or ``LOCAL_PLACEHOLDER`` when None, and encodes with the first text and first image branch.
    """
    import yaml

    flat = flatten_metrics(metrics or {})
    objective = objective_of(training_config)
    parts = [
        _front_matter(model, flat, objective),
        f"# {OBJECTIVES[objective][0]} joint embedding: {' + '.join(model.branch_names)}",
        description(objective),
        "## Branches",
        _branch_table(model),
    ]
    if training_config is not None:
        text = yaml.safe_dump(_plain(training_config), sort_keys=False, allow_unicode=True).rstrip()
        parts += ["## Training configuration", f"```yaml\n{text}\n```"]
    if flat:
        table = "\n".join(["| metric | value |", "|---|---|", *(f"| {k} | {_cell(v)} |" for k, v in flat.items())])
        parts += ["## Evaluation", table]
    parts += ["## Usage", _snippet(model, repo_id or LOCAL_PLACEHOLDER)]
    return "\n\n".join(parts) + "\n"


def card_for_repo(text: str, repo_id: str) -> str:
    """The card ``text`` with its snippet loading ``repo_id`` (what a card written for a local folder needs on the Hub)."""
    return _LOAD_LINE.sub(f"JointEmbedding.from_pretrained({json.dumps(repo_id)})", text)


def write_model_card(
    directory: str | os.PathLike,
    model: nn.Module,
    *,
    training_config: Any = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically (re)write ``README.md`` of the existing export ``directory``; no other file is touched.

    Raises ``FileNotFoundError`` when ``directory`` holds no export (no ``config.json``). Returns the card's path.
    """
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a model export (no {CONFIG_FILE}); write it with save_pretrained")
    text = model_card(model, training_config=training_config, metrics=metrics)
    return atomic_write_text(directory / CARD_FILE, text)
