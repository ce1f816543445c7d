"""npnn.functional: values against plain NumPy, gradient checks, stability at +-1000, errors,
and conv2d / max_pool2d forward and backward against loop implementations written here."""

import numpy as np
import pytest

import npnn
import npnn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_settings import assert_caught, examples
from npnn import Parameter, Tensor
from test_ops_gradcheck import gradcheck, rand


# -- linear -----------------------------------------------------------------------------------


def test_linear_value_and_layout():
    x, w, b = rand((4, 3), 1), rand((2, 3), 2), rand((2,), 3)
    out = F.linear(Tensor(x), Tensor(w), Tensor(b))
    np.testing.assert_allclose(out.data, x @ w.T + b)  # weight is [out, in], like PyTorch


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 3), (3,)])
def test_linear_gradcheck(shape):
    gradcheck(F.linear, rand(shape, 1), rand((2, 3), 2), rand((2,), 3))
    gradcheck(lambda x, w: F.linear(x, w), rand(shape, 4), rand((2, 3), 5))


def test_linear_shape_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(2, 5\)"):
        F.linear(Tensor(np.ones((4, 3))), Parameter(np.ones((2, 5))))
    with pytest.raises(ValueError, match=r"bias shape \(3,\).*\(2, 3\)"):
        F.linear(Tensor(np.ones((4, 3))), Parameter(np.ones((2, 3))), Parameter(np.ones(3)))


def test_linear_skips_input_gradient_for_data():
    x = Tensor(np.ones((4, 3), np.float32))
    w = Parameter(np.ones((2, 3), np.float32))
    F.linear(x, w).sum().backward()
    assert x.grad is None and w.grad.dtype == np.float32
    np.testing.assert_allclose(w.grad, np.full((2, 3), 4.0))


# -- losses: values --------------------------------------------------------------------------


def test_binary_cross_entropy_is_the_labs_formula():
    h = np.array([[0.1], [0.8], [0.6], [0.3]])
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    expected = -np.mean(y * np.log(h) + (1 - y) * np.log(1 - h))
    assert F.binary_cross_entropy(Tensor(h), y).item() == pytest.approx(expected)
    assert F.binary_cross_entropy(Tensor(h), Tensor(y)).item() == pytest.approx(expected)
    gradcheck(lambda p: F.binary_cross_entropy(p, y), h)


def test_binary_cross_entropy_with_logits():
    x = rand((3, 4), 1) * 3
    y = (rand((3, 4), 2) > 0).astype(float)
    s = 1 / (1 + np.exp(-x))
    expected = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    assert F.binary_cross_entropy_with_logits(Tensor(x), y).item() == pytest.approx(expected)
    gradcheck(lambda t: F.binary_cross_entropy_with_logits(t, y), x)
    gradcheck(lambda t: F.binary_cross_entropy_with_logits(t, y * 0.3 + 0.2), x)  # soft targets


def _log_softmax_np(x):
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def test_cross_entropy_int_labels_and_one_hot_agree():
    x = rand((5, 4), 1)
    labels = np.array([0, 3, 1, 1, 2])
    expected = -_log_softmax_np(x)[np.arange(5), labels].mean()
    assert F.cross_entropy(Tensor(x), labels).item() == pytest.approx(expected)
    assert F.cross_entropy(Tensor(x), Tensor(labels)).item() == pytest.approx(expected)
    onehot = np.eye(4)[labels]
    assert F.cross_entropy(Tensor(x), onehot).item() == pytest.approx(expected)
    gradcheck(lambda t: F.cross_entropy(t, labels), x)
    gradcheck(lambda t: F.cross_entropy(t, onehot), x)
    soft = np.full((5, 4), 0.25)
    gradcheck(lambda t: F.cross_entropy(t, soft), x)


def test_cross_entropy_matches_log_softmax_plus_nll():
    x = rand((6, 3), 2)
    labels = np.array([2, 0, 1, 1, 0, 2])
    fused = F.cross_entropy(Tensor(x), labels).item()
    assert F.nll_loss(npnn.log_softmax(Tensor(x)), labels).item() == pytest.approx(fused)
    gradcheck(lambda t: F.nll_loss(npnn.log_softmax(t), labels), x)
    gradcheck(lambda t: F.nll_loss(t, np.eye(3)[labels]), x)


