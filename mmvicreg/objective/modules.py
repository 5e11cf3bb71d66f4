"""The objectives the trainer optimises, as ``nn.Module``s over ``{branch: z}`` (built by ``build_objective``).

``forward({branch: z})`` returns an :class:`~mmvicreg.objective.vicreg.ObjectiveOutput` (a plain
``NamedTuple``, the type :func:`~mmvicreg.objective.vicreg.multi_branch_vicreg` returns too):

* ``loss``: the objective being optimised;
* ``invariance``, ``variance``, ``covariance``, ``per_branch``: the VICReg terms with the configured coefficients
  (unweighted, as :func:`~mmvicreg.objective.vicreg.multi_branch_vicreg` reports them). For ``vicreg`` they are
  the terms of the loss itself; for every other objective they are computed under ``torch.no_grad`` as
  diagnostics, so logs stay comparable across objectives and a collapse shows up whatever is being optimised;
* ``terms``: the objective's own detached scalars (its loss per pair, InfoNCE's temperature).

Pairwise objectives (InfoNCE, triplet, Barlow Twins; :mod:`mmvicreg.objective.baselines`) are summed over the
configured pairs (default: every pair of branches): ``L = Σ_{(a,b) ∈ pairs} ℓ(Z_a, Z_b)``.

VICReg with ``ablation`` (the paper's Table 4): ``None``/``"full"``: ``λ s + (Σ_b μ_b v(Z_b))/2 + Σ_b ν_b c(Z_b)``;
``"invariance_variance"``: ν_b = 0 for every branch; ``"invariance"``: μ_b = ν_b = 0 (this one collapses: the
diagnostics show it).

InfoNCE stores ``t = log(1/τ)`` (τ = 0.07 at start) and clamps ``exp(t)`` at 100 as CLIP does; under
torch.distributed its gradient is averaged over ranks, so the temperature stays the same on every rank although
the objective is not wrapped in DistributedDataParallel.

Each ``forward`` checks its inputs once, then calls the unchecked cores of the loss functions; the VICReg loss and
the diagnostics alike are the one VICReg sum (``vicreg._vicreg_sum``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mmvicreg.choices import ABLATIONS, check_choice, did_you_mean
from mmvicreg.distributed import average_grad_over_ranks
from mmvicreg.objective.baselines import _barlow, _infonce, _triplet
from mmvicreg.objective.numerics import check_algorithm, min_rows
from mmvicreg.objective.vicreg import BranchCoefficients, ObjectiveOutput, _vicreg_sum, all_pairs, check_branches

__all__ = [
    "BarlowTwinsObjective",
    "InfoNCEObjective",
    "Objective",
    "ObjectiveOutput",
    "TripletObjective",
    "VICRegObjective",
]

MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(t) at 100 (τ ≥ 0.01)


def _as_pair(pair: Sequence[str], branch_names: list[str]) -> tuple[str, str]:
    pair = tuple(pair)
    if len(pair) != 2 or pair[0] == pair[1]:
        raise ValueError(f"a pair names two different branches, got {list(pair)}")
    for name in pair:
        if name not in branch_names:
            raise ValueError(
                f"pair {list(pair)} names unknown branch {name!r}{did_you_mean(name, branch_names)}; "
                f"branches: {branch_names}"
            )
    return pair  # type: ignore[return-value]


class Objective(nn.Module):
    """Base class: the branches, the pairs, and the VICReg diagnostics shared by every objective.

    A subclass sets ``name`` and writes ``pair_loss`` (on checked inputs); ``forward`` sums it over the pairs.
    """

    name = "objective"

    def __init__(
        self,
        branch_names: Sequence[str],
        *,
        pairs: Sequence[Sequence[str]] | None = None,
        invariance_weight: float = 25.0,
        coefficients: Mapping[str, BranchCoefficients] | None = None,
        eps: float = 1e-4,
        covariance: str = "auto",
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.branch_names = list(branch_names)
        pairs = all_pairs(self.branch_names) if pairs is None else pairs
        self.pairs = [_as_pair(p, self.branch_names) for p in pairs]
        if not self.pairs:
            raise ValueError(
                f"the {self.name} objective needs at least one pair of branches to compare; got branches "
                f"{self.branch_names}"
            )
        unknown = [n for n in (coefficients or {}) if n not in self.branch_names]
        if unknown:
            raise ValueError(f"coefficients given for unknown branches {unknown}; branches: {self.branch_names}")
        self.invariance_weight = float(invariance_weight)
        self.coefficients = {n: BranchCoefficients(*c) for n, c in (coefficients or {}).items()}
        self.eps = eps
        self.covariance = check_algorithm(covariance)
        self.gather = gather

    def min_rows(self) -> int:
        """Rows each rank must pass: what the VICReg statistics need (1 per rank when gathered, else 2)."""
        return min_rows(self.gather)

    def check_inputs(self, zs: Mapping[str, torch.Tensor]) -> None:
        """The one check of a forward's inputs (every paired branch present, (n, d) floats, pairs alike)."""
        check_branches(zs, self.pairs, self.min_rows(), f"the {self.name} objective")

    def vicreg_terms(
        self, zs: Mapping[str, torch.Tensor], coefficients: Mapping[str, BranchCoefficients] | None = None
    ) -> ObjectiveOutput:
        """The N-branch VICReg loss and terms of checked ``zs`` (this objective's coefficients by default)."""
        coefficients = self.coefficients if coefficients is None else coefficients
        return _vicreg_sum(
            zs, self.pairs, self.invariance_weight, coefficients, self.eps, self.gather, self.covariance
        )

    def diagnostics(self, zs: Mapping[str, torch.Tensor]) -> ObjectiveOutput:
        """The VICReg terms of checked ``zs`` with this objective's coefficients, detached (no graph is built)."""
        with torch.no_grad():
            return self.vicreg_terms({k: v.detach() for k, v in zs.items()})

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_terms(self) -> dict[str, torch.Tensor]:
        return {}

    def forward(self, zs: Mapping[str, torch.Tensor]) -> ObjectiveOutput:
        """``loss = Σ_{(a,b) ∈ pairs} pair_loss(Z_a, Z_b)``; the VICReg terms as detached diagnostics."""
        self.check_inputs(zs)
        terms: dict[str, torch.Tensor] = {}
        loss = None
        for a, b in self.pairs:
            value = self.pair_loss(zs[a], zs[b])
            terms[f"{self.name}/{a}-{b}"] = value.detach()
            loss = value if loss is None else loss + value
        assert loss is not None
        terms[self.name] = loss.detach()
        terms.update(self.extra_terms())
        return self.diagnostics(zs)._replace(loss=loss, terms=terms)

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}"


