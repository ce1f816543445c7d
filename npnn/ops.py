"""Tensor ops: each forward in NumPy with its VJP right below it, and Tensor's operators.

A VJP `vjp(g, node)` receives the output's gradient `g` and the output Tensor `node` (its
inputs in node._parents, saved values in node._ctx) and returns one gradient per tensor input
(None where the input needs none). It never writes into `g` and never returns one fresh array
twice: the engine in npnn/tensor.py relies on both to accumulate in place safely. Every VJP is
a module function `_<op>_vjp`: it reads the inputs from node._parents, the output from
node.data and anything else from node._ctx, a NamedTuple named for the op (`_<Op>Ctx`) or None.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from npnn import parallel
from npnn import tensor as _t
from npnn.tensor import Tensor, _add_reduce, _binary, _const, _nary, _result, _unary, unbroadcast

__all__ = [
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
]


# Python numbers take the one-input fast path and never upcast (NEP 50). NumPy scalars are left
# out on purpose (np.float64 subclasses float but would upcast float32): they become constants.
_PY_NUMBERS = frozenset((int, float))

# NumPy handles a Python number in an op at about twice the cost of a 0-d array (it must work
# out the number's weak dtype each time), so constants are 0-d float32 arrays; with float64
# data the result is still float64.
_ZERO = np.zeros((), np.float32)
_ONE = np.ones((), np.float32)
_EXP_MAX = np.array(88.0, np.float32)

_SCALARS: dict = {}  # (number, dtype) -> 0-d array of that dtype, for the scalar fast paths


def _scalar(value, dtype):
    """value as a cached read-only 0-d array of a float dtype (other dtypes: value unchanged)."""
    key = (value, dtype)
    s = _SCALARS.get(key)
    if s is None:
        if len(_SCALARS) > 4096:  # a program cycling through many numbers must not grow this
            _SCALARS.clear()
        if dtype.kind == "f":
            s = np.array(value, dtype)
            s.flags.writeable = False
        else:
            s = value
        _SCALARS[key] = s
    return s


def _array(a):
    """a as an ndarray: ufuncs on 0-d arrays return NumPy scalars, which out= cannot write into."""
    return a if type(a) is np.ndarray else np.array(a)


def _pass(g, node):
    return (g,)


def _negate(g, node):
    return (-g,)


def _pass2(g, node):
    return g, g


def _pass_negate(g, node):
    return g, -g


# VJPs are module functions of (g, node), not closures, so an op allocates no function, cell or
# closure tuple, and a long tape gives the cyclic GC less to scan.


def _add_vjp(g, node):
    a, b = node._parents
    return (
        unbroadcast(g, a.data.shape) if a.requires_grad else None,
        unbroadcast(g, b.data.shape) if b.requires_grad else None,
    )


def _sub_vjp(g, node):
    a, b = node._parents
    return (
        unbroadcast(g, a.data.shape) if a.requires_grad else None,
        unbroadcast(-g, b.data.shape) if b.requires_grad else None,
    )


def _mul_vjp(g, node):
    a, b = node._parents
    return (g * b.data if a.requires_grad else None, g * a.data if b.requires_grad else None)


def _mul_broadcast_vjp(g, node):
    a, b = node._parents
    return (
        unbroadcast(g * b.data, a.data.shape) if a.requires_grad else None,
        unbroadcast(g * a.data, b.data.shape) if b.requires_grad else None,
    )


class _ScaleCtx(NamedTuple):
    factor: np.ndarray  # the Python number as a 0-d array of the input's dtype


def _scale_vjp(g, node):
    return (g * node._ctx.factor,)


class _DivScalarCtx(NamedTuple):
    divisor: np.ndarray  # the Python number as a 0-d array of the input's dtype


def _div_scalar_vjp(g, node):
    return (g / node._ctx.divisor,)


def _matmul_vjp(g, node):
    a, b = node._parents
    return (g.dot(b.data.T) if a.requires_grad else None, a.data.T.dot(g) if b.requires_grad else None)


def _tensor_pair(a, b):
    """Both operands as Tensors; a non-Tensor side becomes a constant of the other's float dtype."""
    if not isinstance(b, Tensor):
        b = _const(b, a.data.dtype)
    elif not isinstance(a, Tensor):
        a = _const(a, b.data.dtype)
    return a, b