def test_cross_entropy_label_errors():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\[0, 3\].*\[0, 4\]"):
        F.cross_entropy(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"\[0, 3\].*\[-1, 1\]"):
        F.cross_entropy(x, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"labels shape \(2,\).*logits shape \(3, 4\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="integer class indices"):
        F.cross_entropy(x, np.array([0.5, 1, 2]))
    with pytest.raises(ValueError, match=r"\[N, C\].*\(4,\)"):
        F.cross_entropy(Tensor(np.zeros(4)), np.array([0]))


def test_mse_loss():
    a, b = rand((3, 2), 1), rand((3, 2), 2)
    assert F.mse_loss(Tensor(a), b).item() == pytest.approx(np.mean((a - b) ** 2))
    gradcheck(F.mse_loss, a, b)  # both sides get gradients
    gradcheck(lambda t: F.mse_loss(t, b), a)
    with pytest.raises(ValueError, match=r"target shape \(3,\).*input shape \(3, 2\)"):
        F.mse_loss(Tensor(a), np.zeros(3))


def test_loss_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"target shape \(4,\).*input shape \(4, 1\)"):
        F.binary_cross_entropy(Tensor(np.full((4, 1), 0.5)), np.zeros(4))
    with pytest.raises(ValueError, match=r"target shape \(2, 2\).*input shape \(4, 1\)"):
        F.binary_cross_entropy_with_logits(Tensor(np.zeros((4, 1))), np.zeros((2, 2)))


def test_bce_rejects_probabilities_outside_0_1():
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\]"):
        F.binary_cross_entropy(Tensor([[1.5]]), np.ones((1, 1)))


def test_nan_in_losses_is_not_hidden():
    nan = np.array([[np.nan, 0.5]])
    assert np.isnan(F.binary_cross_entropy(Tensor(nan), np.ones((1, 2))).item())
    assert np.isnan(F.cross_entropy(Tensor(nan), np.array([1])).item())
    assert np.isnan(F.mse_loss(Tensor(nan), np.ones((1, 2))).item())
    assert np.isnan(F.binary_cross_entropy_with_logits(Tensor(nan), np.ones((1, 2))).item())


# -- stability at +-1000 ------------------------------------------------------------------------

BIG = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 3.0]], np.float32)


@pytest.mark.parametrize(
    "name", ["log_softmax", "softmax", "cross_entropy", "bce_logits", "bce_sigmoid", "sigmoid", "lab_cost"]
)
def test_stable_at_logits_of_1000(name):
    x = Parameter(BIG.copy())
    y = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # not even a warning
        if name == "log_softmax":
            out = npnn.log_softmax(x)
            np.testing.assert_allclose(out.data, [[0, -2000, -1000], [-2000, 0, -997]])
            loss = out.sum()
        elif name == "softmax":
            loss = (npnn.softmax(x) * Tensor(y)).sum()
        elif name == "cross_entropy":
            loss = F.cross_entropy(x, np.array([1, 1]))
            assert loss.item() == pytest.approx(1000.0)
        elif name == "bce_logits":
            loss = F.binary_cross_entropy_with_logits(x, y)
        elif name == "bce_sigmoid":
            loss = F.binary_cross_entropy(npnn.sigmoid(x), y)
        elif name == "sigmoid":
            out = npnn.sigmoid(x)
            np.testing.assert_allclose(out.data[:, :2], [[1, 0], [0, 1]], atol=1e-30)
            loss = out.sum()
        else:  # the lab's clamped cost on saturated sigmoids
            h = npnn.sigmoid(x)
            loss = F.binary_cross_entropy(h, y)
        loss.backward()
    assert np.isfinite(loss.item()), loss
    assert np.isfinite(x.grad).all() and x.grad.dtype == np.float32


def test_cross_entropy_gradient_at_saturation_is_exact():
    x = Parameter(np.array([[1000.0, -1000.0]], np.float32))
    F.cross_entropy(x, np.array([1])).backward()
    np.testing.assert_allclose(x.grad, [[1.0, -1.0]])


# -- dropout -----------------------------------------------------------------------------------


def test_dropout_scales_and_is_seeded():
    x = Tensor(np.ones((200, 50), np.float32), requires_grad=True)
    npnn.manual_seed(3)
    a = F.dropout(x, 0.3, training=True)
    npnn.manual_seed(3)
    b = F.dropout(x, 0.3, training=True)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.dtype == np.float32
    kept = a.data != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(a.data[kept], 1 / 0.7, rtol=1e-6)
    a.sum().backward()
    np.testing.assert_allclose(x.grad, a.data)  # gradient is the same mask


def test_dropout_off_and_edges():
    x = Tensor(np.ones(10))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert (F.dropout(x, 1.0).data == 0).all()
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(x, 1.5)


