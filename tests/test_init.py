"""npnn.init: distributions (mean, std, bounds on large draws), float32, seeding, in-place fills."""

import math

import numpy as np
import pytest

import npnn
from npnn import init


def test_normal_statistics_and_dtype():
    a = init.normal((1000, 1000), mean=2.0, std=0.5, generator=np.random.default_rng(0))
    assert a.shape == (1000, 1000) and a.dtype == np.float32
    assert abs(a.mean() - 2.0) < 0.002
    assert abs(a.std() - 0.5) < 0.002
    # tails of a normal, not of a uniform: about 0.27% beyond 3 sigma
    assert 0.002 < np.mean(np.abs(a - 2.0) > 1.5) < 0.0035


def test_uniform_bounds_and_statistics():
    a = init.uniform(500_000, -3.0, 1.0, generator=np.random.default_rng(0))
    assert a.dtype == np.float32 and a.shape == (500_000,)
    assert a.min() >= -3.0 and a.max() < 1.0
    assert abs(a.mean() + 1.0) < 0.01
    assert abs(a.std() - 4 / math.sqrt(12)) < 0.01


def test_manual_seed_makes_draws_reproducible():
    npnn.manual_seed(123)
    a = init.normal((50, 40))
    b = init.xavier_uniform((50, 40))
    npnn.manual_seed(123)
    np.testing.assert_array_equal(a, init.normal((50, 40)))
    np.testing.assert_array_equal(b, init.xavier_uniform((50, 40)))
    npnn.manual_seed(124)
    assert not np.array_equal(a, init.normal((50, 40)))


def test_explicit_generator_is_used_and_default_untouched():
    npnn.manual_seed(7)
    first = init.normal(10)
    npnn.manual_seed(7)
    g1 = init.he_normal((30, 20), generator=np.random.default_rng(5))
    np.testing.assert_array_equal(init.normal(10), first)  # default generator not advanced
    np.testing.assert_array_equal(g1, init.he_normal((30, 20), generator=np.random.default_rng(5)))


def test_xavier_uniform_bound_and_std():
    shape = (256, 768)  # [out, in]
    a = init.xavier_uniform(shape, generator=np.random.default_rng(1))
    bound = math.sqrt(6 / (256 + 768))
    assert a.dtype == np.float32
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.999 * bound
    assert abs(a.std() - bound / math.sqrt(3)) < 0.01 * bound
    assert abs(a.mean()) < 0.01 * bound


def test_xavier_normal_std():
    a = init.xavier_normal((512, 784), gain=2.0, generator=np.random.default_rng(2))
    want = 2.0 * math.sqrt(2 / (512 + 784))
    assert a.dtype == np.float32
    assert abs(a.std() - want) < 0.01 * want and abs(a.mean()) < 0.01 * want


@pytest.mark.parametrize(
    "shape, fan_in, fan_out",
    [
        ((400, 300), 300, 400),
        ((64, 32, 3, 3), 32 * 9, 64 * 9),
    ],
)
def test_he_normal_uses_pytorch_fans(shape, fan_in, fan_out):
    assert init.calculate_fans(shape) == (fan_in, fan_out)
    a = init.he_normal(shape, generator=np.random.default_rng(3))
    want = math.sqrt(2 / fan_in)
    assert abs(a.std() - want) < 0.02 * want
    b = init.he_normal(shape, mode="fan_out", generator=np.random.default_rng(3))
    want = math.sqrt(2 / fan_out)
    assert abs(b.std() - want) < 0.02 * want


def test_he_uniform_bound():
    a = init.he_uniform((300, 200), generator=np.random.default_rng(4))
    bound = math.sqrt(6 / 200)
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound


def test_fills_tensors_and_arrays_in_place():
    p = npnn.Parameter(np.zeros((20, 10), np.float32))
    arr = p.data
    assert init.xavier_uniform(p) is p
    assert p.data is arr and np.abs(arr).max() > 0
    d = np.empty((5, 5), np.float64)  # float64 targets keep their dtype (gradient checks)
    assert init.normal(d, generator=np.random.default_rng(0)) is d and d.dtype == np.float64
    assert np.all(init.zeros(p).data == 0)
    assert np.all(init.ones((2, 3)) == 1) and init.ones((2, 3)).dtype == np.float32
    assert np.all(init.constant(p, 0.25).data == np.float32(0.25))


@pytest.mark.parametrize(
    "call, arg, exc",
    [
        (lambda: init.normal((3, 3), std=-1.0), "std", ValueError),
        (lambda: init.uniform(3, 1.0, 0.0), "high", ValueError),
        (lambda: init.xavier_uniform((5,)), "shape", ValueError),
        (lambda: init.he_normal((5, 5), mode="fan_avg"), "mode", ValueError),
        (lambda: init.normal((-1, 3)), "shape", ValueError),
        (lambda: init.normal("3x3"), "shape", TypeError),
        (lambda: init.normal(3, generator=np.random.RandomState(0)), "generator", TypeError),
    ],
)
def test_bad_arguments_name_the_argument(call, arg, exc):
    with pytest.raises(exc) as e:
        call()
    assert str(e.value).startswith(arg + ":"), str(e.value)
