"""Distance covariance / correlation: agreement with the dcor package, properties, gradients."""

import doctest
import subprocess
import sys

import dcor
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import splitlearn.privacy.dcor as dcor_module
import splitlearn.privacy.nopeek as nopeek_module
from splitlearn.privacy import distance_correlation, distance_covariance, leakage

PROPERTY = settings(max_examples=50, deadline=2000, derandomize=True)
KINDS = ("normal", "grid", "constant_columns", "duplicate_rows", "constant")


@st.composite
def samples(draw, n: int, like: np.ndarray | None = None) -> np.ndarray:
    """(n, d) or image-shaped (n, c, h, w) float64 samples, possibly degenerate; with ``like``,
    possibly a noisy function of it."""
    shape = draw(st.one_of(st.tuples(st.integers(1, 6)), st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))))
    kind = draw(st.sampled_from(KINDS + (("dependent",) if like is not None else ())))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(0, 3, (n, *shape)).astype(float) if kind == "grid" else rng.standard_normal((n, *shape))
    flat = x.reshape(n, -1)
    if kind == "constant_columns":
        flat[:, rng.random(flat.shape[1]) < 0.5] = 1.5
    elif kind == "duplicate_rows":
        flat[:] = flat[rng.integers(0, max(n // 2, 1), n)]
    elif kind == "constant":
        flat[:] = -0.7
    elif kind == "dependent":
        flat[:] = like.reshape(n, -1)[:, :1] ** 2 + 0.1 * flat
    return x


@PROPERTY
@given(n=st.integers(2, 64), data=st.data())
def test_matches_dcor_package(n, data):
    x = data.draw(samples(n))
    z = data.draw(samples(n, like=x))
    xt, zt = torch.from_numpy(x), torch.from_numpy(z)
    # dcor's default fast method for 1-D data is wrong at constant input (dCor 1.23 for a
    # constant z): compare with its direct definition.
    xf, zf, kw = x.reshape(n, -1), z.reshape(n, -1), {"method": "naive"}
    for ours, reference in [
        (distance_correlation(xt, zt), dcor.distance_correlation(xf, zf, **kw)),
        (distance_correlation(xt, zt, squared=True), dcor.distance_correlation_sqr(xf, zf, **kw)),
        (distance_covariance(xt, zt), dcor.distance_covariance(xf, zf, **kw)),
        (distance_covariance(xt, zt, squared=True), dcor.distance_covariance_sqr(xf, zf, **kw)),
    ]:
        assert ours.dtype == torch.float64 and ours.shape == ()
        assert abs(float(ours) - float(reference)) <= 1e-6


@PROPERTY
@given(n=st.integers(3, 40), data=st.data())
def test_properties(n, data):
    x = torch.from_numpy(data.draw(samples(n)))
    z = torch.from_numpy(data.draw(samples(n, like=x.numpy())))
    r = float(distance_correlation(x, z))
    assert -1e-12 <= r <= 1 + 1e-12
    assert float(distance_correlation(z, x)) == pytest.approx(r, abs=1e-12)
    if float(distance_covariance(x, x)) > 1e-6:  # not constant
        assert float(distance_correlation(x, x)) == pytest.approx(1.0, abs=1e-9)
    g = torch.Generator().manual_seed(n)
    q, _ = torch.linalg.qr(torch.randn(x[0].numel(), x[0].numel(), generator=g, dtype=torch.float64))
    perm = torch.randperm(n, generator=g)
    for x2, z2 in [
        (x + 3.0, z - 1.5),  # shifts
        ((x.flatten(1) @ q).reshape(x.shape), z),  # orthogonal rotation
        (0.2 * x, 7.0 * z),  # positive scaling
        (x[perm], z[perm]),  # the same permutation of the samples
    ]:
        assert float(distance_correlation(x2, z2)) == pytest.approx(r, abs=1e-9)


def test_independent_small_dependent_large_at_large_n():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 3, generator=g, dtype=torch.float64)
    assert float(distance_correlation(x, torch.randn(1000, 2, generator=g, dtype=torch.float64))) < 0.1
    # Uncorrelated but dependent: dCor sees what Pearson correlation misses.
    assert float(distance_correlation(x[:, :1], x[:, :1] ** 2)) > 0.4


def test_batched_equals_per_problem_and_float32_is_close():
    g = torch.Generator().manual_seed(1)
    x, z = torch.randn(4, 20, 1, 8, 8, generator=g), torch.randn(4, 20, 3, generator=g)
    z[0] = x[0].flatten(1)[:, :3] ** 2
    z[1, 10:] = z[1, :10]  # duplicate rows
    for squared in (False, True):
        batched = distance_correlation(x, z, squared=squared, batched=True)
        assert batched.shape == (4,)
        single = torch.stack([distance_correlation(a.double(), b.double(), squared=squared) for a, b in zip(x, z)])
        torch.testing.assert_close(batched.double(), single, atol=1e-5, rtol=0)
    assert distance_covariance(x, z, batched=True).shape == (4,)


def _grads(x, z, fn):
    x, z = x.clone().requires_grad_(), z.clone().requires_grad_()
    fn(x, z).backward()
    return x.grad, z.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "fn",
    [
        distance_correlation,
        lambda x, z: distance_correlation(x, z, squared=True),
        distance_covariance,
        lambda x, z: distance_covariance(x, z, squared=True),
    ],
)
def test_gradients_finite_at_degenerate_inputs(fn, dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 1, 4, 4, generator=g, dtype=dtype)
    dup = x.clone()
    dup[8:] = dup[:8]
    near = x.clone()
    near[1] = near[0] + 1e-7
    cases = [
        (x, torch.full((16, 5), 0.3, dtype=dtype)),  # constant z
        (x, torch.zeros(16, 5, dtype=dtype)),  # all-zero z (dead ReLUs)
        (dup, dup[:, 0, 0, :2]),  # duplicate rows on both sides
        (near, near.flatten(1)[:, :3]),  # near-duplicate rows
        (x, x),  # dCor = 1
        (x[:2], x[:2, 0, 0, :1]),  # n = 2
    ]
    for a, b in cases:
        value = fn(a, b)
        assert torch.isfinite(value)
        for grad in _grads(a, b, fn):
            assert grad is not None and torch.isfinite(grad).all()


def test_constant_z_has_zero_correlation():
    x = torch.randn(10, 3)
    assert float(distance_correlation(x, torch.ones(10, 2))) == 0.0
    assert float(distance_correlation(torch.ones(10, 2), torch.ones(10, 2), squared=True)) == 0.0


@pytest.mark.parametrize("squared", [False, True])
def test_gradcheck(squared):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z = (x[:, :2] ** 2 + 0.3 * torch.randn(7, 2, generator=g, dtype=torch.float64)).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: distance_correlation(a, b, squared=squared), (x, z))
    assert torch.autograd.gradcheck(lambda a, b: distance_covariance(a, b, squared=squared), (x, z))
    xb = x.detach().reshape(1, 7, 3).repeat(2, 1, 1).requires_grad_()
    zb = z.detach().reshape(1, 7, 2).repeat(2, 1, 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: distance_correlation(a, b, squared=squared, batched=True), (xb, zb))