def test_manual_seed_validates():
    with pytest.raises(ValueError, match="seed"):
        npnn.manual_seed(-1)
    g = npnn.manual_seed(5)
    assert g is npnn.random.generator()


# -- conv2d and max_pool2d against plain loops -------------------------------------------------


def conv2d_loops(x, w, b, stride, padding):
    """Cross-correlation the obvious way: loops over every output pixel."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, _, hp, wp = xp.shape
    o, _, kh, kw = w.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh : i * sh + kh, j * sw : j * sw + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + (0 if b is None else b[None, :, None, None])


def conv2d_loops_backward(x, w, g, stride, padding):
    """Gradients of sum(conv * g) by the same loops."""
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    _, _, kh, kw = w.shape
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            sl = (slice(None), slice(None), slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw))
            gxp[sl] += np.tensordot(g[:, :, i, j], w, axes=([1], [0]))
            gw += np.tensordot(g[:, :, i, j], xp[sl], axes=([0], [0]))
    return gxp[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]], gw, g.sum(axis=(0, 2, 3))


@pytest.mark.parametrize(
    "xs,ws,stride,padding",
    [
        ((2, 3, 7, 6), (4, 3, 3, 3), 1, 0),
        ((2, 3, 7, 6), (4, 3, 3, 2), 2, 1),
        ((1, 2, 8, 8), (3, 2, 5, 5), 1, 2),
        ((2, 1, 6, 9), (2, 1, 2, 3), (2, 1), (1, 2)),
        ((3, 4, 5, 5), (2, 4, 1, 1), 1, 0),
        # stride-1 "same" convolutions (the flat-shift input gradient), tiny images included
        ((2, 3, 6, 6), (4, 3, 3, 3), 1, 1),
        ((2, 3, 4, 6), (2, 3, 3, 5), 1, (1, 2)),
        ((3, 2, 1, 1), (2, 2, 3, 3), 1, 1),
        ((3, 4, 1, 2), (2, 4, 3, 3), 1, 1),  # many rows: _same_im2col, offsets in the padding
        ((2, 2, 2, 3), (3, 2, 5, 7), 1, (2, 3)),
    ],
)
def test_conv2d_against_loops(xs, ws, stride, padding):
    x, w, b = rand(xs, 1), rand(ws, 2), rand((ws[0],), 3)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv2d(tx, tw, tb, stride=stride, padding=padding)
    ref = conv2d_loops(x, w, b, pair(stride), pair(padding))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.data, ref, rtol=1e-10, atol=1e-10)
    g = rand(ref.shape, 4)
    out.backward(g)
    for got, exp in zip((tx.grad, tw.grad, tb.grad), conv2d_loops_backward(x, w, g, pair(stride), pair(padding))):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-10)


def test_conv2d_gradcheck_and_float32():
    gradcheck(
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
        rand((1, 2, 5, 4), 1),
        rand((2, 2, 3, 3), 2),
        rand((2,), 3),
    )
    gradcheck(lambda x, w: F.conv2d(x, w), rand((2, 1, 4, 4), 4), rand((1, 1, 2, 2), 5))
    x = Tensor(rand((2, 3, 6, 6), 1).astype(np.float32))
    w = Parameter(rand((4, 3, 3, 3), 2).astype(np.float32))
    b = Parameter(np.zeros(4, np.float32))
    out = F.conv2d(x, w, b, padding=1)
    assert out.dtype == np.float32 and out.data.flags.c_contiguous
    out.sum().backward()
    assert w.grad.dtype == np.float32 and b.grad.dtype == np.float32


@pytest.mark.parametrize("xs,ws", [((5, 1, 9, 8), (6, 1, 3, 3)), ((5, 8, 7, 6), (6, 8, 3, 3))])
def test_conv2d_float32_within_rounding_of_float64(xs, ws):
    # MNIST's two kinds: few im2col rows (one product per image) and many (one large product)
    x, w, b, g = rand(xs, 1), rand(ws, 2), rand((ws[0],), 3), rand((xs[0], ws[0]) + xs[2:], 4)
    grads = []
    for dtype in (np.float64, np.float32):
        tx, tw, tb = (Tensor(a.astype(dtype), requires_grad=True) for a in (x, w, b))
        out = F.conv2d(tx, tw, tb, padding=1)
        out.backward(g.astype(dtype))
        assert {out.dtype, tx.grad.dtype, tw.grad.dtype, tb.grad.dtype} == {np.dtype(dtype)}
        grads.append((out.data, tx.grad, tw.grad, tb.grad))
    for exact, got in zip(*grads):
        np.testing.assert_allclose(got, exact, rtol=1e-4, atol=1e-5 * np.abs(exact).max())


def test_conv2d_errors_name_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\).*\(4, 2, 3, 3\)"):
        F.conv2d(Tensor(np.zeros((2, 3, 8, 8))), Parameter(np.zeros((4, 2, 3, 3))))
    with pytest.raises(ValueError, match=r"input shape \(3, 8, 8\) and weight shape"):
        F.conv2d(Tensor(np.zeros((3, 8, 8))), Parameter(np.zeros((4, 3, 3, 3))))
    with pytest.raises(ValueError, match="larger than the padded input"):
        F.conv2d(Tensor(np.zeros((1, 1, 2, 2))), Parameter(np.zeros((1, 1, 3, 3))))


def max_pool_loops(x, k, s):
    """Max pooling and its gradient (to the first maximum of each window) by loops."""
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, ho, wo))
    where = {}
    for a in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    win = x[a, ch, i * s : i * s + k, j * s : j * s + k]
                    out[a, ch, i, j] = win.max()
                    di, dj = np.unravel_index(win.argmax(), win.shape)
                    where[a, ch, i, j] = (a, ch, i * s + di, j * s + dj)
    return out, where


@pytest.mark.parametrize(
    "shape,k,s",
    [
        ((2, 3, 6, 6), 2, None),
        ((2, 2, 7, 5), 2, None),
        ((1, 2, 7, 7), 3, 2),
        ((2, 1, 5, 6), 2, 1),
        ((1, 1, 6, 6), 3, None),
    ],
)
def test_max_pool2d_against_loops(shape, k, s):
    x = rand(shape, 7)
    x[0, 0, :2, :2] = 1.5  # a tie inside one window: the gradient goes to one element only
    t = Tensor(x, requires_grad=True)
    out = F.max_pool2d(t, k, s)
    ref, where = max_pool_loops(x, k, s or k)
    np.testing.assert_array_equal(out.data, ref)
    g = rand(ref.shape, 8)
    out.backward(g)
    expected = np.zeros_like(x)
    for key, pos in where.items():
        expected[pos] += g[key]
    np.testing.assert_allclose(t.grad, expected)


@pytest.mark.parametrize("shape", [(7, 3, 6, 6), (5, 2, 7, 5), (3, 1, 5, 9)])
def test_max_pool2d_2x2_over_batch_chunks_with_many_ties(shape, monkeypatch):
    # Small integers tie in most windows; a tiny chunk size makes the batch loop run several
    # chunks (with a short last one); odd sizes leave a row / column out of every window.
    n, c, h, w = shape
    monkeypatch.setattr(F, "_POOL_CHUNK", 2 * c * (h // 2 * 2) * (w // 2 * 2))  # 2 images per chunk
    x = np.random.default_rng(3).integers(-2, 3, shape).astype(np.float32)
    t = Tensor(x, requires_grad=True)
    out = F.max_pool2d(t, 2)
    ref, where = max_pool_loops(x, 2, 2)
    np.testing.assert_array_equal(out.data, ref)
    g = rand(ref.shape, 9).astype(np.float32)
    out.backward(g)
    expected = np.zeros_like(x)
    for key, pos in where.items():
        expected[pos] += g[key]
    np.testing.assert_array_equal(t.grad, expected)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 0, 4, 4)])
def test_max_pool2d_empty_batch_or_channels(shape):
    x = Tensor(np.zeros(shape, np.float32), requires_grad=True)
    out = F.max_pool2d(x, 2)
    out.sum().backward()
    assert out.shape == shape[:2] + (2, 2) and x.grad.shape == shape


def test_max_pool2d_float32_and_errors():
    x = Parameter(rand((2, 3, 4, 4), 1).astype(np.float32))
    F.max_pool2d(x, 2).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad.sum() == 2 * 3 * 4
    with pytest.raises(ValueError, match=r"\[N, C, H, W\].*\(4, 4\)"):
        F.max_pool2d(Tensor(np.zeros((4, 4))), 2)


# -- max_pool2d(relu(c)): pooled first, ReLU on the quarter kept (npnn.ops.LazyRelu) ----------


def _pool_of_relu(c: np.ndarray, g: np.ndarray, fused: bool):
    """max_pool2d(relu(.)) of c and the gradient reaching c: through an op output (fused, relu
    deferred) or through a leaf (relu computed, then pooled: the ops as written)."""
    x = Tensor(c, requires_grad=True)
    src = x * 1.0 if fused else x  # an op output's relu is deferred; a leaf's is not
    r = npnn.relu(src)
    assert isinstance(r, npnn.ops.LazyRelu) == fused
    out = F.max_pool2d(r, 2)
    out.backward(g)
    return out.data, x.grad


@settings(max_examples=examples(60), deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(2, 7), st.integers(2, 7)),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
    threads=st.sampled_from([1, 2]),
)
def test_property_pool_of_relu_fused_matches_the_ops_as_written(shape, dtype, seed, threads):
    """Small integers: ties and values <= 0 in most windows; odd sizes leave a row/column out."""
    rng = np.random.default_rng(seed)
    c = rng.integers(-2, 3, shape).astype(dtype)
    g = rng.standard_normal((shape[0], shape[1], shape[2] // 2, shape[3] // 2)).astype(dtype)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(npnn.parallel, "NUM_THREADS", threads)
        mp.setattr(npnn.parallel, "MIN_SPLIT", 1)
        out, gc = _pool_of_relu(c, g, fused=True)
    ref, gref = _pool_of_relu(c, g, fused=False)
    assert out.dtype == ref.dtype and gc.dtype == gref.dtype
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(gc, gref)  # the same winner in every window (+-0 compare equal)


def test_property_pool_of_relu_catches_a_relu_mask_left_out(monkeypatch):
    """Without ReLU's cut (np.less_equal never true: no gradient is cut, fused or not) it fails:
    in a window of values <= 0 the fused kernel's winner, found among the values before ReLU,
    is not the first of ReLU's zeros, which the cut hides."""
    monkeypatch.setattr(np, "less_equal", lambda a, b, out=None: np.greater(a, np.inf, out=out))
    assert_caught(test_property_pool_of_relu_fused_matches_the_ops_as_written)


