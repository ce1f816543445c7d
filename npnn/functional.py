"""npnn.functional: coarse ops (one tape node each) for layers and losses, like torch.nn.functional.

Targets and labels may be NumPy arrays or Tensors; they receive no gradient (except in
mse_loss, where both sides are symmetric). Losses average over all elements (batch for
cross_entropy).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from npnn import ops as _ops
from npnn import parallel
from npnn import random as _random
from npnn.ops import log_softmax, relu, sigmoid, softmax, tanh  # re-exported, as torch's F does
from npnn.tensor import Tensor, _binary, _const, _nary, _result, _unary

__all__ = [
    "linear",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "mse_loss",
    "nll_loss",
    "dropout",
    "conv2d",
    "max_pool2d",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
]


def _tensor(x, name: str) -> Tensor:
    """x as a Tensor (arrays become float32 constants unless already float64)."""
    if isinstance(x, Tensor):
        return x
    if x is None:
        raise TypeError(f"{name}: expected a Tensor or array, got None")
    return Tensor(x)


def _target_array(target, like: np.ndarray, fn: str) -> np.ndarray:
    """A target as an ndarray of the input's dtype and shape (ValueError naming both shapes)."""
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if t.shape != like.shape:
        raise ValueError(f"{fn}: target shape {t.shape} does not match input shape {like.shape}")
    if t.dtype != like.dtype:
        t = t.astype(like.dtype)
    return t


def linear(x, weight, bias=None) -> Tensor:
    """x @ weight.T + bias, one node; weight is [out_features, in_features] like PyTorch's.

    npnn.nn.Linear stores its weight in this [out, in] layout (fan_in = in_features).
    """
    x = _tensor(x, "x")
    X, W = x.data, weight.data
    if W.ndim != 2 or X.shape[-1] != W.shape[1]:
        raise ValueError(
            f"linear: input shape {X.shape} does not fit weight shape {W.shape} "
            f"(expected weight [out_features, {X.shape[-1]}])"
        )
    out = X.dot(W.T) if X.ndim == 2 else X @ W.T  # dot: less overhead on small matrices
    if bias is not None:
        if bias.data.shape != (W.shape[0],):
            raise ValueError(
                f"linear: bias shape {bias.data.shape} does not match weight shape {W.shape} (expected ({W.shape[0]},))"
            )
        out += bias.data  # out is fresh: add the bias in place
    parents = (x, weight) if bias is None else (x, weight, bias)
    return _nary(out, parents, _linear_vjp, "Linear")


def _linear_vjp(g, node):
    x, weight = node._parents[:2]
    X = x.data
    flat = X.ndim != 2  # 1-D and batched inputs: the weight gradient sums over all rows
    gx = g.dot(weight.data) if x.requires_grad else None
    g2 = g.reshape(-1, g.shape[-1]) if flat else g
    gw = g2.T.dot(X.reshape(-1, X.shape[-1]) if flat else X) if weight.requires_grad else None
    if len(node._parents) == 2:
        return gx, gw
    return gx, gw, (g2.sum(axis=0) if node._parents[2].requires_grad else None)


def binary_cross_entropy(probs, targets) -> Tensor:
    """-mean(y log p + (1-y) log(1-p)) with each log clamped at -100 (PyTorch's rule), so p of
    exactly 0 or 1 gives a finite loss and gradient; NaN in p stays NaN."""
    p = _tensor(probs, "probs")
    P = p.data
    Y = _target_array(targets, P, "binary_cross_entropy")
    if P.size and (P.min() < 0 or P.max() > 1):
        raise ValueError(
            f"binary_cross_entropy: probs must lie in [0, 1], got values in "
            f"[{P.min()}, {P.max()}]; use binary_cross_entropy_with_logits for logits"
        )
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(P), -100.0)
        log_1p = np.maximum(np.log1p(-P), -100.0)
    n = P.size
    out = -(Y * log_p + (1 - Y) * log_1p).sum() / n
    return _unary(np.asarray(out, dtype=P.dtype), p, _bce_vjp, "BinaryCrossEntropy", (p, targets), _BCECtx(Y))