# -- arithmetic -------------------------------------------------------------------------------
# Tensor's operators always pass the Tensor as `a`; a Python number as `a` comes only from a
# direct call such as ops.sub(1, t).


def add(a, b) -> Tensor:
    """a + b with broadcasting."""
    if not (isinstance(b, Tensor) and isinstance(a, Tensor)):  # Tensor + Tensor skips all this
        if type(b) in _PY_NUMBERS:
            return _unary(a.data + _scalar(b, a.data.dtype), a, _pass, "AddV2", (a, b))
        if type(a) in _PY_NUMBERS:
            return add(b, a)
        a, b = _tensor_pair(a, b)
    # Same shapes, the common case: both gradients are g itself.
    return _binary(a.data + b.data, a, b, _pass2 if a.data.shape == b.data.shape else _add_vjp, "AddV2")


def sub(a, b) -> Tensor:
    """a - b with broadcasting."""
    if not (isinstance(b, Tensor) and isinstance(a, Tensor)):
        if type(b) in _PY_NUMBERS:
            return _unary(a.data - _scalar(b, a.data.dtype), a, _pass, "Sub", (a, b))
        if type(a) in _PY_NUMBERS:
            return _unary(_scalar(a, b.data.dtype) - b.data, b, _negate, "Sub", (a, b))
        a, b = _tensor_pair(a, b)
    return _binary(a.data - b.data, a, b, _pass_negate if a.data.shape == b.data.shape else _sub_vjp, "Sub")


def mul(a, b) -> Tensor:
    """a * b with broadcasting."""
    if not (isinstance(b, Tensor) and isinstance(a, Tensor)):
        if type(a) in _PY_NUMBERS:
            a, b = b, a
        if type(b) in _PY_NUMBERS:
            s = _scalar(b, a.data.dtype)
            return _unary(a.data * s, a, _scale_vjp, "Mul", (a, b), _ScaleCtx(s))
        a, b = _tensor_pair(a, b)
    return _binary(a.data * b.data, a, b, _mul_vjp if a.data.shape == b.data.shape else _mul_broadcast_vjp, "Mul")


def div(a, b) -> Tensor:
    """a / b with broadcasting."""
    if type(b) in _PY_NUMBERS:
        s = _scalar(b, a.data.dtype)
        return _unary(a.data / s, a, _div_scalar_vjp, "RealDiv", (a, b), _DivScalarCtx(s))
    if type(a) in _PY_NUMBERS:
        return _unary(_scalar(a, b.data.dtype) / b.data, b, _rdiv_vjp, "RealDiv", (a, b))
    a, b = _tensor_pair(a, b)
    return _binary(a.data / b.data, a, b, _div_vjp, "RealDiv")


def _rdiv_vjp(g, node):
    return (-g * node.data / node._parents[0].data,)


def _div_vjp(g, node):
    a, b = node._parents
    ga = g / b.data
    return (
        unbroadcast(ga, a.data.shape) if a.requires_grad else None,
        unbroadcast(-ga * node.data, b.data.shape) if b.requires_grad else None,
    )


def pow(a, b) -> Tensor:
    """a ** b; the exponent may be a number or a Tensor (then d/db = a**b log a)."""
    if type(b) in _PY_NUMBERS and isinstance(a, Tensor):
        A = a.data
        if b == 2:
            return _unary(A * A, a, _square_vjp, "Pow", (a, b))
        return _unary(A**b, a, _pow_scalar_vjp, "Pow", (a, b), _PowScalarCtx(b))
    if type(a) in _PY_NUMBERS:
        loga = math.log(a) if a > 0 else float("nan")
        return _unary(a**b.data, b, _rpow_vjp, "Pow", (a, b), _RpowCtx(loga))
    a, b = _tensor_pair(a, b)
    return _binary(a.data**b.data, a, b, _pow_vjp, "Pow")


def _square_vjp(g, node):
    return (g * (2 * node._parents[0].data),)


class _PowScalarCtx(NamedTuple):
    exponent: int | float


def _pow_scalar_vjp(g, node):
    b = node._ctx.exponent
    return (g * (b * node._parents[0].data ** (b - 1)),)


class _RpowCtx(NamedTuple):
    log_base: float  # log of the Python-number base (nan for a base <= 0)


def _rpow_vjp(g, node):
    return (g * node.data * node._ctx.log_base,)


