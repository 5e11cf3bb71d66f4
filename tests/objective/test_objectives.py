"""The objectives (InfoNCE, VSE++ triplet, Barlow Twins, VICReg ablations) and their builder.

Each loss is checked against a plain reference written here from the published equations, not from the package.
This module is also the worker of its own two-process test: ``python -m tests.objective.test_objectives RANK WORLD
INIT OUT`` from the repository root.
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmvicreg.choices import OBJECTIVES

PAIRWISE = tuple(n for n in OBJECTIVES if n != "supervised")  # supervised: one branch and labels (test_supervised.py)
from mmvicreg.config import BranchConfig, LossConfig
from mmvicreg.objective import (
    BranchCoefficients,
    MultiBranchOutput,
    ObjectiveOutput,
    barlow_twins_loss,
    build_objective,
    infonce_loss,
    multi_branch_vicreg,
    triplet_loss,
)
from tests.helpers import REPO_ROOT
from tests.helpers.reference import ref_covariance, ref_variance


def build(name, branch_names, coefficients=None, **loss):
    """``build_objective`` from a ``LossConfig(name, **loss)`` and one ``BranchConfig`` per branch, carrying its
    ``BranchCoefficients`` where given (else the global ``loss.*`` values)."""
    coefficients = coefficients or {}
    branches = {b: BranchConfig(**coefficients[b]._asdict() if b in coefficients else {}) for b in branch_names}
    return build_objective(LossConfig(name=name, **loss), branches)


def _pair(n=12, d=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    za = torch.randn(n, d, generator=g, dtype=dtype)
    zb = za + 0.8 * torch.randn(n, d, generator=g, dtype=dtype)
    return za.requires_grad_(), zb.requires_grad_()


# ----------------------------------------------------------------------------------------------- references


def ref_infonce(za, zb, tau):
    a = za / za.norm(dim=1, keepdim=True)
    b = zb / zb.norm(dim=1, keepdim=True)
    logits = a @ b.T / tau
    n = za.shape[0]
    rows = -sum(torch.log_softmax(logits[i], 0)[i] for i in range(n)) / n  # image i -> caption i
    cols = -sum(torch.log_softmax(logits[:, j], 0)[j] for j in range(n)) / n  # caption j -> image j
    return (rows + cols) / 2


def ref_barlow(za, zb, lambd, eps=1e-5):
    n, d = za.shape

    def standardise(z):
        mean = z.sum(0) / n
        var = ((z - mean) ** 2).sum(0) / n  # biased, as BatchNorm1d normalises
        return (z - mean) / torch.sqrt(var + eps)

    a, b = standardise(za), standardise(zb)
    loss = za.new_zeros(())
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss = loss + ((1 - c_ij) ** 2 if i == j else lambd * c_ij**2)
    return loss


# ----------------------------------------------------------------------------------------------- InfoNCE


def test_infonce_equals_reference_and_learns_its_temperature():
    za, zb = _pair()
    objective = build("infonce", ["image", "text"], temperature=0.1)
    out = objective({"image": za, "text": zb})
    ref = ref_infonce(za, zb, 0.1)
    torch.testing.assert_close(out.loss, ref.to(out.loss.dtype), rtol=1e-6, atol=1e-6)
    assert [n for n, _ in objective.named_parameters()] == ["logit_scale"]
    out.loss.backward()
    assert objective.logit_scale.grad is not None and objective.logit_scale.grad.abs() > 0
    assert za.grad is not None and zb.grad is not None
    torch.testing.assert_close(out.terms["temperature"], torch.tensor(0.1), rtol=1e-6, atol=0)

    # The function form, in float64 end to end, against the reference to float64 precision.
    torch.testing.assert_close(infonce_loss(za, zb, 10.0), ref, rtol=1e-12, atol=0)


def test_infonce_fixed_temperature_is_a_buffer_and_scale_is_clamped():
    fixed = build("infonce", ["a", "b"], temperature=0.05, learn_temperature=False)
    assert list(fixed.parameters()) == [] and "logit_scale" in dict(fixed.named_buffers())
    tiny = build("infonce", ["a", "b"], temperature=1e-4)
    assert tiny.temperature == pytest.approx(0.01)  # exp(t) clamped at 100, as CLIP
    with pytest.raises(ValueError, match="temperature"):
        build("infonce", ["a", "b"], temperature=0.0)


@pytest.mark.parametrize("name", ["infonce", "triplet"])
def test_matching_inputs_score_lower_than_shuffled(name):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 8, generator=g)
    shuffled = z[torch.randperm(16, generator=g)]
    objective = build(name, ["a", "b"])
    assert objective({"a": z, "b": z}).loss < objective({"a": z, "b": shuffled}).loss


# ----------------------------------------------------------------------------------------------- triplet


# Three unit vectors per branch; s_ij = a_i · b_j is
#   [[0.80, 0.0, 1.0],
#    [0.60, 1.0, 0.0],
#    [0.96, 0.8, 0.6]]
# Rows (a_i against every b_j, hinge 0.2 - s_ii + s_ij): row 0's hardest negative is b_2 (0.4), row 1 has no
# violation, row 2's hardest is b_0 (0.56; b_1 also violates by 0.4). Columns (b_j against every a_i): column 0's
# hardest is a_2 (0.36), column 1 has none, column 2's is a_0 (0.6).
TRIPLET_A = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
TRIPLET_B = [[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize("max_violation,expected", [(True, 0.4 + 0.56 + 0.36 + 0.6), (False, 0.4 + 0.96 + 0.36 + 0.6)])
def test_triplet_equals_hand_computed_value(max_violation, expected):
    za = torch.tensor(TRIPLET_A, dtype=torch.float64)
    zb = torch.tensor(TRIPLET_B, dtype=torch.float64) * 3.0  # scale is irrelevant: cosine similarity
    loss = triplet_loss(za, zb, margin=0.2, max_violation=max_violation)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    objective = build("triplet", ["a", "b"], max_violation=max_violation)
    torch.testing.assert_close(objective({"a": za, "b": zb}).loss, loss)


def test_triplet_hardest_negative_gets_the_gradient():
    za = torch.tensor(TRIPLET_A, dtype=torch.float64, requires_grad=True)
    zb = torch.tensor(TRIPLET_B, dtype=torch.float64)
    triplet_loss(za, zb).backward()
    # a_1 has no violation in either direction, so only the hardest negatives' anchors receive gradient.
    assert torch.all(za.grad[1] == 0)
    assert za.grad[0].abs().sum() > 0 and za.grad[2].abs().sum() > 0


# ----------------------------------------------------------------------------------------------- Barlow Twins


@pytest.mark.parametrize("shape", [(6, 3), (3, 5)])
@pytest.mark.parametrize("algorithm", ["dense", "gram", "auto"])
def test_barlow_equals_explicit_loops(shape, algorithm):
    za, zb = _pair(*shape)
    loss = barlow_twins_loss(za, zb, lambd=0.0051, algorithm=algorithm)
    ref = ref_barlow(za, zb, 0.0051)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(loss, (za, zb))
    ref_grads = torch.autograd.grad(ref, (za, zb))
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


def test_barlow_objective_uses_lambda_and_ignores_scale():
    za, zb = _pair(8, 4)
    out = build("barlow", ["a", "b"], barlow_lambda=0.5)({"a": za, "b": zb})
    torch.testing.assert_close(out.loss, ref_barlow(za, zb, 0.5), rtol=1e-10, atol=1e-12)
    scaled = barlow_twins_loss(3 * za + 1, zb, lambd=0.5)  # standardisation removes scale and shift (up to ε)
    torch.testing.assert_close(scaled, out.loss, rtol=1e-4, atol=0)


# ----------------------------------------------------------------------------------------------- VICReg


def test_vicreg_objective_equals_multi_branch_vicreg():
    za, zb = _pair(10, 7)
    coefficients = {"a": BranchCoefficients(25.0, 1.0, 1.0), "b": BranchCoefficients(10.0, 2.0, 0.5)}
    out = build("vicreg", ["a", "b"], coefficients=coefficients)({"a": za, "b": zb})
    ref = multi_branch_vicreg({"a": za, "b": zb}, coefficients=coefficients)
    assert isinstance(out, MultiBranchOutput) and isinstance(out, ObjectiveOutput)
    assert torch.equal(out.loss, ref.loss) and torch.equal(out.covariance, ref.covariance)


def test_ablation_invariance_only_is_lambda_times_invariance():
    za, zb = _pair(10, 7)
    out = build("vicreg", ["a", "b"], ablation="invariance", invariance_weight=25.0)({"a": za, "b": zb})
    assert torch.equal(out.loss, 25.0 * out.invariance)
    torch.testing.assert_close(out.invariance, F.mse_loss(za, zb))
    assert out.variance > 0 and out.covariance > 0  # still reported, so a collapse stays visible


def test_ablation_invariance_variance_has_no_covariance_contribution():
    za, zb = _pair(10, 7)
    coefficients = {"a": BranchCoefficients(25.0, 3.0, 1.0), "b": BranchCoefficients(10.0, 2.0, 0.5)}
    out = build("vicreg", ["a", "b"], ablation="invariance_variance", coefficients=coefficients)(
        {"a": za, "b": zb}
    )
    expected = 25.0 * F.mse_loss(za, zb) + 25.0 / 2 * ref_variance(za, 1.0) + 10.0 / 2 * ref_variance(zb, 0.5)
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=0)
    assert out.covariance > 0
    torch.testing.assert_close(out.covariance, ref_covariance(za) + ref_covariance(zb), rtol=1e-10, atol=0)
    # The gradient is that of λ·s + Σ μ_b/2·v_b alone: the covariance pushes nothing.
    (g,) = torch.autograd.grad(out.loss, za)
    (g_ref,) = torch.autograd.grad(expected, za)
    torch.testing.assert_close(g, g_ref)


def test_full_ablation_is_vicreg_and_bad_ablations_fail():
    za, zb = _pair(10, 7)
    full = build("vicreg", ["a", "b"], ablation="full")({"a": za, "b": zb})
    assert torch.equal(full.loss, multi_branch_vicreg({"a": za, "b": zb}).loss)
    with pytest.raises(ValueError, match="invariance_variance"):
        build("vicreg", ["a", "b"], ablation="no_covariance")
    with pytest.raises(ValueError, match="vicreg objective only"):
        build("infonce", ["a", "b"], ablation="invariance")


# ----------------------------------------------------------------------------------------------- shared behaviour


def test_unknown_objective_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        build("info_nce", ["a", "b"])
    message = str(info.value)
    assert "'infonce'" in message and all(name in message for name in OBJECTIVES)


@pytest.mark.parametrize("name", ["infonce", "triplet", "barlow"])
def test_diagnostics_are_detached_vicreg_terms(name):
    za, zb = _pair(10, 7)
    coefficients = {"a": BranchCoefficients(25.0, 1.0, 2.0), "b": BranchCoefficients(5.0, 1.0, 1.0)}
    out = build(name, ["a", "b"], coefficients=coefficients)({"a": za, "b": zb})
    ref = multi_branch_vicreg({"a": za.detach(), "b": zb.detach()}, coefficients=coefficients)
    assert out.loss.requires_grad
    for got, want in [(out.invariance, ref.invariance), (out.variance, ref.variance), (out.covariance, ref.covariance)]:
        assert not got.requires_grad
        torch.testing.assert_close(got, want)
    assert set(out.per_branch) == {"a", "b"} and not out.per_branch["a"]["variance"].requires_grad
    assert out.terms[name] == out.loss.detach() and f"{name}/a-b" in out.terms


@pytest.mark.parametrize("name", ["infonce", "triplet", "barlow"])
def test_pairwise_objectives_sum_over_the_configured_pairs(name):
    g = torch.Generator().manual_seed(3)
    zs = {k: torch.randn(8, 5, generator=g, dtype=torch.float64) for k in ("x", "y", "w")}
    objective = build(name, ["x", "y", "w"])
    assert objective.pairs == [("x", "y"), ("x", "w"), ("y", "w")]
    out = objective(zs)
    torch.testing.assert_close(out.loss, sum(out.terms[f"{name}/{a}-{b}"] for a, b in objective.pairs))
    two = build(name, ["x", "y", "w"], pairs=[["x", "w"]])
    assert two.pairs == [("x", "w")]
    torch.testing.assert_close(two(zs).loss, out.terms[f"{name}/x-w"])
    with pytest.raises(ValueError, match="did you mean 'w'"):
        build(name, ["x", "y", "w"], pairs=[["x", "ww"]])
    with pytest.raises(ValueError, match="no embeddings for branches"):
        objective({"x": zs["x"], "y": zs["y"]})


@pytest.mark.parametrize("name", PAIRWISE)
def test_half_precision_inputs_give_a_float32_loss(name):
    za, zb = _pair(8, 6, dtype=torch.bfloat16)
    out = build(name, ["a", "b"])({"a": za, "b": zb})
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


@pytest.mark.parametrize("name,extra", [("vicreg", {}), ("vicreg", {"ablation": "invariance_variance"}),
                                        ("infonce", {}), ("triplet", {}), ("barlow", {})])
def test_a_few_steps_lower_each_objective_on_a_toy_problem(name, extra):
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    views = {"a": x + 0.1 * torch.randn_like(x), "b": x @ torch.randn(10, 10) * 0.3}  # a linear "other modality"
    towers = nn.ModuleDict({k: nn.Linear(10, 16) for k in views})
    objective = build(name, list(views), **extra)
    optimizer = torch.optim.Adam([*towers.parameters(), *objective.parameters()], lr=1e-2)
    losses = []
    for _ in range(25):
        out = objective({k: towers[k](v) for k, v in views.items()})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


# ----------------------------------------------------------------------------------------------- two processes


def _global_batch():
    g = torch.Generator().manual_seed(0)
    za = torch.randn(8, 6, generator=g, dtype=torch.float64)
    zb = za + 0.5 * torch.randn(8, 6, generator=g, dtype=torch.float64)
    return za, zb


def _run_objectives(za, zb):
    """Loss, input gradients and the temperature gradient of every pairwise objective."""
    results = {}
    for name in ("infonce", "triplet", "barlow"):
        a, b = za.detach().clone().requires_grad_(), zb.detach().clone().requires_grad_()
        objective = build(name, ["a", "b"]).double()
        out = objective({"a": a, "b": b})
        out.loss.backward()
        results[name] = {"loss": out.loss.detach(), "ga": a.grad, "gb": b.grad, "inv": out.invariance}
        if name == "infonce":
            results[name]["gt"] = objective.logit_scale.grad
    return results


def test_two_ranks_use_the_global_batch(tmp_path):
    world = 2
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.objective.test_objectives", str(r), str(world), str(tmp_path / "init"),
             str(tmp_path)],
            cwd=REPO_ROOT,
            env=env,
        )
        for r in range(world)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    single = _run_objectives(*_global_batch())
    n = 8 // world
    for name, ref in single.items():
        losses = [r[name]["loss"] for r in ranks]
        if name == "infonce":  # mean over local anchors: the ranks' mean is the global mean
            torch.testing.assert_close(sum(losses) / world, ref["loss"])
            scale = world  # each rank's input gradient is that of the sum of the ranks' losses
        elif name == "triplet":  # summed over anchors: the ranks' sum is the global sum
            torch.testing.assert_close(sum(losses), ref["loss"])
            scale = 1
        else:  # Barlow Twins: every rank computes the global cross-correlation
            for loss in losses:
                torch.testing.assert_close(loss, ref["loss"])
            scale = world
        for rank, r in enumerate(ranks):
            rows = slice(rank * n, (rank + 1) * n)
            torch.testing.assert_close(r[name]["ga"] / scale, ref["ga"][rows])
            torch.testing.assert_close(r[name]["gb"] / scale, ref["gb"][rows])
    # The temperature's gradient is averaged over ranks, equal everywhere and equal to one process's.
    for r in ranks:
        torch.testing.assert_close(r["infonce"]["gt"], single["infonce"]["gt"])


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    za, zb = _global_batch()
    n = za.shape[0] // world
    results = _run_objectives(za[rank * n : (rank + 1) * n], zb[rank * n : (rank + 1) * n])
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # destroy_process_group() on gloo can abort at exit on torch 2.14 (see dist_worker.py)


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
