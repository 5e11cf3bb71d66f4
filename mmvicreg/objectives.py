"""Objectives selectable with ``loss.name``, and the VCReg regulariser for intermediate layers.

Every objective is an :class:`Objective` (an ``nn.Module``) built by :func:`build_objective`. Its
``forward({branch: z})`` returns an :class:`ObjectiveOutput`, which *is* a
:class:`~mmvicreg.losses.MultiBranchOutput` (same five fields, same order) with one extra attribute ``terms``:

* ``loss``: the objective being optimised;
* ``invariance``, ``variance``, ``covariance``, ``per_branch``: the VICReg terms with the configured coefficients
  (unweighted, as :func:`~mmvicreg.losses.multi_branch_vicreg` reports them). For ``vicreg`` they are the terms
  of the loss itself; for every other objective they are computed under ``torch.no_grad`` as diagnostics, so
  logs stay comparable across objectives and a collapse shows up whatever is being optimised;
* ``terms``: the objective's own scalars (its loss per pair, InfoNCE's temperature), all detached.

Pairwise objectives (``infonce``, ``triplet``, ``barlow``) are computed for each configured pair of branches
(default: every pair) and summed over pairs. For a pair ``(a, b)`` with embeddings ``Z_a, Z_b`` of shape (n, d):

``infonce`` (symmetric InfoNCE as in CLIP; Radford et al., 2021)
    ``ẑ = z / ‖z‖``, ``S_ij = exp(t) · ẑ_a,i · ẑ_b,j``, with a learnable ``t = log(1/τ)`` (τ = 0.07 at start,
    ``exp(t)`` clamped at 100 as in CLIP), and

    ``L = ½ [ (1/n) Σ_i −log softmax_j(S_ij)[i]  +  (1/n) Σ_j −log softmax_i(S_ij)[j] ]``

    i.e. the mean of the cross-entropies of the logits over rows (a → b) and over columns (b → a).

``triplet`` (VSE++ hinge loss; Faghri et al., 2018), margin α = 0.2, cosine similarities ``s_ij = ẑ_a,i · ẑ_b,j``:

    ``max_violation=True``  (VSE++, hardest negative):
    ``L = Σ_i max_{j≠i} [α − s_ii + s_ij]_+  +  Σ_j max_{i≠j} [α − s_jj + s_ij]_+``

    ``max_violation=False`` (VSE0, sum of violations):
    ``L = Σ_i Σ_{j≠i} [α − s_ii + s_ij]_+  +  Σ_j Σ_{i≠j} [α − s_jj + s_ij]_+``

    Summed over the batch, not averaged, as published (the learning rates of VSE++ assume the sum).

``barlow`` (Barlow Twins; Zbontar et al., 2021), λ = 0.0051:
    each dimension standardised over the batch, ``z̃^k = (z^k − mean(z^k)) / sqrt(Var_biased(z^k) + ε)``
    (``BatchNorm1d(affine=False)`` in training mode, ε = 1e-5), the cross-correlation
    ``C = Z̃_aᵀ Z̃_b / n`` (d×d), and

    ``L = Σ_k (1 − C_kk)²  +  λ Σ_{k≠l} C_kl²``

    As for VICReg's covariance, ``Σ_{k≠l} C_kl² = ‖C‖_F² − Σ_k C_kk²`` and
    ``‖Z̃_aᵀ Z̃_b‖_F² = Σ_ij (Z̃_a Z̃_aᵀ)_ij (Z̃_b Z̃_bᵀ)_ij``: when n < d (``covariance="auto"``) the loss is
    computed from two n×n Gram matrices and never builds the d×d matrix.

``vicreg`` with ``ablation`` (the paper's Table 4 ablations):
    ``None`` / ``"full"``: ``λ s + Σ_b (μ_b/2) v(Z_b) + Σ_b ν_b c(Z_b)`` (see :mod:`mmvicreg.losses`);
    ``"invariance_variance"``: ν_b = 0 for every branch;
    ``"invariance"``: μ_b = ν_b = 0 for every branch (this one collapses: the diagnostics show it).

Under ``torch.distributed`` with several processes, the global batch is used where it matters, with
:func:`~mmvicreg.distributed.gather_with_grad` (a no-op on one process): InfoNCE and triplet take each rank's
local rows as anchors against every rank's rows as candidates (the positives are at ``rank·n + i``), so the
negatives are the global batch; Barlow Twins computes its cross-correlation over the global batch (the published
code all-reduces ``C``). InfoNCE's temperature gradient is averaged over ranks, so the temperature stays the same on
every rank even though the objective module is not wrapped in DistributedDataParallel.

All statistics and similarities are computed in float32 (float64 inputs stay float64) with autocast off.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Literal, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mmvicreg.distributed import gather_with_grad, is_distributed, rank
from mmvicreg.losses import (
    BranchCoefficients,
    CovarianceAlgorithm,
    MultiBranchOutput,
    check_embeddings,
    covariance_term,
    multi_branch_vicreg,
    variance_term,
)

__all__ = [
    "ABLATIONS",
    "OBJECTIVES",
    "BarlowTwinsObjective",
    "InfoNCEObjective",
    "Objective",
    "ObjectiveOutput",
    "TripletObjective",
    "VCRegHooks",
    "VICRegObjective",
    "barlow_twins_loss",
    "build_objective",
    "infonce_loss",
    "triplet_loss",
    "vcreg_penalty",
]

OBJECTIVES = ("vicreg", "infonce", "triplet", "barlow")
ABLATIONS = (None, "full", "invariance_variance", "invariance")
MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(t) at 100 (τ ≥ 0.01)


# ----------------------------------------------------------------------------------------------- helpers


def _precise(z: torch.Tensor) -> torch.Tensor:
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def _check_pair(z_a: torch.Tensor, z_b: torch.Tensor, names: tuple[str, str] = ("z_a", "z_b"), min_rows: int = 1):
    check_embeddings(z_a, names[0], min_rows=min_rows)
    check_embeddings(z_b, names[1], min_rows=min_rows)
    if z_a.shape != z_b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape (batch, dim), got {tuple(z_a.shape)} and "
            f"{tuple(z_b.shape)}; both branches need the same batch and the same embedding width"
        )


def _global(z: torch.Tensor, gather: bool) -> tuple[torch.Tensor, int]:
    """Every rank's rows (with gradients) and the offset of this rank's rows in them."""
    if gather and is_distributed():
        return gather_with_grad(z), rank() * z.shape[0]
    return z, 0


class _AverageGradOverRanks(torch.autograd.Function):
    """Identity forward; backward averages the gradient over ranks (for parameters outside DDP)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad / dist.get_world_size()


