"""Tensor basics: dtypes, operators, the engine's accumulation rules, no_grad, errors."""

import numpy as np
import pytest

import npnn
from npnn import Parameter, Tensor


# -- construction and dtypes -------------------------------------------------------------------


def test_python_data_becomes_float32():
    assert Tensor([[1, 2], [3, 4]]).dtype == np.float32
    assert Tensor(2.5).dtype == np.float32 and Tensor(2.5).shape == ()
    assert Tensor([True, False]).dtype == np.bool_


def test_arrays_keep_their_dtype():
    assert Tensor(np.ones(3)).dtype == np.float64
    assert Tensor(np.ones(3, np.float32)).dtype == np.float32
    assert Tensor(np.arange(3)).dtype == np.int64  # labels stay integers
    assert Tensor(np.ones(3), dtype=np.float32).dtype == np.float32


def test_array_is_shared_not_copied():
    a = np.zeros(3, np.float32)
    t = Tensor(a)
    a[0] = 5
    assert t.data[0] == 5 and t.numpy() is a


def test_parameter_requires_grad_and_is_float():
    p = Parameter(np.arange(4))
    assert p.requires_grad and p.dtype == np.float32 and p.is_leaf
    assert isinstance(p, Tensor)
    assert "Parameter(" in repr(p)


def test_requires_grad_on_integers_is_refused():
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3), requires_grad=True)


def test_slots_no_instance_dict():
    t = Tensor([1.0])
    assert not hasattr(t, "__dict__")
    with pytest.raises(AttributeError):
        t.something = 1


def test_item_detach_numpy_len_repr():
    t = Tensor([[3.0]], requires_grad=True)
    assert t.item() == 3.0 and isinstance(t.item(), float)
    d = (t * 2).detach()
    assert not d.requires_grad and d.is_leaf and d.item() == 6.0
    assert len(Tensor(np.zeros((5, 2)))) == 5
    assert "requires_grad=True" in repr(t)
    with pytest.raises(ValueError, match=r"one-element.*\(2,\)"):
        Tensor([1.0, 2.0]).item()
    assert np.asarray(Tensor([1.0, 2.0])).tolist() == [1.0, 2.0]


def test_scalars_do_not_upcast_float32():
    x = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    for y in (
        x + 1,
        1 - x,
        x * 0.1,
        0.1 / (x + 1),
        x**2,
        2.0**x,
        x * np.float64(0.5),
        np.float64(0.5) + x,
        x + np.ones(2),
        np.ones((2, 2)) * x,
    ):
        assert y.dtype == np.float32, y


def test_scalar_operands_keep_numpy_semantics():
    ints = Tensor(np.arange(3))
    assert (ints + 1).dtype == np.int64 and (ints * 2).data.tolist() == [0, 2, 4]
    assert (ints * 0.5).data.tolist() == [0, 0.5, 1.0]  # int * float -> float, as NumPy
    x = Tensor(np.ones(2, np.float32))
    for k in range(5000):  # many distinct numbers: the constant cache stays bounded and right
        assert (x * float(k)).data[0] == k
    assert np.isnan((x * float("nan")).data).all()


def test_float64_stays_float64():
    x = Tensor(np.ones(3), requires_grad=True)
    y = npnn.sigmoid(x * 2 + 1).sum()
    assert y.dtype == np.float64
    y.backward()
    assert x.grad.dtype == np.float64


# -- operators ---------------------------------------------------------------------------------


def test_operator_values():
    a = Tensor([1.0, 2.0, 4.0])
    b = Tensor([2.0, 2.0, 2.0])
    np.testing.assert_allclose((a + b).data, [3, 4, 6])
    np.testing.assert_allclose((a - b).data, [-1, 0, 2])
    np.testing.assert_allclose((a * b).data, [2, 4, 8])
    np.testing.assert_allclose((a / b).data, [0.5, 1, 2])
    np.testing.assert_allclose((a**b).data, [1, 4, 16])
    np.testing.assert_allclose((-a).data, [-1, -2, -4])
    np.testing.assert_allclose((a @ b).data, 14)
    np.testing.assert_allclose((np.ones(3) @ a).data, 7)