class _BCECtx(NamedTuple):
    """What the VJPs of binary_cross_entropy and its _with_logits form need."""

    targets: np.ndarray  # in the input's dtype and shape


def _bce_vjp(g, node):
    P, Y = node._parents[0].data, node._ctx.targets
    # d/dp = (p - y) / (p (1 - p)), the denominator floored like PyTorch's BCE backward.
    return ((g / P.size) * (P - Y) / np.maximum(P * (1 - P), 1e-12),)


def binary_cross_entropy_with_logits(logits, targets) -> Tensor:
    """mean(max(x,0) - x y + log(1 + e^-|x|)): sigmoid + BCE fused, stable for any logit."""
    x = _tensor(logits, "logits")
    X = x.data
    Y = _target_array(targets, X, "binary_cross_entropy_with_logits")
    n = X.size
    out = (np.maximum(X, 0) - X * Y + np.log1p(np.exp(-np.abs(X)))).sum() / n
    return _unary(
        np.asarray(out, dtype=X.dtype),
        x,
        _bce_with_logits_vjp,
        "BinaryCrossEntropyWithLogits",
        (x, targets),
        _BCECtx(Y),
    )


def _bce_with_logits_vjp(g, node):
    X = node._parents[0].data
    e = np.exp(-np.abs(X))  # sigmoid(x) from e^-|x|, which never overflows
    s = np.where(X >= 0, 1 / (1 + e), e / (1 + e))
    return ((g / X.size) * (s - node._ctx.targets),)


def _labels(labels, logits: np.ndarray, fn: str):
    """Class labels as int indices [N] or a probability/one-hot matrix like logits."""
    L = labels.data if isinstance(labels, Tensor) else np.asarray(labels)
    n, c = logits.shape
    if L.shape == logits.shape and L.dtype.kind == "f":
        return None, L.astype(logits.dtype, copy=False)
    if L.shape != (n,):
        raise ValueError(
            f"{fn}: labels shape {L.shape} does not fit logits shape {logits.shape} "
            f"(expected ({n},) class indices or {logits.shape} one-hot)"
        )
    if L.dtype.kind not in "iu":
        if L.dtype.kind == "f" and np.all(L == np.round(L)):
            L = L.astype(np.int64)
        else:
            raise ValueError(f"{fn}: labels must be integer class indices, got dtype {L.dtype}")
    if n and (L.min() < 0 or L.max() >= c):
        raise ValueError(f"{fn}: labels must lie in [0, {c - 1}] for {c} classes, got values in [{L.min()}, {L.max()}]")
    return L, None


def _scores_and_labels(scores, labels, fn: str, arg: str):
    """scores as an [N, C] Tensor, with labels as int indices or as a one-hot matrix."""
    x = _tensor(scores, arg)
    if x.data.ndim != 2:
        raise ValueError(f"{fn}: {arg} must be [N, C], got shape {x.data.shape}")
    idx, onehot = _labels(labels, x.data, fn)
    return x, idx, onehot


def cross_entropy(logits, labels) -> Tensor:
    """Mean over the batch of -log softmax(logits)[label]; softmax and NLL fused in one node.

    logits: [N, C]; labels: int class indices [N] or one-hot / probabilities [N, C].
    """
    x, idx, onehot = _scores_and_labels(logits, labels, "cross_entropy", "logits")
    X = x.data
    n = X.shape[0]
    z = X - X.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    logp = z - np.log(s)
    rows = np.arange(n)
    if idx is not None:
        out = -logp[rows, idx].sum() / n
    else:
        out = -(onehot * logp).sum() / n
    ctx = _CrossEntropyCtx(e, s, rows, idx, onehot)
    return _unary(np.asarray(out, dtype=X.dtype), x, _cross_entropy_vjp, "SoftmaxCrossEntropy", (x, labels), ctx)