def _pow_vjp(g, node):
    a, b = node._parents
    A, B = a.data, b.data
    return (
        unbroadcast(g * B * A ** (B - 1), A.shape) if a.requires_grad else None,
        unbroadcast(g * node.data * np.log(A), B.shape) if b.requires_grad else None,
    )


def neg(x: Tensor) -> Tensor:
    """-x."""
    return _unary(-x.data, x, _negate, "Neg")


def matmul(a, b) -> Tensor:
    """a @ b (NumPy matmul semantics, batched and 1-D included)."""
    a, b = _tensor_pair(a, b)
    A, B = a.data, b.data
    if A.ndim == 2 and B.ndim == 2:
        # ndarray.dot: same result as @ for matrices, with less call overhead on small ones.
        if A.shape[1] != B.shape[0]:
            raise ValueError(f"matmul: shapes {A.shape} and {B.shape} are not aligned ({A.shape[1]} != {B.shape[0]})")
        return _binary(A.dot(B), a, b, _matmul_vjp, "MatMul")
    return _matmul_nd(a, b)


def _matmul_nd(a: Tensor, b: Tensor) -> Tensor:
    """matmul with a 1-D or batched operand (broadcast batch axes are summed in the VJP)."""
    A, B = a.data, b.data
    try:
        out = A @ B
    except ValueError:
        raise ValueError(
            f"matmul: shapes {A.shape} and {B.shape} are not aligned (inner dimensions must match)"
        ) from None
    return _binary(out, a, b, _matmul_nd_vjp, "MatMul" if out.ndim <= 2 else "BatchMatMulV2")


def _matmul_nd_vjp(g, node):
    a, b = node._parents
    A, B = a.data, b.data
    a2 = A[None, :] if A.ndim == 1 else A
    b2 = B[:, None] if B.ndim == 1 else B
    g2 = g[..., None] if B.ndim == 1 else g  # restore the axes 1-D operands dropped
    if A.ndim == 1:
        g2 = g2[..., None, :]
    ga = gb = None
    if a.requires_grad:
        ga = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(A.shape)
    if b.requires_grad:
        gb = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(B.shape)
    return ga, gb


class _SelectCtx(NamedTuple):
    """What _select_vjp needs for maximum, minimum and where."""

    take_a: np.ndarray  # bool: where the output took a's element, else b's


def _select_vjp(g, node):
    a, b = node._parents
    take_a = node._ctx.take_a
    return (
        unbroadcast(np.where(take_a, g, 0), a.data.shape) if a.requires_grad else None,
        unbroadcast(np.where(take_a, 0, g), b.data.shape) if b.requires_grad else None,
    )


def maximum(a, b) -> Tensor:
    """Elementwise max; a tie sends the gradient to a."""
    a, b = _tensor_pair(a, b)
    A, B = a.data, b.data
    return _binary(np.maximum(A, B), a, b, _select_vjp, "Maximum", _SelectCtx(A >= B))


def minimum(a, b) -> Tensor:
    """Elementwise min; a tie sends the gradient to a."""
    a, b = _tensor_pair(a, b)
    A, B = a.data, b.data
    return _binary(np.minimum(A, B), a, b, _select_vjp, "Minimum", _SelectCtx(A <= B))


def clip(x: Tensor, low=None, high=None) -> Tensor:
    """x limited to [low, high]; the gradient passes where x is inside."""
    X = x.data
    out = np.clip(X, low, high)
    return _unary(out, x, _clip_vjp, "ClipByValue", None, _ClipCtx(out == X))


class _ClipCtx(NamedTuple):
    inside: np.ndarray  # bool: where x was inside [low, high]


def _clip_vjp(g, node):
    return (g * node._ctx.inside,)


# -- elementwise functions --------------------------------------------------------------------


def _exp_vjp(g, node):
    return (g * node.data,)


def exp(x: Tensor) -> Tensor:
    """e ** x."""
    return _unary(np.exp(x.data), x, _exp_vjp, "Exp")


def _log_vjp(g, node):
    return (g / node._parents[0].data,)


def log(x: Tensor) -> Tensor:
    """Natural logarithm (log 0 = -inf and log of negatives = nan, as NumPy, not hidden)."""
    return _unary(np.log(x.data), x, _log_vjp, "Log")


def sqrt(x: Tensor) -> Tensor:
    """Square root."""
    return _unary(np.sqrt(x.data), x, _sqrt_vjp, "Sqrt")


def _sqrt_vjp(g, node):
    return (g / (2 * node.data),)