def test_lazy_relu_read_later_or_used_twice_is_the_eager_relu():
    rng = np.random.default_rng(5)
    x = Tensor(rng.standard_normal((4, 3, 6, 6)).astype(np.float32), requires_grad=True)
    c = x * 1.0
    r = npnn.relu(c)
    pooled = F.max_pool2d(r, 2)
    assert r.shape == c.shape and r.dtype == c.dtype  # without computing it
    (pooled.sum() + (r * 2.0).sum()).backward()  # a second consumer runs relu's own VJP
    want = np.maximum(c.data, np.float32(0))
    assert r.data.tobytes() == want.tobytes()
    y = Tensor(c.data.copy(), requires_grad=True)
    ry = npnn.relu(y)
    (F.max_pool2d(ry, 2).sum() + (ry * 2.0).sum()).backward()
    np.testing.assert_array_equal(x.grad, y.grad)
    with npnn.no_grad():  # off the tape: computed at once, as before
        assert type(npnn.relu(Tensor(c.data))) is Tensor


def test_pool_of_relu_traces_as_written():
    w = Parameter(np.ones((2, 1, 3, 3), np.float32))

    def f(a):
        return F.max_pool2d(npnn.relu(F.conv2d(a, w, padding=1)), 2)

    g = npnn.trace(f, Tensor(np.ones((1, 1, 4, 4), np.float32)))
    assert g["MaxPool"].inputs == ["Relu"] and g["Relu"].inputs == ["Conv2D"]