class _CrossEntropyCtx(NamedTuple):
    exp: np.ndarray  # e^(x - max) per row
    exp_sum: np.ndarray  # its row sums, kept as [N, 1]
    rows: np.ndarray  # arange(N)
    labels: np.ndarray | None  # int class indices, or None with onehot
    onehot: np.ndarray | None


def _cross_entropy_vjp(g, node):
    e, s, rows, idx, onehot = node._ctx
    probs = e / s  # softmax, fresh: adjusted in place below
    if idx is not None:
        probs[rows, idx] -= 1
    else:
        # d/dz of -sum(y logp) = softmax * sum(y) - y (sum(y) = 1 for one-hot rows)
        probs *= onehot.sum(axis=1, keepdims=True)
        probs -= onehot
    probs *= g / len(rows)
    return (probs,)


def nll_loss(log_probs, labels) -> Tensor:
    """Mean over the batch of -log_probs[label] (pair with log_softmax)."""
    x, idx, onehot = _scores_and_labels(log_probs, labels, "nll_loss", "log_probs")
    X = x.data
    n = X.shape[0]
    rows = np.arange(n)
    out = -(X[rows, idx].sum() if idx is not None else (onehot * X).sum()) / n
    ctx = _NLLCtx(rows, idx, onehot)
    return _unary(np.asarray(out, dtype=X.dtype), x, _nll_loss_vjp, "NLLLoss", (x, labels), ctx)


class _NLLCtx(NamedTuple):
    rows: np.ndarray  # arange(N)
    labels: np.ndarray | None  # int class indices, or None with onehot
    onehot: np.ndarray | None


def _nll_loss_vjp(g, node):
    rows, idx, onehot = node._ctx
    n = len(rows)
    if idx is None:
        return (onehot * (-g / n),)
    gx = np.zeros_like(node._parents[0].data)
    gx[rows, idx] = -g / n
    return (gx,)


def mse_loss(input, target) -> Tensor:
    """mean((input - target)^2); target may be a Tensor that requires grad."""
    a = _tensor(input, "input")
    A = a.data
    if isinstance(target, Tensor):
        b = target
        if b.data.shape != A.shape:
            raise ValueError(f"mse_loss: target shape {b.data.shape} does not match input shape {A.shape}")
    else:
        b = _const(_target_array(target, A, "mse_loss"))
    d = A - b.data
    n = d.size
    out = np.asarray((d * d).sum() / n, dtype=A.dtype)
    return _binary(out, a, b, _mse_loss_vjp, "MSELoss", _MSECtx(d))


class _MSECtx(NamedTuple):
    diff: np.ndarray  # input - target


def _mse_loss_vjp(g, node):
    a, b = node._parents
    d = node._ctx.diff
    gd = d * (2 * g / d.size)
    return (gd if a.requires_grad else None, -gd if b.requires_grad else None)