def abs(x: Tensor) -> Tensor:
    """|x| (gradient sign(x), 0 at 0)."""
    return _unary(np.abs(x.data), x, _abs_vjp, "Abs")


def _abs_vjp(g, node):
    return (g * np.sign(node._parents[0].data),)


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + e^-x), computed as u / (1 + u) with u = e^min(x, 88): no overflow for any x."""
    # exp overflows float32 above 88.7; sigmoid(88) is 1 - 6e-39, so clamping there loses nothing.
    u = _array(np.minimum(x.data, _EXP_MAX))
    np.exp(u, out=u)
    d = u + _ONE
    return _unary(np.divide(u, d, out=u), x, _sigmoid_vjp, "Sigmoid", None, _SigmoidCtx(d))


class _SigmoidCtx(NamedTuple):
    denominator: np.ndarray  # 1 + u, with out = u / (1 + u)


def _sigmoid_vjp(g, node):
    t = _array(g * node.data)  # sigmoid' = u / (1 + u)^2 = out / d, exact even where out rounds to 1
    return (np.divide(t, node._ctx.denominator, out=t),)


def _tanh_vjp(g, node):
    out = node.data
    t = _array(out * out)  # fresh: the rest happens in place
    np.subtract(_ONE, t, out=t)
    return (np.multiply(t, g, out=t),)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return _unary(np.tanh(x.data), x, _tanh_vjp, "Tanh")


def _relu_vjp(g, node):
    # g where the output is > 0 or NaN (PyTorch's threshold_backward passes NaN's gradient
    # through); a one-byte mask is cheaper than a float one (docs/performance.md). Large
    # batches in two halves on two threads (npnn.parallel).
    y = node.data
    if y.ndim == 0 or g.shape != y.shape or not parallel.worth(len(y), y.size):
        keep = _array(np.less_equal(y, _ZERO))
        return (g * np.logical_not(keep, out=keep),)
    out = np.empty(g.shape, g.dtype)

    def rows(first: int, stop: int) -> None:
        keep = np.less_equal(y[first:stop], _ZERO)
        np.multiply(g[first:stop], np.logical_not(keep, out=keep), out=out[first:stop])

    parallel.rows(rows, len(y), y.size)
    return (out,)


def _relu_forward(X: np.ndarray) -> np.ndarray:
    """max(X, 0) as a new array; large batches in two halves on two threads (npnn.parallel)."""
    if X.ndim == 0 or not parallel.worth(len(X), X.size):
        return _array(np.maximum(X, _ZERO))
    out = np.empty(X.shape, np.result_type(X, _ZERO))
    parallel.rows(lambda first, stop: np.maximum(X[first:stop], _ZERO, out=out[first:stop]), len(X), X.size)
    return out


_DATA = Tensor.data  # the slot behind Tensor.data, which LazyRelu wraps in a property
_PENDING = np.empty(0, np.float32)  # a LazyRelu's data until its first read


class LazyRelu(Tensor):
    """relu(x) of a 4-D op output whose values are computed on the first read of .data.

    npnn.functional.max_pool2d of one reads x (kept in _ctx) instead, takes the max there and
    applies ReLU to a quarter of the values: relu is monotone, so the values are the same and
    so are the gradients (docs/npnn.md). Anything else that reads .data gets relu(x) then, the
    same bits as the eager op. Only op outputs are deferred: npnn never writes into those.
    """

    __slots__ = ()

    @property
    def data(self) -> np.ndarray:
        d = _DATA.__get__(self, Tensor)
        if d is _PENDING:
            d = _relu_forward(self._ctx.data)
            _DATA.__set__(self, d)
        return d

    @data.setter
    def data(self, value) -> None:
        _DATA.__set__(self, value)


def relu(x: Tensor) -> Tensor:
    """max(x, 0); of a 4-D float op output, computed when first read (LazyRelu)."""
    X = x.data
    if X.ndim == 4 and x._backward is not None and X.dtype.kind == "f" and X.itemsize >= 4 and _t._tracer is None:
        t = _unary(_PENDING, x, _relu_vjp, "Relu")
        t.__class__ = LazyRelu
        t._ctx = x  # _relu_vjp reads only t.data
        return t
    return _unary(_relu_forward(X), x, _relu_vjp, "Relu")


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along axis, shifted by the max for stability."""
    e = np.exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)
    return _unary(out, x, _softmax_vjp, "Softmax", None, _SoftmaxCtx(axis))


