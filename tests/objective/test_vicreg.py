"""The VICReg terms against a plain dense reference, their properties, precision and bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmvicreg import VICRegLoss, covariance_term, invariance_term, variance_term, vicreg_loss
from mmvicreg.objective.vicreg import BranchCoefficients, MultiBranchOutput, ObjectiveOutput, multi_branch_vicreg
from tests.helpers.reference import ref_covariance, ref_variance, ref_vicreg

SHAPES = [(8, 32), (64, 8), (2, 5), (16, 1), (33, 33)]


def _inputs(n, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    za = (torch.randn(n, d, generator=g, dtype=dtype) * 0.7 + 0.3).requires_grad_()
    zb = (torch.randn(n, d, generator=g, dtype=dtype) * 0.5).requires_grad_()
    return za, zb


def _assert_close(actual, expected, rtol):
    scale = expected.abs().max().clamp(min=1e-30)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale.item())


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-6), (torch.float64, 1e-10)])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("algorithm", ["auto", "dense", "gram"])
def test_loss_and_gradients_equal_dense_reference(shape, dtype, rtol, algorithm):
    za, zb = _inputs(*shape, dtype)
    kwargs = dict(variance_weight=(25.0, 10.0), covariance_weight=(1.0, 3.0), gamma=(1.0, 0.5))
    out = vicreg_loss(za, zb, covariance=algorithm, **kwargs)
    ga, gb = torch.autograd.grad(out.loss, (za, zb))
    ref = ref_vicreg(za, zb, mu=(25.0, 10.0), nu=(1.0, 3.0), gamma=(1.0, 0.5))
    ra, rb = torch.autograd.grad(ref, (za, zb))
    assert out.loss.dtype == dtype
    _assert_close(out.loss, ref, rtol)
    _assert_close(ga, ra, rtol)
    _assert_close(gb, rb, rtol)


@pytest.mark.parametrize("shape", SHAPES)
def test_terms_equal_reference_and_output_is_unweighted(shape):
    za, zb = _inputs(*shape, torch.float64)
    out = vicreg_loss(za, zb)
    torch.testing.assert_close(out.invariance, torch.nn.functional.mse_loss(za, zb), rtol=1e-12, atol=0)
    torch.testing.assert_close(out.variance, (ref_variance(za) + ref_variance(zb)) / 2, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(out.covariance, ref_covariance(za) + ref_covariance(zb), rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(out.loss, 25 * out.invariance + 25 * out.variance + out.covariance)


@pytest.mark.parametrize("shape", [(8, 64), (64, 8), (2, 3), (5, 1)])
def test_gram_and_dense_agree_in_value_and_gradient(shape):
    z = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    dense = covariance_term(z, "dense")
    gram = covariance_term(z, "gram")
    (gd,) = torch.autograd.grad(dense, z)
    (gg,) = torch.autograd.grad(gram, z)
    torch.testing.assert_close(dense, gram, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(gd, gg, rtol=1e-10, atol=1e-14)


def test_covariance_gradcheck_both_algorithms():
    z = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: covariance_term(x, "gram"), (z,))
    assert torch.autograd.gradcheck(lambda x: covariance_term(x, "dense"), (z,))


def test_variance_mode_var_hinges_on_variance():
    z = torch.randn(50, 6, dtype=torch.float64) * torch.linspace(0.1, 2.0, 6, dtype=torch.float64)
    expected = torch.clamp(0.8 - z.var(0), min=0).mean()
    torch.testing.assert_close(variance_term(z, gamma=0.8, mode="var"), expected)
    assert variance_term(z, gamma=0.8, mode="var") != variance_term(z, gamma=0.8, mode="std")


def test_module_equals_function():
    za, zb = _inputs(16, 12, torch.float32)
    module = VICRegLoss(invariance_weight=5.0, variance_weight=(3.0, 4.0), covariance_weight=2.0, gamma=0.5)
    out = module(za, zb)
    ref = vicreg_loss(za, zb, invariance_weight=5.0, variance_weight=(3.0, 4.0), covariance_weight=2.0, gamma=0.5)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)
    assert out._fields == ("loss", "invariance", "variance", "covariance")


@pytest.mark.parametrize("algorithm", ["dense", "gram"])
def test_two_branches_are_the_n_branch_sum_with_one_pair(algorithm):
    """One VICReg sum: vicreg_loss is multi_branch_vicreg over the pair (a, b), to the bit, gradients included."""
    za, zb = _inputs(16, 12, torch.float32)
    out = vicreg_loss(za, zb, variance_weight=(25.0, 10.0), covariance_weight=(1.0, 3.0), gamma=(1.0, 0.5),
                      covariance=algorithm)
    coefficients = {"a": BranchCoefficients(25.0, 1.0, 1.0), "b": BranchCoefficients(10.0, 3.0, 0.5)}
    ref = multi_branch_vicreg({"a": za, "b": zb}, coefficients=coefficients, covariance=algorithm)
    assert all(torch.equal(x, y) for x, y in zip(out, ref[:4]))
    grads = torch.autograd.grad(out.loss, (za, zb))
    assert all(torch.equal(g, r) for g, r in zip(grads, torch.autograd.grad(ref.loss, (za, zb))))


def test_one_plain_output_type():
    assert MultiBranchOutput is ObjectiveOutput and issubclass(ObjectiveOutput, tuple)
    assert ObjectiveOutput._fields == ("loss", "invariance", "variance", "covariance", "per_branch", "terms")
    out = multi_branch_vicreg(dict(zip("ab", _inputs(8, 4, torch.float64))))
    assert dict(out.terms) == {} and set(out.per_branch) == {"a", "b"}
    assert set(out.per_branch["a"]) == {"variance", "covariance"}
    assert torch.equal(out.variance, (out.per_branch["a"]["variance"] + out.per_branch["b"]["variance"]) / 2)


# ------------------------------------------------------------------------------------------- precision


def test_bf16_inputs_give_float32_result_of_upcast_inputs():
    za, zb = _inputs(32, 64, torch.float32)
    za16, zb16 = za.detach().bfloat16(), zb.detach().bfloat16()
    out = vicreg_loss(za16, zb16)
    ref = vicreg_loss(za16.float(), zb16.float())
    assert out.loss.dtype == torch.float32
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_autocast_does_not_lower_the_statistics_precision():
    za, zb = _inputs(32, 64, torch.float32)
    ref = vicreg_loss(za, zb)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vicreg_loss(za, zb)
    assert out.loss.dtype == torch.float32
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_half_precision_would_have_lost_the_covariance():
    # Small correlated values: their squared covariances underflow in float16, not in our float32 statistics.
    z = torch.randn(64, 16) * 1e-3
    z[:, 1] = z[:, 0]
    c = covariance_term(z.half())
    assert c > 0
    zc = (z - z.mean(0)).half()
    assert ((zc.T @ zc / 63) ** 2).sum() == 0  # what a half-precision computation would see


# ------------------------------------------------------------------------------------------- properties

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def pairs(draw):
    n = draw(st.integers(2, 12))
    d = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(0.01, 5.0))
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale, torch.randn(
        n, d, generator=g, dtype=torch.float64
    ) * scale


@settings(max_examples=60, deadline=None)
@given(pairs())
def test_loss_is_nonnegative_and_permutation_invariant(pair):
    za, zb = pair
    out = vicreg_loss(za, zb)
    assert out.loss >= 0 and out.invariance >= 0 and out.variance >= 0 and out.covariance >= -1e-12
    perm = torch.randperm(za.shape[0])
    permuted = vicreg_loss(za[perm], zb[perm])
    for a, b in zip(out, permuted):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(pairs())
def test_invariance_is_zero_for_identical_inputs(pair):
    za, _ = pair
    assert invariance_term(za, za.clone()) == 0
    assert vicreg_loss(za, za.clone()).invariance == 0


@settings(max_examples=30, deadline=None)
@given(pairs(), st.floats(0.1, 3.0))
def test_variance_is_zero_when_every_std_reaches_gamma(pair, gamma):
    z, _ = pair
    z = z - z.mean(0)
    std = z.std(0).clamp(min=1e-6)
    z = z / std * (gamma * 1.01)
    if torch.all(z.std(0) > 0):
        assert variance_term(z, gamma=gamma) == 0
    assert variance_term(torch.zeros_like(z), gamma=gamma) > 0


@pytest.mark.parametrize("algorithm", ["dense", "gram"])
def test_covariance_is_zero_for_centred_orthogonal_columns(algorithm):
    x = torch.randn(40, 8, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))  # columns centred (they span centred columns) and orthonormal
    assert q.mean(0).abs().max() < 1e-12
    assert covariance_term(q * 3.0, algorithm).abs() < 1e-12
    assert covariance_term(x, algorithm) > 1e-4


# ------------------------------------------------------------------------------------------- bad input

BAD = [
    (torch.randn(1, 8), torch.randn(1, 8), ValueError, "batch size 1"),
    (torch.randn(8), torch.randn(8), ValueError, "must be 2-D (batch, dim), got 1-D shape (8)"),
    (torch.randn(4, 3, 8), torch.randn(4, 3, 8), ValueError, "got 3-D shape (4, 3, 8)"),
    (torch.randn(4, 8), torch.randn(4, 16), ValueError, "same shape (batch, dim), got (4, 8) and (4, 16)"),
    (torch.randn(4, 8), torch.randn(5, 8), ValueError, "got (4, 8) and (5, 8)"),
    (torch.ones(4, 8, dtype=torch.long), torch.ones(4, 8, dtype=torch.long), TypeError, "must be floating point"),
    ([[1.0, 2.0]], [[1.0, 2.0]], TypeError, "must be a torch.Tensor"),
]


@pytest.mark.parametrize("za,zb,exc,fragment", BAD)
def test_bad_input_raises_one_clear_error(za, zb, exc, fragment):
    with pytest.raises(exc) as info:
        vicreg_loss(za, zb)
    assert fragment in str(info.value)


def test_bad_weights_and_options():
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="variance_weight must be a number or a pair"):
        vicreg_loss(z, z, variance_weight=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="'svd'.*choose one of auto, dense, gram"):
        covariance_term(z, "svd")
    with pytest.raises(ValueError, match="'fast'.*choose one of auto, dense, gram"):
        VICRegLoss(covariance="fast")
    with pytest.raises(ValueError, match="mode is 'mad'.*choose one of std, var"):
        variance_term(z, mode="mad")