def _average_grad_over_ranks(x: torch.Tensor) -> torch.Tensor:
    return _AverageGradOverRanks.apply(x) if is_distributed() and x.requires_grad else x


# ----------------------------------------------------------------------------------------------- pair losses


def infonce_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, logit_scale: torch.Tensor | float, *, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) for one pair; ``logit_scale`` = ``exp(t)`` = 1/τ, a tensor to learn it.

    ``L = ½ [CE_rows(S) + CE_cols(S)]`` with ``S = logit_scale · ẑ_a ẑ_bᵀ`` and the matching row/column the
    target; each cross-entropy is averaged over the (local) anchors. Under torch.distributed the candidates are
    the global batch (see the module docstring).
    """
    _check_pair(z_a, z_b)
    with _no_autocast(z_a.device):
        a = F.normalize(_precise(z_a), dim=1)
        b = F.normalize(_precise(z_b), dim=1)
        a_all, offset = _global(a, gather)
        b_all, _ = _global(b, gather)
        targets = torch.arange(a.shape[0], device=a.device) + offset
        scale = logit_scale.to(a.dtype) if isinstance(logit_scale, torch.Tensor) else logit_scale
        a_to_b = F.cross_entropy(scale * a @ b_all.T, targets)
        b_to_a = F.cross_entropy(scale * b @ a_all.T, targets)
        return (a_to_b + b_to_a) / 2


def _hinge_one_way(anchors: torch.Tensor, candidates: torch.Tensor, offset: int, margin: float, max_violation: bool):
    sims = anchors @ candidates.T  # (n, N): row i's positive is column offset + i
    rows = torch.arange(anchors.shape[0], device=anchors.device)
    positive = sims[rows, rows + offset]
    cost = F.relu(margin + sims - positive[:, None])
    is_positive = torch.zeros_like(cost, dtype=torch.bool)
    is_positive[rows, rows + offset] = True
    cost = cost.masked_fill(is_positive, 0.0)
    return cost.max(dim=1).values.sum() if max_violation else cost.sum()


def triplet_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    margin: float = 0.2,
    max_violation: bool = True,
    gather: bool = True,
) -> torch.Tensor:
    """VSE++ hinge triplet loss for one pair, on cosine similarities, summed over the anchors of both directions.

    ``max_violation=True``: ``Σ_i max_{j≠i} [α − s_ii + s_ij]_+ + Σ_j max_{i≠j} [α − s_jj + s_ij]_+``;
    ``max_violation=False``: the same with Σ in place of max. ``s_ij = ẑ_a,i · ẑ_b,j``, α = ``margin``.
    """
    _check_pair(z_a, z_b)
    with _no_autocast(z_a.device):
        a = F.normalize(_precise(z_a), dim=1)
        b = F.normalize(_precise(z_b), dim=1)
        a_all, offset = _global(a, gather)
        b_all, _ = _global(b, gather)
        return _hinge_one_way(a, b_all, offset, margin, max_violation) + _hinge_one_way(
            b, a_all, offset, margin, max_violation
        )


def barlow_twins_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    *,
    lambd: float = 0.0051,
    eps: float = 1e-5,
    gather: bool = True,
    algorithm: CovarianceAlgorithm = "auto",
) -> torch.Tensor:
    """Barlow Twins for one pair: ``Σ_k (1 − C_kk)² + λ Σ_{k≠l} C_kl²`` with ``C = Z̃_aᵀ Z̃_b / n``.

    ``Z̃`` standardises each dimension over the (global) batch with the biased variance and ``eps`` (as
    ``BatchNorm1d(affine=False)``). ``algorithm``: ``"dense"`` builds C (d×d); ``"gram"`` uses
    ``‖C‖_F² = Σ_ij (Z̃_a Z̃_aᵀ)_ij (Z̃_b Z̃_bᵀ)_ij / n²`` (two n×n matrices); ``"auto"`` takes gram when n < d.
    """
    _check_pair(z_a, z_b, min_rows=2)
    if algorithm not in ("auto", "dense", "gram"):
        raise ValueError(f"algorithm must be 'auto', 'dense' or 'gram', got {algorithm!r}")
    with _no_autocast(z_a.device):
        a, _ = _global(_precise(z_a), gather)
        b, _ = _global(_precise(z_b), gather)
        n, d = a.shape

        def standardise(z: torch.Tensor) -> torch.Tensor:
            zc = z - z.mean(dim=0)
            return zc / torch.sqrt(zc.pow(2).mean(dim=0) + eps)

        a, b = standardise(a), standardise(b)
        diagonal = (a * b).sum(dim=0) / n  # C_kk
        gram = n < d if algorithm == "auto" else algorithm == "gram"
        if gram:
            frobenius = ((a @ a.T) * (b @ b.T)).sum() / n**2
        else:
            frobenius = (a.T @ b / n).pow(2).sum()
        off_diagonal = frobenius - diagonal.pow(2).sum()
        return (1 - diagonal).pow(2).sum() + lambd * off_diagonal


# ----------------------------------------------------------------------------------------------- objectives


class ObjectiveOutput(MultiBranchOutput):
    """A :class:`MultiBranchOutput` (``loss, invariance, variance, covariance, per_branch``) plus ``terms``.

    ``terms`` holds the objective's own detached scalars (e.g. ``"infonce"``, ``"infonce/image-text"``,
    ``"temperature"``). Unpacking and indexing see only the five fields.
    """

    terms: dict[str, torch.Tensor]

    def __new__(cls, loss, invariance, variance, covariance, per_branch, terms=None):
        self = super().__new__(cls, loss, invariance, variance, covariance, per_branch)
        self.terms = dict(terms or {})
        return self


class Objective(nn.Module):
    """Base class: the branches, the pairs, and the VICReg diagnostics shared by every objective."""

    name = "objective"

    def __init__(
        self,
        branch_names: Sequence[str],
        *,
        pairs: Sequence[Sequence[str]] | None = None,
        invariance_weight: float = 25.0,
        coefficients: Mapping[str, BranchCoefficients] | None = None,
        eps: float = 1e-4,
        covariance: CovarianceAlgorithm = "auto",
        gather: bool = True,
    ) -> None:
        super().__init__()
        self.branch_names = list(branch_names)
        if pairs is None:
            pairs = [(a, b) for i, a in enumerate(self.branch_names) for b in self.branch_names[i + 1 :]]
        self.pairs = [_as_pair(p, self.branch_names) for p in pairs]
        if not self.pairs:
            raise ValueError(
                f"the {self.name} objective needs at least one pair of branches to compare; got branches "
                f"{self.branch_names}"
            )
        unknown = [n for n in (coefficients or {}) if n not in self.branch_names]
        if unknown:
            raise ValueError(f"coefficients given for unknown branches {unknown}; branches: {self.branch_names}")
        if covariance not in ("auto", "dense", "gram"):
            raise ValueError(f"covariance must be 'auto', 'dense' or 'gram', got {covariance!r}")
        self.invariance_weight = float(invariance_weight)
        self.coefficients = {n: BranchCoefficients(*c) for n, c in (coefficients or {}).items()}
        self.eps = eps
        self.covariance = covariance
        self.gather = gather

    def _check_inputs(self, zs: Mapping[str, torch.Tensor]) -> None:
        missing = [n for n in dict.fromkeys(x for p in self.pairs for x in p) if n not in zs]
        if missing:
            raise ValueError(f"no embeddings for branches {missing}; the {self.name} objective got {list(zs)}")

    def vicreg_terms(self, zs: Mapping[str, torch.Tensor], coefficients=None) -> MultiBranchOutput:
        return multi_branch_vicreg(
            zs,
            self.pairs,
            invariance_weight=self.invariance_weight,
            coefficients=self.coefficients if coefficients is None else coefficients,
            eps=self.eps,
            gather=self.gather,
            covariance=self.covariance,
        )

    def diagnostics(self, zs: Mapping[str, torch.Tensor]) -> MultiBranchOutput:
        """The VICReg terms of ``zs`` with this objective's coefficients, detached (no graph is built)."""
        with torch.no_grad():
            return self.vicreg_terms({k: v.detach() for k, v in zs.items()})

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_terms(self) -> dict[str, torch.Tensor]:
        return {}

    def forward(self, zs: Mapping[str, torch.Tensor]) -> ObjectiveOutput:
        """``loss = Σ_{(a,b) ∈ pairs} pair_loss(Z_a, Z_b)``; the VICReg terms as detached diagnostics."""
        self._check_inputs(zs)
        terms: dict[str, torch.Tensor] = {}
        loss = None
        for a, b in self.pairs:
            _check_pair(zs[a], zs[b], (a, b))
            value = self.pair_loss(zs[a], zs[b])
            terms[f"{self.name}/{a}-{b}"] = value.detach()
            loss = value if loss is None else loss + value
        assert loss is not None
        terms[self.name] = loss.detach()
        terms.update(self.extra_terms())
        diag = self.diagnostics(zs)
        return ObjectiveOutput(loss, diag.invariance, diag.variance, diag.covariance, diag.per_branch, terms)

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}"