def test_bad_input():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        distance_correlation(x[:1], x[:1])
    with pytest.raises(ValueError, match="at least 2 samples"):
        distance_covariance(x[:1], x[:1], batched=False)
    with pytest.raises(ValueError, match="sample counts"):
        distance_correlation(x, x[:4])
    with pytest.raises(ValueError, match="batch and sample dims"):
        distance_correlation(x.reshape(1, 5, 3), x[:4].reshape(1, 4, 3), batched=True)
    with pytest.raises(ValueError, match="floating-point"):
        distance_correlation(torch.arange(5), x)
    with pytest.raises(ValueError, match=r"\(batch, n, \.\.\.\)"):
        distance_correlation(torch.randn(5), torch.randn(5), batched=True)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        leakage(lambda b: b, x, batch_size=1)
    with pytest.raises(ValueError, match="at least batch_size=8 rows"):
        leakage(lambda b: b, x, batch_size=8)


def test_leakage_is_the_mean_over_fixed_size_batches():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(70, 1, 4, 4, generator=g)

    def encoder(b):
        return b.flatten(1)[:, :3].tanh()

    expected = sum(float(distance_correlation(x[i : i + 20], encoder(x[i : i + 20]))) for i in (0, 20, 40)) / 3
    assert leakage(encoder, x, batch_size=20) == pytest.approx(expected, abs=1e-6)  # the last 10 rows dropped
    assert leakage(lambda b: torch.zeros(len(b), 4), x, batch_size=20) == 0.0


def test_shuffled_leakage_is_the_floor_of_independent_pairs():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(200, 4, generator=g)
    encoder = lambda b: b[:, :3].tanh()  # noqa: E731
    # The same batches, each Z in the order of a seeded permutation.
    perms = torch.Generator().manual_seed(3)
    expected = sum(float(distance_correlation(x[i : i + 50], encoder(x[i : i + 50])[torch.randperm(50, generator=perms)]))
                   for i in range(0, 200, 50)) / 4
    floor = leakage(encoder, x, batch_size=50, shuffled=True, seed=3)
    assert floor == pytest.approx(expected, abs=1e-6)
    assert floor < leakage(encoder, x, batch_size=50) - 0.2  # the pairing carried the dependence
    assert leakage(encoder, x, batch_size=100, shuffled=True, seed=3) < floor  # the floor falls as n grows


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    g = torch.Generator().manual_seed(5)
    x, z = torch.randn(3, 64, 1, 8, 8, generator=g, dtype=torch.float64), torch.randn(3, 64, 32, generator=g, dtype=torch.float64)
    z[0] = x[0].flatten(1)[:, :32].relu()
    cpu = distance_correlation(x, z, batched=True)
    cuda = distance_correlation(x.cuda(), z.cuda(), batched=True)
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-9, rtol=0)
    for grad in _grads(x[0].cuda(), torch.zeros(64, 32, device="cuda"), distance_correlation):
        assert grad.device.type == "cuda" and torch.isfinite(grad).all()


@pytest.mark.parametrize("module", [dcor_module, nopeek_module])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_import_is_light():
    code = "import sys, splitlearn.privacy; print(sorted({'grpc', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
