"""Tensor, the tape and backward: the reverse-mode engine every npnn op builds on.

An op computes its output with NumPy and hands `_unary` / `_binary` / `_nary` its VJP, a
function `vjp(g, node)` mapping the output's gradient to its inputs' gradients (written next
to the forward in npnn/ops.py and npnn/functional.py), plus anything the VJP needs saved
(`node._ctx`). Nothing else is recorded: the graph is the chain of `_parents` tuples, walked
once by `backward` in topological order (newest op first, by a heap; no recursion).
"""

from __future__ import annotations

import gc
import heapq
import itertools

import numpy as np

__all__ = ["Tensor", "Parameter", "no_grad", "enable_grad", "is_grad_enabled", "unbroadcast"]

# Module state read by every op. Plain globals: one LOAD_GLOBAL each, the cheapest check there is.
_grad_enabled = True
_tracer = None  # an npnn.graph.Graph while npnn.trace runs, else None
_scope = ""  # current name scope prefix, "Layer1/" inside name_scope("Layer1")

_FLOAT_KINDS = "f"


def is_grad_enabled() -> bool:
    """Whether ops executed now record their backward."""
    return _grad_enabled


class no_grad:
    """Context manager (and decorator) under which ops record nothing for backward."""

    __slots__ = ("_prev",)

    def __enter__(self):
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev
        return False

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapped.__name__ = getattr(fn, "__name__", "wrapped")
        wrapped.__doc__ = getattr(fn, "__doc__", None)
        return wrapped


class enable_grad(no_grad):
    """Context manager that turns recording back on inside a no_grad block."""

    __slots__ = ()

    def __enter__(self):
        global _grad_enabled
        self._prev = _grad_enabled
        _grad_enabled = True
        return self


def _as_array(data, dtype=None) -> np.ndarray:
    """ndarray for Tensor data: Python numbers and lists become float32; ndarrays keep dtype."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, np.generic):
        return np.asarray(data)
    arr = np.asarray(data)
    if arr.dtype.kind in "iuf":  # Python ints/floats, lists of them: float32 unless asked
        arr = arr.astype(np.float32)
    return arr


class Tensor:
    """An ndarray with an optional gradient and the op that produced it (float32 by default)."""

    __slots__ = ("data", "grad", "requires_grad", "name", "_parents", "_backward", "_ctx", "_seq", "__weakref__")
    __array_ufunc__ = None  # ndarray <op> Tensor defers to Tensor's reflected operators
    __hash__ = object.__hash__  # __eq__ is elementwise; identity hashing keeps sets/dicts working

    def __init__(self, data, requires_grad: bool = False, name: str | None = None, dtype=None):
        arr = _as_array(data, dtype)
        if requires_grad and arr.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(f"requires_grad=True needs floating-point data, got dtype {arr.dtype}")
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self.name = None if name is None else _scope + name
        self._parents = ()
        self._backward = None
        self._ctx = None

    # -- properties -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """The data's shape."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        """The data's dtype."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self.data.ndim

    @property
    def size(self) -> int:
        """Number of elements."""
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded op (their .grad is kept)."""
        return self._backward is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self.name:
            extra += f", name={self.name!r}"
        return f"Tensor({np.array2string(self.data, separator=', ', prefix='Tensor(')}{extra})"

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.data)

    def numpy(self) -> np.ndarray:
        """The data as an ndarray (shared, not copied)."""
        return self.data

    def item(self) -> float:
        """The single value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a one-element tensor, got shape {self.data.shape}")
        return self.data.item()

    def detach(self) -> "Tensor":
        """A new leaf sharing this data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Set requires_grad in place (leaves only); return self."""
        if flag and self.data.dtype.kind not in _FLOAT_KINDS:
            raise TypeError(f"requires_grad=True needs floating-point data, got dtype {self.data.dtype}")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self) -> None:
        """Forget the accumulated gradient."""
        self.grad = None

    # -- backward ---------------------------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Accumulate d(self)/d(leaf) * grad into every leaf's .grad that requires grad."""
        if _tracer is not None:  # npnn.trace: the optimizer's step draws the gradients node
            return _tracer.record_backward(self)
        if not self.requires_grad:
            raise RuntimeError(
                "backward(): this tensor does not require grad (no input had requires_grad=True, "
                "or it was computed under no_grad())"
            )
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward(): grad can be implicit only for a one-element tensor, got shape "
                    f"{self.data.shape}; pass grad= of that shape"
                )
            grad = np.empty(self.data.shape, self.data.dtype)
            grad.fill(1)  # np.ones' Python wrapper costs more than the array
            owned = True
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.data.dtype)
            if grad.shape != self.data.shape:
                raise ValueError(f"backward(): grad has shape {grad.shape}, expected {self.data.shape}")
            owned = False  # the caller's array: never written into
        # The walk allocates small tuples by the thousand and frees them all, creating no
        # reference cycles: the cyclic GC would only rescan them, so it pauses meanwhile.
        gc_was_on = gc.isenabled()
        if gc_was_on:
            gc.disable()
        try:
            _run_backward(self, grad, owned)
        finally:
            if gc_was_on:
                gc.enable()

    # Operators and methods (__add__, sum, reshape, ...) are attached by npnn.ops.