class _SoftmaxCtx(NamedTuple):
    """What softmax's and log_softmax's VJPs need."""

    axis: int


def _softmax_vjp(g, node):
    out, axis = node.data, node._ctx.axis
    gs = g * out
    return (gs - out * gs.sum(axis=axis, keepdims=True),)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x - logsumexp(x) along axis, stable for logits of any size."""
    z = x.data - x.data.max(axis=axis, keepdims=True)
    out = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return _unary(out, x, _log_softmax_vjp, "LogSoftmax", None, _SoftmaxCtx(axis))


def _log_softmax_vjp(g, node):
    return (g - np.exp(node.data) * g.sum(axis=node._ctx.axis, keepdims=True),)


def where(condition, a, b) -> Tensor:
    """Elements of a where condition holds, else of b (condition gets no gradient)."""
    c = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = _const(a)
    a, b = _tensor_pair(a, b)
    return _nary(np.where(c, a.data, b.data), (a, b), _select_vjp, "SelectV2", (condition, a, b), _SelectCtx(c))


def concatenate(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    ts = tuple(t if isinstance(t, Tensor) else _const(t) for t in tensors)
    if not ts:
        raise ValueError("concatenate: expected at least one tensor, got none")
    out = np.concatenate([t.data for t in ts], axis=axis)
    ax = axis % out.ndim
    cuts = np.cumsum([t.data.shape[ax] for t in ts])[:-1]
    return _nary(out, ts, _concatenate_vjp, "ConcatV2", None, _ConcatCtx(cuts, ax))


class _ConcatCtx(NamedTuple):
    cuts: np.ndarray  # where each input ends along the axis, the last one left out
    axis: int  # non-negative


def _concatenate_vjp(g, node):
    c = node._ctx
    return tuple(np.split(g, c.cuts, axis=c.axis))


def stack(tensors, axis: int = 0) -> Tensor:
    """Join same-shape tensors along a new axis."""
    ts = tuple(t if isinstance(t, Tensor) else _const(t) for t in tensors)
    if not ts:
        raise ValueError("stack: expected at least one tensor, got none")
    shapes = {t.data.shape for t in ts}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors need one shape, got {sorted(shapes)}")
    out = np.stack([t.data for t in ts], axis=axis)
    return _nary(out, ts, _stack_vjp, "Pack", None, _StackCtx(axis % out.ndim))


class _StackCtx(NamedTuple):
    axis: int  # the new axis, non-negative


def _stack_vjp(g, node):
    ax = node._ctx.axis
    return tuple(np.take(g, i, axis=ax) for i in range(len(node._parents)))


# -- reductions and shapes --------------------------------------------------------------------


def _norm_axis(axis, ndim):
    """axis as a tuple of non-negative ints (None = all axes)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(int(a) % ndim if ndim else int(a) for a in axis)


def _kept_shape(shape, axes):
    """shape with the reduced axes kept as 1 (the shape of a keepdims result)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _spread(g, kept, shape, dtype, scale=None):
    """A fresh array of `shape` holding g (reduced over some axes) broadcast back, times scale.

    Fresh, not np.broadcast_to's read-only view: the engine may then accumulate into it, and
    it avoids two pure-Python NumPy helpers (expand_dims, broadcast_to) on the hot path.
    """
    out = np.empty(shape, dtype)
    if scale is None:
        out[...] = g.reshape(kept)
    else:
        np.multiply(g.reshape(kept), scale, out=out)
    return out


def sum(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Sum over axis (None = all)."""
    X = x.data
    shape, dtype = X.shape, X.dtype
    kept = _kept_shape(shape, _norm_axis(axis, X.ndim))
    # add.reduce skips ndarray.sum's Python wrapper; bool/int data need sum's integer result.
    if dtype.kind == "f":
        out = _add_reduce(X, axis, keepdims=keepdims)
    else:
        out = X.sum(axis, keepdims=keepdims)
    return _unary(out, x, _sum_vjp, "Sum", None, _SumCtx(kept))


class _SumCtx(NamedTuple):
    kept: tuple  # the input's shape with the reduced axes as 1


def _sum_vjp(g, node):
    X = node._parents[0].data
    return (_spread(g, node._ctx.kept, X.shape, X.dtype),)