def test_comparisons_are_bool_and_carry_no_grad():
    x = Tensor([0.2, 0.7, 0.5], requires_grad=True)
    for t, expected in (
        (x > 0.5, [0, 1, 0]),
        (x >= 0.5, [0, 1, 1]),
        (x < 0.5, [1, 0, 0]),
        (x <= 0.5, [1, 0, 1]),
        (x == 0.5, [0, 0, 1]),
        (x != 0.5, [1, 1, 0]),
        (0.5 < x, [0, 1, 0]),
    ):
        assert t.dtype == np.bool_ and not t.requires_grad
        np.testing.assert_array_equal(t.data, expected)
    acc = ((x > 0.5).float() == Tensor([0.0, 1.0, 1.0])).float().mean()
    assert acc.dtype == np.float32 and acc.item() == pytest.approx(2 / 3)


def test_tensors_hash_by_identity():
    a, b = Tensor([1.0]), Tensor([1.0])
    assert len({a, b}) == 2 and {a: 1}[a] == 1


def test_ndarray_on_the_left_defers_to_tensor():
    x = Tensor(np.ones(2, np.float32), requires_grad=True)
    y = np.array([2.0, 3.0]) * x
    assert isinstance(y, Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [2, 3])


def test_sum_of_bool_counts():
    assert Tensor(np.array([True, False, True])).sum().item() == 2
    np.testing.assert_array_equal(Tensor(np.eye(3, dtype=np.int64)).sum(axis=0).data, [1, 1, 1])


def test_mean_of_bool_is_float32():
    assert Tensor(np.array([True, False, True, True])).mean().item() == 0.75
    assert Tensor(np.array([True, False])).mean().dtype == np.float32


# -- backward and accumulation -----------------------------------------------------------------


def test_gradients_accumulate_across_backward_calls():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [3 + 2, 3 + 4])
    x.zero_grad()
    assert x.grad is None


def test_passthrough_gradients_are_not_aliased():
    # add passes the same upstream array to both inputs: each leaf must own its .grad.
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = Tensor([1.0, 2.0], requires_grad=True)
    upstream = np.array([1.0, 1.0])
    (x + y).backward(upstream)
    assert x.grad is not y.grad and x.grad is not upstream
    x.grad += 10  # an optimizer writing into one grad must not touch the other or the caller's
    np.testing.assert_array_equal(y.grad, [1, 1])
    np.testing.assert_array_equal(upstream, [1, 1])
    (x + y).backward(upstream)
    np.testing.assert_array_equal(x.grad, [12, 12])
    np.testing.assert_array_equal(y.grad, [2, 2])
    np.testing.assert_array_equal(upstream, [1, 1])


def test_fan_out_accumulates_without_touching_shared_arrays():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    h = x.reshape(4)  # a view of x's gradient flows back: must be copied before accumulation
    y = h + h + h * 2 + h.sum()
    upstream = np.arange(4.0)
    y.backward(upstream)
    np.testing.assert_allclose(x.grad.reshape(4), upstream * 4 + upstream.sum())
    np.testing.assert_array_equal(upstream, np.arange(4.0))


def test_leaf_grad_is_writable_after_broadcast_backward():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    x.sum().backward()  # a reduction's VJP spreads g back over the input's shape
    x.grad *= 2
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))


def test_zero_dim_fan_out_accumulates():
    # NumPy returns scalars, not 0-d arrays, from ops on 0-d arrays: accumulation must not
    # lose the shares that arrive after the first.
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    m = x.mean()
    (m * m + m * 3.0 + m).backward()
    np.testing.assert_allclose(x.grad, np.full(3, (2 * 2 + 3 + 1) / 3))
    assert isinstance((-m).data, np.ndarray) and (-m).shape == ()


def test_zero_dim_parameter_accumulates_across_calls():
    s = Tensor(np.array(2.0), requires_grad=True)
    for _ in range(2):
        (s * np.ones(3)).sum().backward()
        (s * 2.0).backward()
    assert isinstance(s.grad, np.ndarray) and s.grad.shape == ()
    assert s.grad == 2 * (3 + 2)


def test_read_only_grad_is_replaced_not_written():
    x = Tensor(np.ones(2), requires_grad=True)
    frozen = np.zeros(2)
    frozen.flags.writeable = False
    x.grad = frozen
    (x * 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [2, 2])
    np.testing.assert_array_equal(frozen, [0, 0])