class Parameter(Tensor):
    """A Tensor that is a model's learnable weight: requires_grad=True, float data."""

    __slots__ = ()

    def __init__(self, data, name: str | None = None, requires_grad: bool = True):
        arr = _as_array(data)
        if arr.dtype.kind not in _FLOAT_KINDS:
            arr = arr.astype(np.float32)
        super().__init__(arr, requires_grad=requires_grad, name=name)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor") :]


def _is_fresh(share: np.ndarray, given: np.ndarray) -> bool:
    """The ownership rule: a VJP's output that is a new array (no base) and not the gradient the
    VJP was given belongs to the engine, which may add into it or hand it to a leaf uncopied."""
    return share.base is None and share is not given


def _write_leaf(leaf: Tensor, share: np.ndarray, fresh: bool) -> None:
    """Add share into leaf.grad like PyTorch's AccumulateGrad: keep it if fresh, else a copy."""
    dtype = leaf.data.dtype
    if share.dtype is not dtype and share.dtype != dtype:  # mixed precision: .grad keeps the leaf's dtype
        share = share.astype(dtype)
        fresh = True
    buf = leaf.grad
    if buf is None:
        leaf.grad = share if fresh else share.copy()
        return
    try:
        buf += share  # the leaf's own buffer
    except ValueError:  # a read-only or odd-shaped .grad someone assigned: replace it
        leaf.grad = np.asarray(buf + share)


def _add_outgrad(prev, share, fresh: bool) -> tuple:
    """HIPS autograd's add_outgrads: (sum, owned) of a node's gradient so far and one more share.

    The first share is kept by reference; a second one allocates a sum the engine owns, and
    later ones are added into that buffer in place, never into an array received from a VJP.
    """
    if prev is None or prev[0] is None:
        return share, fresh
    if share is None:
        return prev
    total, owned = prev
    if owned:
        total += share  # same_kind casting: a float64 share adds into a float32 buffer
        return prev
    total = total + share
    return (total if type(total) is _ndarray else np.array(total)), True


def _run_backward(root: Tensor, grad: np.ndarray, owned: bool) -> None:
    """Run every VJP reachable from root once, newest node first, and fill the leaves' .grad.

    Order: every op output carries a creation number (`_seq`), and an op's inputs always exist
    before it, so running the VJPs from the newest node to the oldest is a topological order.
    A heap of the nodes reached so far pops the newest: when a node comes out, every reachable
    node newer than it (all its consumers) has run, since the first unrun node on a path from
    root to such a consumer would be in the heap and newer still. One pass, no counting walk.
    Sums of shares: _add_outgrad; leaves: _write_leaf; who may write into what: _is_fresh.
    """
    if root._backward is None:
        _write_leaf(root, grad, owned)
        return
    grads = {id(root): (grad, owned)}  # node -> (gradient so far, owned by the engine)
    heap = [(-root._seq, root)]  # creation numbers are unique: Tensors are never compared
    pop = heapq.heappop
    push = heapq.heappush
    while heap:
        node = pop(heap)[1]
        g = grads.pop(id(node))[0]
        parents = node._parents
        for p, share in zip(parents, node._backward(g, node) if g is not None else (None,) * len(parents)):
            if not p.requires_grad:
                continue
            fresh = False
            if share is not None:
                if type(share) is not _ndarray:  # a NumPy scalar from a 0-d VJP
                    share = np.array(share)
                fresh = _is_fresh(share, g)
            if p._backward is None:
                if share is not None:
                    _write_leaf(p, share, fresh)
                continue
            key = id(p)
            prev = grads.get(key)
            if prev is None:  # first reached: schedule it
                push(heap, (-p._seq, p))
            grads[key] = _add_outgrad(prev, share, fresh)