class _MeanCtx(NamedTuple):
    """What _mean_vjp needs: g spread back over the reduced axes, times 1/n."""

    kept: tuple  # the input's shape with the reduced axes as 1
    inv_n: np.ndarray  # 1 / (elements averaged), in the input's dtype
    shape: tuple
    dtype: np.dtype


class _MeanPlan(NamedTuple):
    ctx: _MeanCtx
    out_shape: tuple
    exact: float | None  # 1/n as a Python float for a float32 full reduction, else None


_MEAN_PLANS: dict = {}  # (shape, dtype, axis, keepdims) -> _MeanPlan


def mean(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over axis (None = all); integer and bool data average to float32."""
    X = x.data
    if X.dtype.kind not in "fc":
        X = X.astype(np.float32)
    shape, dtype = X.shape, X.dtype
    try:
        key = (shape, dtype, axis, keepdims)
        plan = _MEAN_PLANS.get(key)
    except TypeError:  # an unhashable axis (a list)
        key = plan = None
    if plan is None:  # worked out once per shape: the same shapes recur every step
        axes = _norm_axis(axis, X.ndim)
        kept = _kept_shape(shape, axes)
        inv_n = _scalar(1 / math.prod(shape[a] for a in axes), dtype)  # float32 stays float32
        out_shape = kept if keepdims else tuple(n for i, n in enumerate(shape) if i not in axes)
        # A float32 product is exact in double, so rounding it once gives float32's own multiply,
        # and a Python float skips NumPy's slow 0-d ufunc call (docs/performance.md).
        exact = float(inv_n) if not out_shape and dtype == np.float32 else None
        plan = _MeanPlan(_MeanCtx(kept, inv_n, shape, dtype), out_shape, exact)
        if key is not None:
            if len(_MEAN_PLANS) > 4096:
                _MEAN_PLANS.clear()
            _MEAN_PLANS[key] = plan
    ctx, out_shape, exact = plan
    out = np.empty(out_shape, dtype)  # reduce into an array: a full reduction gives no NumPy scalar
    _add_reduce(X, axis, out=out, keepdims=keepdims)
    if exact is None:
        np.multiply(out, ctx.inv_n, out=out)
    else:
        out[()] = out.item() * exact
    return _unary(out, x, _mean_vjp, "Mean", None, ctx)


def _mean_vjp(g, node):
    c = node._ctx
    return (_spread(g, c.kept, c.shape, c.dtype, c.inv_n),)


def max(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Max over axis (None = all); tied maxima share the gradient equally."""
    X = x.data
    axes = _norm_axis(axis, X.ndim)
    m = X.max(axis=axis, keepdims=True)
    out = m if keepdims else m.reshape(tuple(n for i, n in enumerate(m.shape) if i not in axes))
    return _unary(out, x, _max_vjp, "Max", None, _MaxCtx(m, axes))


class _MaxCtx(NamedTuple):
    kept_max: np.ndarray  # the maxima with the reduced axes kept as 1
    axes: tuple


def _max_vjp(g, node):
    X = node._parents[0].data
    m, axes = node._ctx
    mask = X == m
    share = mask / mask.sum(axis=axes, keepdims=True).astype(X.dtype)
    return (g.reshape(m.shape) * share,)


def reshape(x: Tensor, *shape) -> Tensor:
    """The same data in a new shape (accepts reshape(2, 3) and reshape((2, 3)))."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    old = x.data.shape
    try:
        out = x.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape shape {old} into {shape}") from None
    return _unary(out, x, _reshape_vjp, "Reshape")


def _reshape_vjp(g, node):
    return (g.reshape(node._parents[0].data.shape),)


def transpose(x: Tensor, *axes) -> Tensor:
    """Permute axes (no axes: reverse them, like .T)."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = axes or None
    inv = None if axes is None else tuple(np.argsort(axes))
    return _unary(x.data.transpose(axes), x, _transpose_vjp, "Transpose", None, _TransposeCtx(inv))


class _TransposeCtx(NamedTuple):
    inverse: tuple | None  # the permutation that undoes the forward's (None: reverse again)


def _transpose_vjp(g, node):
    return (g.transpose(node._ctx.inverse),)


def flatten(x: Tensor, start_dim: int = 1) -> Tensor:
    """Merge the axes from start_dim on into one (default keeps the batch axis)."""
    shape = x.data.shape
    return reshape(x, shape[:start_dim] + (-1,))


def _is_basic_index(idx) -> bool:
    """True when idx picks each element at most once (slices, ints, None, Ellipsis, bool masks)."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    for i in idx:
        if i is None or i is Ellipsis or isinstance(i, (slice, int, np.integer)):
            continue
        if isinstance(i, np.ndarray) and i.dtype == np.bool_:
            continue
        return False
    return True


def _plain_index(idx):
    """Index with Tensors replaced by their arrays and lists made arrays."""
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, list):
        return np.asarray(idx)
    if isinstance(idx, tuple):
        return tuple(_plain_index(i) for i in idx)
    return idx


def getitem(x: Tensor, idx) -> Tensor:
    """x[idx]; the gradient scatters back, summing over repeated fancy indices."""
    idx = _plain_index(idx)
    X = x.data
    out = X[idx]
    basic = _is_basic_index(idx)
    return _unary(out, x, _getitem_vjp, "StridedSlice" if basic else "GatherNd", None, _GetitemCtx(idx, basic))


class _GetitemCtx(NamedTuple):
    index: object  # the plain index (no Tensors or lists)
    basic: bool  # each element picked at most once


def _getitem_vjp(g, node):
    idx, basic = node._ctx
    gx = np.zeros_like(node._parents[0].data)
    if basic:
        gx[idx] = g
    else:
        np.add.at(gx, idx, g)  # repeated indices must add up; assignment would keep one
    return (gx,)


def cast(x: Tensor, dtype) -> Tensor:
    """x as another dtype; the gradient flows back only between float dtypes."""
    X = x.data
    out = X.astype(dtype)
    src = X.dtype
    if out.dtype.kind != "f" or src.kind != "f":
        return _result(out, (x,), False, None, "Cast", (x,))  # cut from the tape
    return _unary(out, x, _cast_vjp, "Cast")


def _cast_vjp(g, node):
    return (g.astype(node._parents[0].data.dtype),)


def _compare(ufunc, op):
    """A comparison operator: a bool Tensor, no gradient."""

    def compare(a, b):
        a_data = a.data
        if isinstance(b, Tensor):
            b_data = b.data
        elif type(b) in _PY_NUMBERS:  # as a cached 0-d array of a's float dtype (NEP 50's cast)
            b_data = _scalar(b, a_data.dtype)
        else:
            b_data = b
        return _result(ufunc(a_data, b_data), (a,), False, None, op, (a, b))  # never on the tape

    compare.__name__ = op
    return compare


# -- Tensor methods ---------------------------------------------------------------------------


def _rsub(a, b):
    return sub(b, a)


def _rdiv(a, b):
    return div(b, a)


def _rpow(a, b):
    return pow(b, a)


def _rmatmul(a, b):
    return matmul(b, a)


Tensor.__add__ = add
Tensor.__radd__ = add
Tensor.__sub__ = sub
Tensor.__rsub__ = _rsub
Tensor.__mul__ = mul
Tensor.__rmul__ = mul
Tensor.__truediv__ = div
Tensor.__rtruediv__ = _rdiv
Tensor.__pow__ = pow
Tensor.__rpow__ = _rpow
Tensor.__matmul__ = matmul
Tensor.__rmatmul__ = _rmatmul
Tensor.__neg__ = neg
Tensor.__pos__ = lambda self: self
Tensor.__getitem__ = getitem
Tensor.__lt__ = _compare(np.less, "Less")
Tensor.__le__ = _compare(np.less_equal, "LessEqual")
Tensor.__gt__ = _compare(np.greater, "Greater")
Tensor.__ge__ = _compare(np.greater_equal, "GreaterEqual")
Tensor.__eq__ = _compare(np.equal, "Equal")
Tensor.__ne__ = _compare(np.not_equal, "NotEqual")
Tensor.sum = sum
Tensor.mean = mean
Tensor.max = max
Tensor.reshape = reshape
Tensor.transpose = transpose
Tensor.T = property(lambda self: transpose(self), doc="The tensor with its axes reversed.")
Tensor.flatten = flatten
Tensor.exp = exp
Tensor.log = log
Tensor.sqrt = sqrt
Tensor.abs = abs
Tensor.sigmoid = sigmoid
Tensor.tanh = tanh
Tensor.relu = relu
Tensor.softmax = softmax
Tensor.log_softmax = log_softmax
Tensor.clip = clip
Tensor.astype = cast
Tensor.float = lambda self: cast(self, np.float32)
Tensor.argmax = lambda self, axis=None: Tensor(np.argmax(self.data, axis=axis))