def dropout(x, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p, scale the rest by 1/(1-p); identity if not training."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    x = _tensor(x, "x")
    if not training or p == 0:
        return x
    X = x.data
    if p == 1:
        mask = np.zeros_like(X)
    else:
        keep = _random.generator().random(X.shape, dtype=np.float32) >= p
        mask = keep.astype(X.dtype)
        mask *= 1.0 / (1.0 - p)
    return _unary(X * mask, x, _dropout_vjp, "Dropout", None, _DropoutCtx(mask))


class _DropoutCtx(NamedTuple):
    mask: np.ndarray  # 0 where dropped, 1/(1-p) where kept


def _dropout_vjp(g, node):
    return (g * node._ctx.mask,)


def _pair(v) -> tuple:
    """An int or a pair of ints as a pair of ints."""
    a, b = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    return int(a), int(b)


_FEW_ROWS = 32  # im2col rows (c*kh*kw, +1 with a bias) up to which conv2d multiplies image by image


def conv2d(x, weight, bias=None, stride=1, padding=0) -> Tensor:
    """2-D cross-correlation, NCHW input and [out, in, kh, kw] weight (PyTorch's layout).

    Forward: im2col through sliding_window_view (one copy) and one matmul, or one per image
    for kernels with few rows (_FEW_ROWS: MNIST's first conv has 9). Backward: one matmul per
    gradient, then the input gradient is scattered back in a loop over the kh*kw kernel
    offsets (never over pixels, never np.add.at); stride-1 "same" convolutions take
    _conv2d_same_input_grad's flat shifts. The copies (im2col, layout swaps, the scatter) are
    split over npnn's two threads (npnn.parallel). The one-product path returns its [o, n, ho, wo]
    product seen as NCHW (a transposed view, no copy), and its VJP reads a gradient in that
    layout (max_pool2d's VJP writes one) without a copy.
    """
    x = _tensor(x, "x")
    X, W = x.data, weight.data
    if X.ndim != 4 or W.ndim != 4:
        raise ValueError(
            f"conv2d: expected input [N, C, H, W] and weight [O, C, kh, kw], got "
            f"input shape {X.shape} and weight shape {W.shape}"
        )
    if X.shape[1] != W.shape[1]:
        raise ValueError(
            f"conv2d: input shape {X.shape} has {X.shape[1]} channels but weight shape {W.shape} expects {W.shape[1]}"
        )
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    n, c, h, w = X.shape
    o, _, kh, kw = W.shape
    if bias is not None and bias.data.shape != (o,):
        raise ValueError(
            f"conv2d: bias shape {bias.data.shape} does not match weight shape {W.shape} (expected ({o},))"
        )
    if ph or pw:
        xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=X.dtype)
        xp[:, :, ph : ph + h, pw : pw + w] = X
    else:
        xp = X
    hp, wp = xp.shape[2], xp.shape[3]
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"conv2d: kernel {(kh, kw)} is larger than the padded input "
            f"{(hp, wp)} (input shape {X.shape}, padding {(ph, pw)})"
        )
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]  # [n,c,ho,wo,kh,kw]
    # im2col, the one copy: rows (c, kh, kw), columns (n, ho, wo), so every row is read and
    # written in runs of wo and the backward scatter below adds contiguous blocks.
    k = c * kh * kw
    # A bias rides in the products as one more row of ones under the columns: the forward
    # adds it and the weight gradient's product sums g for it, each saving a pass over the output.
    kb = k + (bias is not None)
    cols = np.empty((kb, n, ho * wo), X.dtype)
    cols6 = cols[:k].reshape(c, kh, kw, n, ho, wo)

    def im2col(first: int, stop: int) -> None:
        cols6[:, :, :, first:stop] = win[first:stop].transpose(1, 4, 5, 0, 2, 3)

    parallel.rows(im2col, n, cols6.size)
    wmat = W.reshape(o, k)
    wb = wmat
    if bias is not None:
        cols[k] = 1
        wb = np.concatenate([wmat, bias.data[:, None].astype(W.dtype, copy=False)], axis=1)
    few = kb <= _FEW_ROWS
    if few:  # image i's columns cols[:, i] are a strided matrix that BLAS reads in place
        out = _per_image(wb, cols.transpose(1, 0, 2)).reshape(n, o, ho, wo)  # NCHW already
    else:
        # channel-major [o, n, ho, wo] memory seen as NCHW: no copy, and the VJP's g_o below
        # comes back in this layout from max_pool2d's VJP and elementwise VJPs.
        out = (wb @ cols.reshape(kb, n * ho * wo)).reshape(o, n, ho, wo).swapaxes(0, 1)
    parents = (x, weight) if bias is None else (x, weight, bias)
    return _nary(out, parents, _conv2d_vjp, "Conv2D", None, _Conv2dCtx(cols, wmat, (sh, sw), (ph, pw)))