_UNBROADCAST_PLANS: dict = {}  # (grad shape, input shape) -> (axes to sum, keepdims, reshape)
_add_reduce = np.add.reduce


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum g over the axes broadcasting added or stretched so that it has `shape`."""
    if g.shape == shape:
        return g
    if not shape:  # a 0-d input: a 0-d array, not the NumPy scalar a full reduction gives
        return np.array(_add_reduce(g, None))
    if g.shape[1:] == shape:  # a bias added to a batch: sum over the first axis only
        return _add_reduce(g, 0)
    key = (g.shape, shape)
    plan = _UNBROADCAST_PLANS.get(key)
    if plan is None:  # worked out once per pair of shapes: the same shapes recur every step
        lead = g.ndim - len(shape)
        stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
        axes = tuple(range(lead)) + stretched
        # Only leading axes (a bias): reducing them without keepdims gives `shape` directly.
        plan = _UNBROADCAST_PLANS[key] = (axes, bool(stretched), bool(stretched and lead))
    axes, keepdims, reshape = plan
    r = _add_reduce(g, axes, keepdims=keepdims)
    return r.reshape(shape) if reshape else r


_new = object.__new__
_next_seq = itertools.count(1).__next__  # atomic under the GIL: unique across threads
_ndarray = np.ndarray


def _result(data: np.ndarray, parents: tuple, needs_grad: bool, backward, op: str, inputs, ctx=None) -> Tensor:
    """The output Tensor of an op; it joins the tape only if an input needs a gradient."""
    if type(data) is not _ndarray:  # NumPy ops on 0-d arrays return scalars: keep arrays
        data = np.asarray(data)
    t = _new(Tensor)
    t.data = data
    t.grad = None
    t.name = None
    if needs_grad and _grad_enabled:
        t.requires_grad = True
        t._parents = parents
        t._backward = backward
        t._ctx = ctx
        t._seq = _next_seq()  # creation order: backward's topological order
    else:
        t.requires_grad = False
        t._parents = ()
        t._backward = None
        t._ctx = None
    if _tracer is not None:
        _tracer.record(op, inputs or parents, t)
    return t


def _unary(data: np.ndarray, x: Tensor, backward, op: str, inputs=None, ctx=None) -> Tensor:
    """Wrap an op's output with one tensor input; `inputs` lists constants too, for tracing."""
    return _result(data, (x,), x.requires_grad, backward, op, inputs, ctx)


def _binary(data: np.ndarray, a: Tensor, b: Tensor, backward, op: str, ctx=None) -> Tensor:
    """Wrap an op's output with two tensor inputs; backward returns (grad_a, grad_b)."""
    return _result(data, (a, b), a.requires_grad or b.requires_grad, backward, op, None, ctx)


def _nary(data: np.ndarray, parents: tuple, backward, op: str, inputs=None, ctx=None) -> Tensor:
    """Wrap an op's output with any number of tensor inputs; backward returns one grad each."""
    return _result(data, parents, any(p.requires_grad for p in parents), backward, op, inputs, ctx)


def _const(value, like_dtype=None) -> Tensor:
    """A no-grad leaf for a non-Tensor operand; float data follows the other operand's dtype."""
    arr = np.asarray(value)
    if (
        like_dtype is not None
        and arr.dtype != like_dtype
        and arr.dtype.kind in "iufb"
        and np.dtype(like_dtype).kind == "f"
    ):
        arr = arr.astype(like_dtype)
    elif arr.dtype == np.float64 and not isinstance(value, np.ndarray):
        arr = arr.astype(np.float32)
    t = _new(Tensor)
    t.data = arr
    t.grad = None
    t.name = None
    t.requires_grad = False
    t._parents = ()
    t._backward = None
    t._ctx = None
    return t