def _as_pair(pair: Sequence[str], branch_names: list[str]) -> tuple[str, str]:
    pair = tuple(pair)
    if len(pair) != 2 or pair[0] == pair[1]:
        raise ValueError(f"a pair names two different branches, got {list(pair)}")
    for name in pair:
        if name not in branch_names:
            close = difflib.get_close_matches(name, branch_names, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"pair {list(pair)} names unknown branch {name!r}{hint}; branches: {branch_names}")
    return pair  # type: ignore[return-value]


class VICRegObjective(Objective):
    """VICReg, or one of its ablations (``ablation``: None/"full", "invariance_variance", "invariance").

    The loss is :func:`~mmvicreg.losses.multi_branch_vicreg` with μ_b and/or ν_b set to zero by the ablation;
    the reported terms are always all three (unweighted), so an ablated run still shows its variance and
    covariance.
    """

    name = "vicreg"

    def __init__(self, branch_names: Sequence[str], *, ablation: str | None = None, **kwargs: Any) -> None:
        super().__init__(branch_names, **kwargs)
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown VICReg ablation {ablation!r}; choose one of {list(ABLATIONS)}")
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
        self._check_inputs(zs)
        out = self.vicreg_terms(zs, self.loss_coefficients)
        return ObjectiveOutput(*out, terms={"vicreg": out.loss.detach()})

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
        t = _average_grad_over_ranks(self.logit_scale) if self.gather else self.logit_scale
        return t.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def forward(self, zs: Mapping[str, torch.Tensor]) -> ObjectiveOutput:
        self._scale = self.scale()  # computed once per step, shared by the pairs
        try:
            return super().forward(zs)
        finally:
            self._scale = None  # keep no reference to this step's graph

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return infonce_loss(z_a, z_b, self._scale, gather=self.gather)

    def extra_terms(self) -> dict[str, torch.Tensor]:
        return {"temperature": (1.0 / self._scale).detach()}

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
        return triplet_loss(z_a, z_b, margin=self.margin, max_violation=self.max_violation, gather=self.gather)

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, margin={self.margin}, max_violation={self.max_violation}"