def _per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul(a, b) with b (and a, if 3-D) stacked over images: one small product per image,
    each too small for BLAS's threads, so the images are split over npnn's threads instead."""
    n = b.shape[0]
    out = np.empty((n, a.shape[-2], b.shape[-1]), np.result_type(a, b))

    def images(first: int, stop: int) -> None:
        np.matmul(a if a.ndim == 2 else a[first:stop], b[first:stop], out=out[first:stop])

    parallel.rows(images, n, out.size + b.size)
    return out


def _swap01(a: np.ndarray) -> np.ndarray:
    """a with its first two axes swapped ([c, n, ...] <-> [n, c, ...]) as a contiguous array,
    the copy split over npnn's threads."""
    out = np.empty((a.shape[1], a.shape[0], *a.shape[2:]), a.dtype)
    parallel.rows(lambda first, stop: np.copyto(out[first:stop], a[:, first:stop].swapaxes(0, 1)), len(out), a.size)
    return out


def _channel_major(a: np.ndarray) -> np.ndarray:
    """a [n, c, ...] as a contiguous [c, n, ...] array: a view if a is one seen as NCHW, else _swap01's copy."""
    t = a.swapaxes(0, 1)
    return t if t.flags.c_contiguous else _swap01(a)


class _Conv2dCtx(NamedTuple):
    cols: np.ndarray  # the im2col matrix [c*kh*kw (+1 row of ones with a bias), n, ho*wo]
    wmat: np.ndarray  # the weight as [o, c*kh*kw]
    stride: tuple
    padding: tuple


def _conv2d_vjp(g, node):
    x, weight = node._parents[:2]
    bias = node._parents[2] if len(node._parents) == 3 else None
    cols, wmat, (sh, sw), (ph, pw) = node._ctx
    X, W = x.data, weight.data
    n, c, h, w = X.shape
    o, _, kh, kw = W.shape
    ho, wo = g.shape[2:]
    kb, k = cols.shape[0], wmat.shape[1]
    few = kb <= _FEW_ROWS
    g_o = None if few else _channel_major(g).reshape(o, n * ho * wo)
    gwb = None  # [o, kb]: the weight gradient, then the bias gradient in column k
    if (weight.requires_grad or kb > k and bias.requires_grad) and few:
        g3 = g.reshape(n, o, ho * wo).transpose(0, 2, 1)  # one small product per image
        gwb = _per_image(cols.transpose(1, 0, 2), g3).sum(axis=0).T
    elif weight.requires_grad or kb > k and bias.requires_grad:
        gwb = (cols.reshape(kb, n * ho * wo) @ g_o.T).T  # not g @ cols.T: slow in OpenBLAS (docs/performance.md)
    gw = gwb[:, :k].reshape(W.shape) if weight.requires_grad else None
    gx = None
    if x.requires_grad and g_o is None:
        g_o = _channel_major(g).reshape(o, n * ho * wo)
    if x.requires_grad and (sh, sw) == (1, 1) and (ho, wo) == (h, w):
        gx = _conv2d_same_input_grad(W, g_o, n, h, w, ph, pw)
    elif x.requires_grad:
        hp, wp = h + 2 * ph, w + 2 * pw
        gcols = (wmat.T @ g_o).reshape(c, kh, kw, n, ho, wo)
        gxp = np.zeros((c, n, hp, wp), dtype=X.dtype)  # channel-major: blocks add contiguously
        for i in range(kh):
            rows = slice(i, i + sh * (ho - 1) + 1, sh)
            for j in range(kw):
                gxp[:, :, rows, j : j + sw * (wo - 1) + 1 : sw] += gcols[:, i, j]
        gx = _swap01(gxp[:, :, ph : ph + h, pw : pw + w])
    if bias is None:
        return gx, gw
    return gx, gw, (gwb[:, k].astype(bias.data.dtype) if bias.requires_grad else None)


