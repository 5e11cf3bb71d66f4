"""The expander: an MLP from a spec string, applied after the encoder (representation h -> embedding z)."""

from __future__ import annotations

from torch import nn

from mmvicreg.choices import EXPANDER_NORMS, check_choice

DEFAULT_EXPANDER = "8192-8192-8192"  # VICReg's published expander (ResNet-50: 2048 -> 8192 -> 8192 -> 8192)


def parse_expander_spec(spec: str | int | None) -> list[int]:
    """``"8192-8192-8192"`` -> ``[8192, 8192, 8192]``; ``""``, ``"none"`` or None -> ``[]`` (identity)."""
    if spec is None:
        return []
    if isinstance(spec, int):
        spec = str(spec)
    text = str(spec).strip().lower()
    if text in ("", "none", "identity"):
        return []
    sizes = []
    for part in text.split("-"):
        if not part.strip().isdigit() or int(part) < 1:
            raise ValueError(
                f"bad expander spec {spec!r}: {part!r} is not a positive width; write layer widths joined by '-', "
                f"e.g. '8192-8192-8192', or 'none' for no expander"
            )
        sizes.append(int(part))
    return sizes


def _norm(kind: str, width: int) -> list[nn.Module]:
    return {"batch": [nn.BatchNorm1d(width)], "layer": [nn.LayerNorm(width)], "none": []}[kind]


class Expander(nn.Sequential):
    """Linear -> norm -> ReLU for each hidden width, then a final Linear without bias (published layout).

    ``norm``: ``"batch"`` (BatchNorm1d, as published), ``"layer"`` (LayerNorm: each sample on its own, so the
    output never depends on the rest of the batch) or ``"none"``. ``Expander(2048, "8192-8192-8192")`` is
    VICReg's ResNet-50 expander; an empty spec is the identity.
    """

    def __init__(self, input_dim: int, spec: str | int | None = DEFAULT_EXPANDER, norm: str = "batch"):
        self.spec = "-".join(str(s) for s in parse_expander_spec(spec))
        self.norm = check_choice(norm, EXPANDER_NORMS, "expander_norm")
        sizes = [input_dim, *parse_expander_spec(spec)]
        layers: list[nn.Module] = []
        for i in range(len(sizes) - 2):
            layers += [nn.Linear(sizes[i], sizes[i + 1]), *_norm(norm, sizes[i + 1]), nn.ReLU(inplace=True)]
        if len(sizes) >= 2:
            layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        super().__init__(*layers)
        self.output_dim = sizes[-1]