class VICRegObjective(Objective):
    """VICReg, or one of its ablations (``ablation``: None/"full", "invariance_variance", "invariance").

    The loss is the N-branch VICReg with μ_b and/or ν_b set to zero by the ablation; the reported terms are
    always all three (unweighted), so an ablated run still shows its variance and covariance.
    """

    name = "vicreg"

    def __init__(self, branch_names: Sequence[str], *, ablation: str | None = None, **kwargs: Any) -> None:
        super().__init__(branch_names, **kwargs)
        if ablation is not None:
            check_choice(ablation, ABLATIONS, "ablation")
        self.ablation = None if ablation == "full" else ablation
        self.loss_coefficients = {}
        for n in self.branch_names:
            c = self.coefficients.get(n, BranchCoefficients())
            if self.ablation in ("invariance", "invariance_variance"):
                c = c._replace(covariance_weight=0.0)
            if self.ablation == "invariance":
                c = c._replace(variance_weight=0.0)
            self.loss_coefficients[n] = c

    def forward(self, zs: Mapping[str, torch.Tensor]) -> ObjectiveOutput:
        self.check_inputs(zs)
        out = self.vicreg_terms(zs, self.loss_coefficients)
        return out._replace(terms={"vicreg": out.loss.detach()})

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, ablation={self.ablation!r}, invariance_weight={self.invariance_weight}"


class InfoNCEObjective(Objective):
    """Symmetric InfoNCE (CLIP) summed over pairs; one temperature τ shared by all pairs.

    ``logit_scale`` (a parameter when ``learn_temperature``, else a buffer) stores ``t = log(1/τ)``;
    ``exp(t)`` is clamped at 100 in the forward pass, as CLIP does.
    """

    name = "infonce"

    def __init__(
        self, branch_names: Sequence[str], *, temperature: float = 0.07, learn_temperature: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(branch_names, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        init = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)
        self._scale: torch.Tensor | None = None

    def scale(self) -> torch.Tensor:
        """``exp(t)`` clamped at 100, with ``t``'s gradient averaged over ranks when gathering."""
        t = average_grad_over_ranks(self.logit_scale) if self.gather else self.logit_scale
        return t.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def forward(self, zs: Mapping[str, torch.Tensor]) -> ObjectiveOutput:
        self._scale = self.scale()  # computed once per step, shared by the pairs
        try:
            return super().forward(zs)
        finally:
            self._scale = None  # keep no reference to this step's graph

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return _infonce(z_a, z_b, self._scale, self.gather)  # type: ignore[arg-type]

    def extra_terms(self) -> dict[str, torch.Tensor]:
        return {"temperature": (1.0 / self._scale).detach()}  # type: ignore[operator]

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach().clamp(max=math.log(MAX_LOGIT_SCALE)).exp())

    def extra_repr(self) -> str:
        learn = isinstance(self.logit_scale, nn.Parameter)
        return f"pairs={self.pairs}, temperature={self.temperature:.4g}, learn_temperature={learn}"


class TripletObjective(Objective):
    """VSE++ hinge triplet loss (hardest negative when ``max_violation``), summed over pairs."""

    name = "triplet"

    def __init__(
        self, branch_names: Sequence[str], *, margin: float = 0.2, max_violation: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(branch_names, **kwargs)
        self.margin = float(margin)
        self.max_violation = bool(max_violation)

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return _triplet(z_a, z_b, self.margin, self.max_violation, self.gather)

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, margin={self.margin}, max_violation={self.max_violation}"


class BarlowTwinsObjective(Objective):
    """Barlow Twins summed over pairs, λ = ``barlow_lambda`` on the off-diagonal terms; ``covariance`` also picks
    its dense or Gram form."""

    name = "barlow"

    def __init__(self, branch_names: Sequence[str], *, barlow_lambda: float = 0.0051, **kwargs: Any) -> None:
        super().__init__(branch_names, **kwargs)
        self.barlow_lambda = float(barlow_lambda)

    def min_rows(self) -> int:
        return 2  # as barlow_twins_loss: two rows on every rank, gathered or not

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return _barlow(z_a, z_b, self.barlow_lambda, 1e-5, self.gather, self.covariance)

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, barlow_lambda={self.barlow_lambda}"