def _conv2d_same_input_grad(W: np.ndarray, g_o: np.ndarray, n: int, h: int, w: int, ph: int, pw: int) -> np.ndarray:
    """Input gradient [n, c, h, w] of a stride-1 conv2d whose output has the input's size.

    Kernel offset (i, j) moves its [c, n, h, w] block of W^T g by (i - ph, j - pw), which in
    the flattened [c, n, h, w] array is one constant shift: once the rows and columns that
    would wrap into a neighbouring row or image are zeroed, each offset is a single contiguous
    add, which NumPy does several times faster than a strided 2-D window add (docs/performance.md).
    The kernel rows are ordered (i, j, c) so each block is contiguous.
    """
    o, c, kh, kw = W.shape
    wmat = W.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)
    gcols = (wmat @ g_o).reshape(kh, kw, c, n, h, w)
    # Offsets with a row or column inside the image (the others land wholly in the padding).
    offsets = [(i, j, i - ph, j - pw) for i in range(kh) for j in range(kw) if abs(i - ph) < h and abs(j - pw) < w]

    def zero_outside(first: int, stop: int) -> None:  # zero what would land outside the image
        for i, j, di, dj in offsets:
            block = gcols[i, j, first:stop]
            block[:, :, : max(0, -di)] = 0
            block[:, :, h - max(0, di) :] = 0
            block[:, :, :, : max(0, -dj)] = 0
            block[:, :, :, w - max(0, dj) :] = 0

    gx = np.zeros((c, n, h, w), dtype=gcols.dtype)
    flat = gx.reshape(-1)
    size, per = flat.size, n * h * w

    def add_shifted(first: int, stop: int) -> None:  # channels [first, stop) of gx, all offsets in order
        lo, hi = first * per, stop * per
        for i, j, di, dj in offsets:
            shift = di * w + dj
            t0, t1 = max(lo, shift, 0), min(hi, size + min(shift, 0))  # flat[t] += src[t - shift]
            flat[t0:t1] += gcols[i, j].reshape(-1)[t0 - shift : t1 - shift]

    # Zeroing first, everywhere: an add reads its source across the other thread's channels.
    parallel.rows(zero_outside, c, gcols.size)
    parallel.rows(add_shifted, c, gcols.size)
    return gx.swapaxes(0, 1)  # NCHW seen over channel-major memory, as conv2d's output


_POOL_CHUNK = 1 << 18  # elements of input per batch chunk in _max_pool_2x2 (1 MB of float32)


