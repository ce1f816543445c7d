"""Every npnn op's gradient against central finite differences in float64.

Binary ops run over a matrix of broadcasting shapes (HIPS autograd's approach); reductions over
every axis choice with and without keepdims; hypothesis draws further shapes. The float32
tests check that gradients keep the parameter's dtype.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import npnn
from npnn import ops


def numeric_grads(f, arrays, upstream, eps=1e-6):
    """Central differences of sum(f(*arrays) * upstream) with respect to each array."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            plus = np.sum(f(*[npnn.Tensor(x) for x in arrays]).data * upstream)
            flat[i] = old - eps
            minus = np.sum(f(*[npnn.Tensor(x) for x in arrays]).data * upstream)
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(f, *arrays, rtol=1e-5, atol=1e-6, seed=0):
    """Assert backward() of f matches finite differences for float64 inputs; return the output."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    tensors = [npnn.Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = f(*tensors)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(upstream)
    expected = numeric_grads(f, arrays, upstream)
    for k, (t, e) in enumerate(zip(tensors, expected)):
        assert t.grad is not None, f"input {k} got no gradient"
        assert t.grad.shape == t.shape, f"input {k}: grad shape {t.grad.shape} != {t.shape}"
        assert t.grad.dtype == np.float64
        np.testing.assert_allclose(t.grad, e, rtol=rtol, atol=atol, err_msg=f"input {k}")
    return out


def rand(shape, seed=0, low=None):
    """Standard normal float64 data, or uniform in [low, low + 1] (for log, sqrt, pow bases)."""
    rng = np.random.default_rng(seed + len(shape) * 7 + int(np.prod(shape)))
    if low is not None:
        return rng.uniform(low, low + 1, size=shape)
    return rng.standard_normal(shape)


# Pairs of shapes that broadcast, both ways round, as in HIPS autograd's tests.
BROADCAST_PAIRS = [
    ((), ()),
    ((), (3,)),
    ((3,), ()),
    ((3,), (3,)),
    ((2, 3), (3,)),
    ((3,), (2, 3)),
    ((2, 3), (2, 1)),
    ((2, 1), (1, 3)),
    ((4, 1, 3), (2, 1)),
    ((1,), (2, 3)),
    ((2, 3), (1, 1)),
    ((2, 1, 3), (1, 4, 1)),
]

BINARY = {
    "add": (lambda a, b: a + b, None),
    "sub": (lambda a, b: a - b, None),
    "mul": (lambda a, b: a * b, None),
    "div": (lambda a, b: a / b, 0.5),
    "pow": (lambda a, b: a**b, 0.5),
    "maximum": (npnn.maximum, None),
    "minimum": (npnn.minimum, None),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("sa,sb", BROADCAST_PAIRS)
def test_binary_broadcasting(name, sa, sb):
    fn, low = BINARY[name]
    a = rand(sa, 1, low)
    b = rand(sb, 2, low)
    out = gradcheck(fn, a, b)
    assert out.shape == np.broadcast_shapes(sa, sb)


@pytest.mark.parametrize(
    "name,fn",
    [
        ("add", lambda x: x + 2.5),
        ("radd", lambda x: 2.5 + x),
        ("sub", lambda x: x - 1.5),
        ("rsub", lambda x: 1.5 - x),
        ("mul", lambda x: x * -3.0),
        ("rmul", lambda x: 3 * x),
        ("div", lambda x: x / 4.0),
        ("rdiv", lambda x: 2.0 / x),
        ("pow2", lambda x: x**2),
        ("pow3", lambda x: x**3),
        ("powf", lambda x: x**1.7),
        ("rpow", lambda x: 1.5**x),
        ("neg", lambda x: -x),
        ("array_left", lambda x: np.arange(6.0).reshape(2, 3) * x),
        ("array_right", lambda x: x - np.ones(3)),
    ],
)
def test_scalar_and_array_operands(name, fn):
    gradcheck(fn, rand((2, 3), 3, 0.5))


@pytest.mark.parametrize(
    "name,fn,low",
    [
        ("exp", npnn.exp, None),
        ("log", npnn.log, 0.5),
        ("sqrt", npnn.sqrt, 0.5),
        ("sigmoid", npnn.sigmoid, None),
        ("tanh", npnn.tanh, None),
        ("relu", npnn.relu, None),
        ("abs", npnn.abs, None),
        ("clip", lambda x: npnn.clip(x, -0.5, 0.5), None),
        ("softmax0", lambda x: npnn.softmax(x, axis=0), None),
        ("softmax", npnn.softmax, None),
        ("log_softmax", npnn.log_softmax, None),
        ("log_softmax0", lambda x: npnn.log_softmax(x, axis=0), None),
        ("T", lambda x: x.T, None),
        ("transpose", lambda x: x.transpose(1, 0, 2), None),
        ("reshape", lambda x: x.reshape(4, 6), None),
        ("reshape_tuple", lambda x: x.reshape((-1,)), None),
        ("flatten", lambda x: x.flatten(), None),
    ],
)
def test_unary(name, fn, low):
    x = rand((2, 3, 4), 4, low)
    if name in ("relu", "abs", "clip"):
        x[np.abs(x) < 0.05] = 0.3  # keep away from the kinks, where differences are meaningless
        x[np.abs(np.abs(x) - 0.5) < 0.05] = 0.3
    gradcheck(fn, x)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "exp", "log", "sqrt", "abs"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_of_a_0d_tensor(name, dtype):
    # 0-d operands make NumPy return scalars, which out= cannot write into (tanh's backward failed)
    fn = getattr(npnn, name)
    x = npnn.Tensor(np.array(0.7, dtype), requires_grad=True)
    y = fn(x)
    y.backward()
    assert type(y.data) is np.ndarray and y.shape == () and y.dtype == dtype
    assert type(x.grad) is np.ndarray and x.grad.shape == () and x.grad.dtype == dtype
    if dtype is np.float64:
        gradcheck(fn, np.array(0.7))


def test_relu_gradient_at_zero_and_nan_follows_pytorch():
    # PyTorch's threshold_backward: 0 where the output is <= 0, the gradient elsewhere (NaN too).
    x = npnn.Tensor(np.array([-1.0, 0.0, 2.0, np.nan], np.float32), requires_grad=True)
    (npnn.relu(x) * np.array([3.0, 3.0, 3.0, 3.0], np.float32)).sum().backward()
    np.testing.assert_array_equal(x.grad, np.array([0.0, 0.0, 3.0, 3.0], np.float32))
    assert x.grad.dtype == np.float32


AXES = [None, 0, 1, 2, -1, (0, 2), (1, 2), (0, 1, 2)]


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(reduce, axis, keepdims):
    x = rand((2, 3, 4), 5)
    out = gradcheck(lambda t: getattr(t, reduce)(axis=axis, keepdims=keepdims), x)
    expected = getattr(np, reduce if reduce != "max" else "amax")(x, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.data, expected)


def test_max_ties_share_the_gradient():
    x = npnn.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [0.5, 0, 0.5]])
    x.grad = None
    x.max().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [0, 0, 0]])


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 4), (4, 2)),
        ((4,), (4, 2)),
        ((3, 4), (4,)),
        ((4,), (4,)),
        ((2, 3, 4), (4, 5)),
        ((2, 3, 4), (2, 4, 5)),
        ((3, 4), (2, 4, 5)),
        ((1, 3, 4), (2, 4, 2)),
    ],
)
def test_matmul(sa, sb):
    out = gradcheck(lambda a, b: a @ b, rand(sa, 6), rand(sb, 7))
    assert out.shape == np.matmul(np.zeros(sa), np.zeros(sb)).shape


@pytest.mark.parametrize(
    "idx",
    [
        (slice(None), 1),
        (0,),
        (slice(1, None), slice(None, None, 2)),
        (Ellipsis, None, 2),
        (np.array([0, 2, 2, 1, 2]),),  # repeated rows must add up
        (np.array([0, 1, 1]), np.array([3, 0, 0])),  # repeated (row, col) pairs too
        (np.array([[True, False, True, False]] * 3),),
        ([2, 0],),
    ],
)
def test_getitem(idx):
    gradcheck(lambda x: x[idx if len(idx) > 1 else idx[0]], rand((3, 4), 8))


def test_getitem_repeated_index_counts():
    x = npnn.Tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 1, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])


def test_getitem_with_tensor_index():
    x = npnn.Tensor(np.arange(5.0), requires_grad=True)
    x[npnn.Tensor(np.array([4, 0]))].sum().backward()
    np.testing.assert_array_equal(x.grad, [1, 0, 0, 0, 1])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_and_stack(axis):
    gradcheck(lambda a, b, c: npnn.concatenate([a, b, c], axis=axis), rand((2, 3), 1), rand((2, 3), 2), rand((2, 3), 3))
    gradcheck(lambda a, b: npnn.stack([a, b], axis=axis), rand((2, 3), 4), rand((2, 3), 5))


def test_concatenate_uneven():
    out = gradcheck(lambda a, b: npnn.concatenate([a, b], axis=1), rand((2, 1), 1), rand((2, 4), 2))
    assert out.shape == (2, 5)


@pytest.mark.parametrize("sa,sb", [((2, 3), (2, 3)), ((2, 3), (3,)), ((1, 3), (2, 1))])
def test_where(sa, sb):
    cond = np.array([[True, False, True], [False, False, True]])
    gradcheck(lambda a, b: npnn.where(cond, a, b), rand(sa, 1), rand(sb, 2))
    gradcheck(lambda a: npnn.where(npnn.Tensor(cond), a, 0.0), rand(sa, 3))


def test_composite_reuses_inputs():
    # x appears on many paths: accumulation must add every contribution exactly once.
    gradcheck(
        lambda x, w: npnn.sigmoid(x @ w + x.sum(axis=1, keepdims=True)) * x.mean() + (x * x).sum() / x.max(),
        rand((3, 2), 1),
        rand((2, 2), 2),
    )


def test_same_tensor_twice_in_one_op():
    gradcheck(lambda x: x * x + x - x / (x * x + 2), rand((2, 2), 9))


# -- float32 stays float32 ---------------------------------------------------------------------

FLOAT32_CASES = {
    "add_bias": lambda x, w: (x @ w + w[0]).sum(),
    "scalars": lambda x, w: ((x * 2.0 - 1) / 3 + 0.5**x).sum() + (w**2).mean(),
    "numpy_scalar": lambda x, w: (x * np.float64(2.0) + np.float64(1.0) * w[0]).sum(),
    "numpy_array": lambda x, w: (x * np.ones((3, 3)) + w).mean(),
    "funcs": lambda x, w: (
        npnn.sigmoid(x) + npnn.tanh(w) + npnn.relu(x) + npnn.exp(w) + npnn.log_softmax(x) + npnn.softmax(w, axis=0)
    ).sum(),
    "sqrt_log": lambda x, w: (npnn.sqrt(x * x + 1) + npnn.log(w * w + 1)).sum(),
    "reductions": lambda x, w: x.max(axis=0).sum() + w.mean(axis=1, keepdims=True).sum(),
    "shapes": lambda x, w: (
        (x.T.reshape(9)[np.array([1, 1, 2])] * 2).sum() + npnn.concatenate([x, w]).sum() + npnn.stack([x, w]).mean()
    ),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_grad_dtype_matches_parameter_dtype(name):
    rng = np.random.default_rng(0)
    x = npnn.Parameter(rng.standard_normal((3, 3)).astype(np.float32))
    w = npnn.Parameter(rng.standard_normal((3, 3)).astype(np.float32))
    loss = FLOAT32_CASES[name](x, w)
    assert loss.dtype == np.float32, f"forward upcast to {loss.dtype}"
    loss.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


# -- hypothesis: shapes ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
    st.sampled_from(["add", "sub", "mul", "maximum"]),
)
def test_property_broadcast_grad_shapes(shapes, name):
    sa, sb = shapes.input_shapes
    a = npnn.Tensor(rand(sa, 1), requires_grad=True)
    b = npnn.Tensor(rand(sb, 2), requires_grad=True)
    out = BINARY[name][0](a, b)
    assert out.shape == shapes.result_shape
    out.sum().backward()
    assert a.grad.shape == sa and b.grad.shape == sb
    if name == "add":  # d sum(a + b) / da = how many outputs each element of a reaches
        np.testing.assert_allclose(a.grad, np.full(sa, np.prod(out.shape) / max(np.prod(sa), 1)))


@settings(max_examples=40, deadline=None)
@given(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), st.data())
def test_property_reduction_shapes(shape, data):
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
    keepdims = data.draw(st.booleans())
    x = npnn.Tensor(rand(shape, 3), requires_grad=True)
    out = x.mean(axis=tuple(axes), keepdims=keepdims)
    assert out.shape == np.mean(x.data, axis=tuple(axes), keepdims=keepdims).shape
    out.sum().backward()
    n = np.prod([shape[a] for a in axes])
    np.testing.assert_allclose(x.grad, np.full(shape, 1.0 / n))


@settings(max_examples=25, deadline=None)
@given(hnp.array_shapes(min_dims=2, max_dims=2, max_side=4), st.integers(1, 4))
def test_property_matmul_grad_shapes(shape, k):
    a = npnn.Tensor(rand(shape, 1), requires_grad=True)
    b = npnn.Tensor(rand((shape[1], k), 2), requires_grad=True)
    (a @ b).sum().backward()
    np.testing.assert_allclose(a.grad, np.broadcast_to(b.data.sum(axis=1), shape))
    np.testing.assert_allclose(b.grad, np.broadcast_to(a.data.sum(axis=0)[:, None], (shape[1], k)))


def test_every_public_op_is_covered():
    # A new op in npnn.ops without a gradient test here should fail loudly.
    covered = {
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "neg",
        "matmul",
        "exp",
        "log",
        "sqrt",
        "abs",
        "sigmoid",
        "tanh",
        "relu",
        "softmax",
        "log_softmax",
        "where",
        "concatenate",
        "stack",
        "sum",
        "mean",
        "max",
        "reshape",
        "transpose",
        "getitem",
        "maximum",
        "minimum",
        "clip",
    }
    assert set(ops.__all__) == covered


def test_product_of_broadcast_matrix_is_complete():
    # Every pair in the matrix broadcasts (a typo would silently test nothing new).
    for sa, sb in BROADCAST_PAIRS:
        np.broadcast_shapes(sa, sb)
    assert len(set(itertools.chain.from_iterable(BROADCAST_PAIRS))) >= 8
