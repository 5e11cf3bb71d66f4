"""The expander: an MLP from a spec string, applied after the encoder (representation h -> embedding z)."""

from __future__ import annotations

from torch import nn

from mmvicreg.choices import EXPANDER_NORMS, check_choice
from mmvicreg.config import ExpanderSpec, parse_expander

DEFAULT_EXPANDER = "8192-8192-8192"  # VICReg's published expander (ResNet-50: 2048 -> 8192 -> 8192 -> 8192)

__all__ = ["DEFAULT_EXPANDER", "Expander", "parse_expander", "parse_expander_spec"]


def parse_expander_spec(spec: str | int | None) -> list[int]:
    """``"8192-8192-8192"`` -> ``[8192, 8192, 8192]``; ``""``, ``"none"`` or None -> ``[]`` (identity).

    :func:`mmvicreg.config.parse_expander` (the one parser: a config's ``expander`` is parsed with it when the
    config loads), as a list.
    """
    return list(parse_expander(spec))


def _norm(kind: str, width: int) -> list[nn.Module]:
    return {"batch": [nn.BatchNorm1d(width)], "layer": [nn.LayerNorm(width)], "none": []}[kind]


class Expander(nn.Sequential):
    """Linear -> norm -> ReLU for each hidden width, then a final Linear without bias (published layout).

    ``norm``: ``"batch"`` (BatchNorm1d, as published), ``"layer"`` (LayerNorm: each sample on its own, so the
    output never depends on the rest of the batch) or ``"none"``. ``Expander(2048, "8192-8192-8192")`` is
    VICReg's ResNet-50 expander; an empty spec is the identity. ``spec`` is a width spec as a config writes it, or
    what :func:`mmvicreg.config.parse_expander` made of one.
    """

    def __init__(
        self, input_dim: int, spec: str | int | tuple[int, ...] | ExpanderSpec | None = DEFAULT_EXPANDER,
        norm: str = "batch",
    ):
        widths = parse_expander(spec)  # a parsed spec (ExpanderSpec, tuple of widths) is taken as it is
        self.spec = "-".join(str(w) for w in widths)
        self.norm = check_choice(norm, EXPANDER_NORMS, "expander_norm")
        sizes = [input_dim, *widths]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 2):
            layers += [nn.Linear(sizes[i], sizes[i + 1]), *_norm(norm, sizes[i + 1]), nn.ReLU(inplace=True)]
        if len(sizes) >= 2:
            layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        super().__init__(*layers)
        self.output_dim = sizes[-1]