def _max_pool_2x2(x: Tensor, ho: int, wo: int) -> Tensor:
    """2x2, stride-2 max pooling; the first maximum of a window in row order gets its gradient.

    Of an npnn.ops.LazyRelu, relu(c) with c its input, it pools c and applies ReLU to the
    quarter of the values it keeps, one node whose parent is c (traced as written: Relu, then
    MaxPool): relu is monotone, so the values are relu's then pool's, and so is each window's
    gradient (the first of the tied maxima if positive, none if not), except for a NaN in c.
    The forward keeps four bytes per window, which of its four inputs gets the gradient (none
    where ReLU cut it), so the backward is four products of g into strided slices, no pass
    over the input. The forward runs over batch chunks of ~1 MB so the temporaries stay in
    cache (docs/performance.md), both directions split over two threads (npnn.parallel).
    (A non-finite g turns into NaN beside the winner: g * 0.)
    """
    src = x._ctx if type(x) is _ops.LazyRelu else x  # relu's input: pool first, then ReLU
    X = src.data
    n, c = X.shape[:2]
    he, we = 2 * ho, 2 * wo
    step = max(1, _POOL_CHUNK // max(1, c * he * we))
    out = np.empty((n, c, ho, wo), X.dtype)
    routes = np.empty((4, n, c, ho, wo), bool)  # window offsets (0,0), (0,1), (1,0), (1,1)

    def images(first: int, stop: int) -> None:
        upper, lower = np.empty((2, min(step, stop - first), c, ho, wo), X.dtype)
        top, bottom = np.empty((2, *upper.shape), bool)
        for s in range(first, stop, step):
            e = min(s + step, stop)
            k = e - s
            xs = X[s:e, :, :he, :we]
            r00, r01, r10, r11 = routes[:, s:e]
            o, t, b = out[s:e], top[:k], bottom[:k]
            np.maximum(xs[:, :, 0::2, 0::2], xs[:, :, 0::2, 1::2], out=upper[:k])
            np.greater_equal(xs[:, :, 0::2, 0::2], xs[:, :, 0::2, 1::2], out=r00)  # left wins, top row
            np.maximum(xs[:, :, 1::2, 0::2], xs[:, :, 1::2, 1::2], out=lower[:k])
            np.greater_equal(xs[:, :, 1::2, 0::2], xs[:, :, 1::2, 1::2], out=r10)
            np.maximum(upper[:k], lower[:k], out=o)
            np.greater_equal(upper[:k], lower[:k], out=t)  # ties go to the top row
            if src is x:
                np.logical_not(t, out=b)
            else:  # ReLU: no gradient where the max is <= 0 (NaN passes, as in relu's VJP)
                np.less_equal(o, 0, out=b)
                np.maximum(o, _ops._ZERO, out=o)
                np.greater(t, b, out=t)  # top row won and kept
                np.logical_or(t, b, out=b)
                np.logical_not(b, out=b)  # bottom row won and kept
            np.greater(t, r00, out=r01)
            np.logical_and(t, r00, out=r00)
            np.greater(b, r10, out=r11)
            np.logical_and(b, r10, out=r10)

    parallel.rows(images, n, X.size)
    return _result(out, (src,), x.requires_grad, _max_pool_2x2_vjp, "MaxPool", (x,), _MaxPool2x2Ctx(routes))


class _MaxPool2x2Ctx(NamedTuple):
    routes: np.ndarray  # bool [4, n, c, ho, wo]: window offset (i, j) = 2 i + j gets the gradient


def _max_pool_2x2_vjp(g, node):
    X = node._parents[0].data
    routes = node._ctx.routes
    he, we = 2 * routes.shape[3], 2 * routes.shape[4]
    # In X's memory layout (conv2d's output is channel-major), which its VJP reads without a copy.
    gx = np.empty_like(X) if X.shape[2:] == (he, we) else np.zeros_like(X)

    def images(first: int, stop: int) -> None:
        gs, gxs = g[first:stop], gx[first:stop]
        for r, (i, j) in zip(routes[:, first:stop], ((0, 0), (0, 1), (1, 0), (1, 1))):
            np.multiply(gs, r, out=gxs[:, :, i:he:2, j:we:2])

    parallel.rows(images, len(X), X.size)
    return (gx,)


def max_pool2d(x, kernel_size, stride=None) -> Tensor:
    """Max over kernel_size windows of NCHW input (stride defaults to kernel_size; no padding).

    The 2x2/stride-2 case is _max_pool_2x2; other sizes take the argmax of sliding windows.
    Each window's gradient goes to one maximum (the first in row order), as in PyTorch.
    """
    x = _tensor(x, "x")
    X = (x._ctx if type(x) is _ops.LazyRelu else x).data  # its shape; a LazyRelu's values stay unread
    if X.ndim != 4:
        raise ValueError(f"max_pool2d: expected input [N, C, H, W], got shape {X.shape}")
    kh, kw = _pair(kernel_size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    n, c, h, w = X.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"max_pool2d: kernel {(kh, kw)} is larger than the input {(h, w)}")
    if (kh, kw, sh, sw) == (2, 2, 2, 2):
        return _max_pool_2x2(x, ho, wo)
    X = x.data
    win = sliding_window_view(X, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    flat = win.reshape(n, c, ho, wo, kh * kw)
    arg = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return _unary(out, x, _max_pool2d_vjp, "MaxPool", None, _MaxPoolCtx(arg, (kh, kw), (sh, sw)))


class _MaxPoolCtx(NamedTuple):
    argmax: np.ndarray  # [n, c, ho, wo]: each window's first maximum, as an offset in row order
    kernel: tuple
    stride: tuple


def _max_pool2d_vjp(g, node):
    arg, (kh, kw), (sh, sw) = node._ctx
    ho, wo = arg.shape[2:]
    gx = np.zeros_like(node._parents[0].data)
    for k in range(kh * kw):
        i, j = divmod(k, kw)
        gx[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += g * (arg == k)
    return (gx,)