def test_small_cnn_step_matches_numpy():
    # conv -> relu -> pool -> linear -> cross_entropy, against the loop references end to end.
    x, w, b = rand((2, 1, 6, 6), 1), rand((3, 1, 3, 3), 2), rand((3,), 3)
    fw, fb = rand((4, 12), 4), rand((4,), 5)
    labels = np.array([1, 3])
    tw, tb, tfw, tfb = (Parameter(a) for a in (w, b, fw, fb))
    h = F.max_pool2d(npnn.relu(F.conv2d(Tensor(x), tw, tb)), 2)
    loss = F.cross_entropy(F.linear(h.reshape(2, -1), tfw, tfb), labels)
    c = conv2d_loops(x, w, b, (1, 1), (0, 0))
    p, _ = max_pool_loops(np.maximum(c, 0), 2, 2)
    logits = p.reshape(2, -1) @ fw.T + fb
    assert loss.item() == pytest.approx(-_log_softmax_np(logits)[[0, 1], labels].mean())
    loss.backward()
    gradcheck(
        lambda w_, fw_: F.cross_entropy(
            F.linear(F.max_pool2d(npnn.relu(F.conv2d(Tensor(x), w_, Tensor(b))), 2).reshape(2, -1), fw_, Tensor(fb)),
            labels,
        ),
        w,
        fw,
    )