class BarlowTwinsObjective(Objective):
    """Barlow Twins summed over pairs, λ = ``barlow_lambda`` on the off-diagonal terms."""

    name = "barlow"

    def __init__(self, branch_names: Sequence[str], *, barlow_lambda: float = 0.0051, **kwargs: Any) -> None:
        super().__init__(branch_names, **kwargs)
        self.barlow_lambda = float(barlow_lambda)

    def pair_loss(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return barlow_twins_loss(
            z_a, z_b, lambd=self.barlow_lambda, gather=self.gather, algorithm=self.covariance  # type: ignore[arg-type]
        )

    def extra_repr(self) -> str:
        return f"pairs={self.pairs}, barlow_lambda={self.barlow_lambda}"


def build_objective(
    name: str,
    branch_names: Sequence[str],
    *,
    pairs: Sequence[Sequence[str]] | None = None,
    invariance_weight: float = 25.0,
    coefficients: Mapping[str, BranchCoefficients] | None = None,
    eps: float = 1e-4,
    covariance: CovarianceAlgorithm = "auto",
    temperature: float = 0.07,
    learn_temperature: bool = True,
    margin: float = 0.2,
    max_violation: bool = True,
    barlow_lambda: float = 0.0051,
    ablation: str | None = None,
    gather: bool = True,
) -> Objective:
    """The objective called ``name`` (``loss.name``): one of ``vicreg``, ``infonce``, ``triplet``, ``barlow``.

    ``pairs``, ``invariance_weight``, ``coefficients``, ``eps`` and ``covariance`` configure the VICReg terms
    (the loss for ``vicreg``, the diagnostics otherwise); ``covariance`` also picks Barlow Twins' dense/gram
    form. ``ablation`` applies to ``vicreg`` only; the other options to their own objective, and are ignored
    by the rest (so one config section serves every objective).
    """
    shared = dict(
        pairs=pairs,
        invariance_weight=invariance_weight,
        coefficients=coefficients,
        eps=eps,
        covariance=covariance,
        gather=gather,
    )
    if name != "vicreg" and ablation not in (None, "full"):
        raise ValueError(f"loss.ablation={ablation!r} applies to the vicreg objective only, not to {name!r}")
    if name == "vicreg":
        return VICRegObjective(branch_names, ablation=ablation, **shared)
    if name == "infonce":
        return InfoNCEObjective(branch_names, temperature=temperature, learn_temperature=learn_temperature, **shared)
    if name == "triplet":
        return TripletObjective(branch_names, margin=margin, max_violation=max_violation, **shared)
    if name == "barlow":
        return BarlowTwinsObjective(branch_names, barlow_lambda=barlow_lambda, **shared)
    close = difflib.get_close_matches(str(name), OBJECTIVES, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown objective loss.name={name!r}{hint}; known objectives: {', '.join(OBJECTIVES)}")


# ----------------------------------------------------------------------------------------------- VCReg


Spatial = Literal["locations", "pool", "flatten"]


def _as_samples(x: torch.Tensor, spatial: Spatial, channel_dim: int | None) -> torch.Tensor:
    """An (m, c) matrix of samples × features from a layer output of shape (n, ...)."""
    if x.ndim == 2:
        return x
    if x.ndim < 2:
        raise ValueError(f"VCReg needs a batch of features, got a {x.ndim}-D output of shape {tuple(x.shape)}")
    if spatial == "flatten":
        return x.flatten(1)
    cdim = channel_dim if channel_dim is not None else (1 if x.ndim >= 4 else -1)
    cdim = cdim % x.ndim
    if cdim == 0:
        raise ValueError("channel_dim cannot be the batch dimension (0)")
    x = x.movedim(cdim, -1)  # (n, *spatial, c)
    if spatial == "pool":
        return x.flatten(1, -2).mean(dim=1)
    return x.reshape(-1, x.shape[-1])


def vcreg_penalty(
    x: torch.Tensor,
    *,
    variance_weight: float = 1.0,
    covariance_weight: float = 0.04,
    gamma: float = 1.0,
    eps: float = 1e-4,
    spatial: Spatial = "locations",
    channel_dim: int | None = None,
    covariance: CovarianceAlgorithm = "auto",
    gather: bool = False,
) -> torch.Tensor:
    """VCReg on one layer output: ``μ·v_γ(Z) + ν·c(Z)`` with v and c the VICReg terms (:mod:`mmvicreg.losses`).

    ``Z`` (m, c) is made from ``x`` according to ``spatial``:

    * ``"locations"`` (default, as in the VCReg paper): every spatial position is a sample, ``m = n·h·w``:
      (n, c, h, w) → (n·h·w, c); a 3-D (n, L, d) token sequence → (n·L, d);
    * ``"pool"``: average over the spatial positions, (n, c);
    * ``"flatten"``: (n, c·h·w).

    ``channel_dim`` (default: 1 for 4-D and 5-D outputs, the (n, c, h, w) convention of convolutions, and -1 for
    3-D outputs, the (n, L, d) convention of sequence models) says which axis holds the features; pass 1 for a
    Conv1d output (n, c, L).
    """
    z = _as_samples(x, spatial, channel_dim)
    if gather:
        z = gather_with_grad(z)
    return variance_weight * variance_term(z, gamma, eps) + covariance_weight * covariance_term(z, covariance)


class VCRegHooks:
    """Variance–covariance regularisation (VCReg; Zhu et al., 2023) of chosen intermediate layers of any model.

    Forward hooks on the modules named in ``layers`` (dotted names from ``model.named_modules()``) keep each
    output produced while gradients are enabled; :meth:`loss` returns

        ``Σ_{layer, call} μ·v_γ(Z) + ν·c(Z)``

    over everything collected since the previous call (one term per call of a layer, so a module run on two
    views gives two terms with their own statistics), then forgets it. Add it to any loss — a classifier's
    cross-entropy for supervised VCReg, or an SSL objective::

        hooks = VCRegHooks(model, ["layer2", "layer3"], variance_weight=1.0, covariance_weight=0.04)
        loss = F.cross_entropy(model(x), y) + hooks.loss()

    Why each spatial location is a sample by default (``spatial="locations"``, (n, c, h, w) → (n·h·w, c)), as
    the VCReg paper does: the features a later layer reads are the c channels, so those are what the variance
    and covariance should spread and decorrelate; n·h·w samples estimate a c×c covariance well even with a small
    batch; flattening (c·h·w features from n samples) would be rank-deficient and would also push apart
    neighbouring pixels, which natural images correlate by nature; pooling keeps only n samples and ignores the
    variation across positions. ``"pool"`` and ``"flatten"`` are available.

    Outputs produced under ``torch.no_grad()`` (evaluation) are not collected. A module that returns a tuple or
    list contributes its first tensor (e.g. a GRU's output sequence). ``gather=True`` uses the global batch
    under torch.distributed (costly for large feature maps; off by default). Use as a context manager, or call
    :meth:`remove` to detach the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str],
        *,
        variance_weight: float = 1.0,
        covariance_weight: float = 0.04,
        gamma: float = 1.0,
        eps: float = 1e-4,
        spatial: Spatial = "locations",
        channel_dim: int | None = None,
        covariance: CovarianceAlgorithm = "auto",
        gather: bool = False,
    ) -> None:
        layers = list(dict.fromkeys(layers))
        if not layers:
            raise ValueError("VCRegHooks needs at least one layer name (see model.named_modules())")
        if spatial not in ("locations", "pool", "flatten"):
            raise ValueError(f"spatial must be 'locations', 'pool' or 'flatten', got {spatial!r}")
        modules = dict(model.named_modules())
        available = [n for n in modules if n]
        for name in layers:
            if name not in modules or not name:
                close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
                hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
                shown = ", ".join(available[:30]) + (", ..." if len(available) > 30 else "")
                raise ValueError(
                    f"VCReg layer {name!r} is not a module of {type(model).__name__}{hint} "
                    f"(its modules: {shown})"
                )
        self.layers = layers
        self.options = dict(
            variance_weight=variance_weight,
            covariance_weight=covariance_weight,
            gamma=gamma,
            eps=eps,
            spatial=spatial,
            channel_dim=channel_dim,
            covariance=covariance,
            gather=gather,
        )
        self.enabled = True
        self.last_terms: dict[str, torch.Tensor] = {}
        self._collected: list[tuple[str, torch.Tensor]] = []
        self._handles = [modules[name].register_forward_hook(self._hook_for(name)) for name in layers]

    def _hook_for(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self.enabled or not torch.is_grad_enabled():
                return
            if isinstance(output, (tuple, list)):
                output = next((o for o in output if isinstance(o, torch.Tensor)), None)
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"VCReg layer {name!r} ({type(module).__name__}) returned {type(output).__name__}; "
                    f"choose a layer whose output is a tensor (or a tuple starting with one)"
                )
            self._collected.append((name, output))

        return hook

    def loss(self) -> torch.Tensor:
        """The summed VCReg penalty of everything collected since the last call; clears the collection."""
        collected, self._collected = self._collected, []
        if not collected:
            raise RuntimeError(
                f"VCReg collected no activations from {self.layers}: run the model forward (with gradients "
                f"enabled) before calling loss(), and call loss() once per forward"
            )
        total = None
        terms: dict[str, torch.Tensor] = {}
        for name, x in collected:
            value = vcreg_penalty(x, **self.options)  # type: ignore[arg-type]
            key = f"vcreg/{name}"
            terms[key] = terms[key] + value.detach() if key in terms else value.detach()
            total = value if total is None else total + value
        self.last_terms = terms
        return total  # type: ignore[return-value]

    def clear(self) -> None:
        """Forget what was collected (e.g. after a skipped step)."""
        self._collected = []

    def remove(self) -> None:
        """Detach every hook; nothing is collected afterwards."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._collected = []

    def __enter__(self) -> "VCRegHooks":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"VCRegHooks(layers={self.layers}, {opts})"