def test_long_chain_has_no_recursion_limit():
    x = Tensor(np.float32(1.0), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001**10_000, rel=1e-3)


def test_diamond_graph_visits_each_node_once():
    x = Tensor([2.0], requires_grad=True)
    a = x * 3
    b = a + a  # a reached twice
    c = b * a
    c.backward(np.ones(1))
    # c = 2a * a = 2 * 9 x^2 -> dc/dx = 36 x
    np.testing.assert_allclose(x.grad, [72.0])


def test_backward_errors_are_clear():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"one-element.*\(2, 2\)"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\), expected \(2, 2\)"):
        (x * 2).backward(np.ones(3))


def test_matmul_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(2, 5\)"):
        Tensor(np.ones((4, 3))) @ Tensor(np.ones((2, 5)))


def test_reshape_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) into \(4,\)"):
        Tensor(np.ones((2, 3))).reshape(4)


def test_nan_in_loss_is_not_hidden():
    x = Tensor([1.0, -1.0], requires_grad=True)
    with np.errstate(invalid="ignore"):
        loss = npnn.log(x).sum()
    assert np.isnan(loss.item())
    with np.errstate(invalid="ignore", divide="ignore"):
        loss.backward()
    assert np.isfinite(x.grad).all()  # d log x = 1/x is finite even where log is not


# -- no_grad -----------------------------------------------------------------------------------


def test_no_grad_records_nothing():
    x = Tensor([1.0], requires_grad=True)
    with npnn.no_grad():
        assert not npnn.is_grad_enabled()
        y = x * 2
        with npnn.enable_grad():
            z = x * 2
    assert npnn.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad


def test_no_grad_as_decorator_and_restores_on_error():
    @npnn.no_grad()
    def f(t):
        return t * 2

    assert not f(Tensor([1.0], requires_grad=True)).requires_grad
    with pytest.raises(ZeroDivisionError):
        with npnn.no_grad():
            1 / 0  # noqa: B018 (the division is the point: it raises)
    assert npnn.is_grad_enabled()


def test_ops_on_constants_need_no_tape():
    y = npnn.sigmoid(Tensor([1.0]) * 2)
    assert not y.requires_grad and y._parents == ()


def test_interleaved_dag_matches_finite_differences():
    # Nodes built out of order relative to their use, reused at several depths, and a
    # branch created before the root's other inputs: the creation-order heap must still run
    # every VJP after all of its consumers.
    def f(lib_a, lib_b, sig):
        z = lib_a * lib_b
        early = sig(z)  # created early, consumed last
        w = z + lib_a
        v = w * z
        u = v + z * early + w
        return (u * early).sum()

    rng = np.random.default_rng(2)
    a0, b0 = rng.standard_normal(3), rng.standard_normal(3)
    a, b = npnn.Parameter(a0.copy()), npnn.Parameter(b0.copy())
    f(a, b, npnn.sigmoid).backward()

    def sig(x):
        return 1 / (1 + np.exp(-x))

    eps = 1e-6
    for p, p0 in ((a, a0), (b, b0)):
        num = np.zeros(3)
        for i in range(3):
            d = np.zeros(3)
            d[i] = eps
            hi = f(*((p0 + d, b0) if p is a else (a0, p0 + d)), sig).sum()
            lo = f(*((p0 - d, b0) if p is a else (a0, p0 - d)), sig).sum()
            num[i] = (hi - lo) / (2 * eps)
        np.testing.assert_allclose(p.grad, num, rtol=1e-6, atol=1e-8)


def test_float32_mean_is_numpy_float32_sum_times_inverse_count_bit_for_bit():
    rng = np.random.default_rng(4)
    for n in (1, 3, 4, 7, 100):
        for scale in (1e-40, 1e-3, 1.0, 1e30):
            x = (rng.standard_normal(n) * scale).astype(np.float32)
            inv = np.float32(1 / n)
            want = np.add.reduce(x) * inv
            got = Tensor(x).mean().data
            assert got.dtype == np.float32 and got.shape == ()
            assert got.tobytes() == np.asarray(want, np.float32).tobytes()
