"""Optimizers with PyTorch's update rules, updating parameters in place in float32.

Each optimizer is a ``_prepare`` (one parameter's arrays and this step's Python-float
hyperparameters, as two named tuples) and an ``_update`` (its update rule on those arrays
through ``out=``, into its own state and scratch buffers). A step thus allocates nothing and
never upcasts: Python floats keep float32 in NumPy 2. Large parameters are split in two halves
updated by two threads (npnn.parallel). Adam's groups of small parameters (XOR's)
run the same ``_adam_direction`` once over flat buffers (``Adam._step_fused``), bit-identical
to the per-parameter path. ``zero_grad()`` sets
``.grad`` to None (PyTorch's default): the next backward then hands its first gradient over
without a memset or an add.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

from npnn import parallel
from npnn import tensor as _t

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop"]

_FUSE_MAX = 1 << 12  # elements: groups of parameters up to this size update as one flat array
_scratch = threading.local()  # per-thread temporaries, grown on demand


def _temps(n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Two scratch arrays of n elements owned by the calling thread."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < 2 * n or buf.dtype != dtype:
        size = 2 * max(n, 0 if buf is None or buf.dtype != dtype else buf.size // 2)
        buf = _scratch.buf = np.empty(size, dtype=dtype)
    return buf[:n], buf[n : 2 * n]


def _run_all(tasks: list) -> None:
    """Run update(arrays, hyper, tmp, tmp2) for each task with this thread's scratch."""
    for update, arrays, hyper in tasks:
        p = arrays.p
        tmp, tmp2 = _temps(p.size, p.dtype)
        update(arrays, hyper, tmp.reshape(p.shape), tmp2.reshape(p.shape))


def _execute(tasks: list) -> None:
    """Run the tasks; halves of large contiguous parameters go to a second thread."""
    if parallel.NUM_THREADS < 2:
        _run_all(tasks)
        return
    mine, theirs = [], []
    for update, arrays, hyper in tasks:
        n = arrays.p.size
        if n < parallel.MIN_SPLIT or not all(a is None or a.flags.c_contiguous for a in arrays):
            mine.append((update, arrays, hyper))
            continue
        h = n // 2
        flat = [None if a is None else a.reshape(-1) for a in arrays]
        mine.append((update, arrays._make(None if a is None else a[:h] for a in flat), hyper))
        theirs.append((update, arrays._make(None if a is None else a[h:] for a in flat), hyper))
    if not theirs:
        _run_all(mine)
        return
    parallel.both(lambda: _run_all(mine), lambda: _run_all(theirs))


def _check(name: str, value, low: float = 0.0, high: float | None = None, closed_high: bool = False):
    """Raise ValueError naming the argument unless low <= value (< high, or <= with closed_high)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    ok = v >= low and (high is None or (v <= high if closed_high else v < high))
    if not ok or math.isnan(v):
        bound = f"in [{low}, {high}{']' if closed_high else ')'}" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected a value {bound}, got {value!r}")
    return v


def _add_decay(g: np.ndarray, p: np.ndarray, weight_decay: float, out: np.ndarray) -> np.ndarray:
    """g + weight_decay * p into out (PyTorch's coupled L2 decay), or g itself when 0."""
    if not weight_decay:
        return g
    np.multiply(p, weight_decay, out=out)
    out += g
    return out


def _adam_scales(lr: float, beta1: float, beta2: float, t: int) -> tuple[float, float]:
    """(step, root) of Adam's update p -= step * m / (sqrt(s) + eps * root) at step t.

    PyTorch: p -= lr / bc1 * exp_avg / (sqrt(exp_avg_sq) / sqrt(bc2) + eps) with
    exp_avg = (1 - beta1) m, exp_avg_sq = (1 - beta2) s, bc = 1 - beta ** t.
    """
    root = math.sqrt(1.0 - beta2**t) / math.sqrt(1.0 - beta2)
    return lr * (1.0 - beta1) * root / (1.0 - beta1**t), root


class Optimizer:
    """Base class: parameter groups, per-parameter state, zero_grad() and step()."""

    def __init__(self, params, defaults: dict):
        if hasattr(params, "data") and not isinstance(params, (list, tuple, dict)):
            raise TypeError("params: expected an iterable of Parameters or of dicts, got a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("params: optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.scope = _t._scope[:-1]  # the name scope it was built in: its nodes' box in a traced graph
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}  # id(param) -> state arrays
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a dict with "params" and optional per-group hyperparameters."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"param_group: expected a dict with a 'params' key, got {type(group).__name__}")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"param_group: unknown options {sorted(unknown)}; expected {sorted(self.defaults)}")
        full = dict(self.defaults)
        full.update(group)
        full["params"] = list(group["params"])
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in full["params"]:
            data = getattr(p, "data", None)
            if not isinstance(data, np.ndarray) or data.dtype.kind != "f":
                raise TypeError(f"params: expected Parameters with floating .data, got {type(p).__name__}")
            if id(p) in seen:
                raise ValueError("params: a parameter appears in more than one group")
            seen.add(id(p))
        self._validate(full)
        self.param_groups.append(full)

    def _validate(self, group: dict) -> None:
        """Check one group's hyperparameters (ValueError naming the argument)."""
        _check("lr", group["lr"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget gradients: set to None (default, fastest) or zero them in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        if _t._tracer is not None:  # npnn.trace draws the step without taking it, as TF1's minimize
            return _t._tracer.record_step(self)
        rest = [group for group in self.param_groups if not self._step_fused(group)]
        if rest:
            self._step_groups(rest)

    def _step_fused(self, group: dict) -> bool:
        """Update a whole group at once if this optimizer can (Adam's small groups); else False."""
        return False

    def _step_groups(self, groups: list) -> None:
        """The per-parameter update (kernel per parameter, large ones split across threads)."""
        tasks = []
        for group in groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.shape != p.data.shape:
                    raise ValueError(f"grad: shape {g.shape} does not match parameter shape {p.data.shape}")
                state = self.state.get(id(p))
                if state is None:
                    state = self.state[id(p)] = {"step": 0}
                state["step"] += 1
                arrays, hyper = self._prepare(p.data, g, state, group)
                tasks.append((self._update, arrays, hyper))
        _execute(tasks)

    def _prepare(self, p: np.ndarray, g: np.ndarray, state: dict, group: dict) -> tuple:
        """(arrays, hyper): named tuples of one parameter's arrays (p, g, state) and this step's floats."""
        raise NotImplementedError

    @staticmethod
    def _update(arrays: NamedTuple, hyper: NamedTuple, tmp: np.ndarray, tmp2: np.ndarray) -> None:
        """The update rule in place on arrays (or halves of them), tmp and tmp2 as scratch."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """{"state": {index: {name: array or int}}, "param_groups": [hyperparameters + param indices]}."""
        index = {}
        groups = []
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                g["params"].append(index[id(p)])
            groups.append(g)
        state = {
            index[k]: {n: (a.copy() if isinstance(a, np.ndarray) else a) for n, a in s.items()}
            for k, s in self.state.items()
            if k in index
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and state saved by state_dict() for the same parameters (all checked first)."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict: has {len(groups)} param groups, optimizer has {len(self.param_groups)}")
        params, updates = [], []
        for mine, saved in zip(self.param_groups, groups):
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError(
                    f"state_dict: a group has {len(saved['params'])} params, optimizer's has {len(mine['params'])}"
                )
            update = {k: v for k, v in saved.items() if k != "params"}
            unknown = set(update) - set(self.defaults)
            if unknown:
                raise ValueError(f"state_dict: unknown options {sorted(unknown)}; expected {sorted(self.defaults)}")
            self._validate(dict(mine, **update))
            updates.append((mine, update))
            params.extend(mine["params"])
        state = {}
        for i, saved in state_dict["state"].items():
            if not (isinstance(i, (int, np.integer)) and 0 <= i < len(params)):
                raise ValueError(f"state_dict: state for parameter {i!r}, expected an index below {len(params)}")
            p = params[i]
            restored = {}
            for name, value in saved.items():
                if isinstance(value, np.ndarray):
                    if value.shape != p.data.shape or value.dtype.kind not in "biuf":
                        raise ValueError(
                            f"state_dict: state {i}.{name} has shape {value.shape} and dtype "
                            f"{value.dtype}, expected numbers of the parameter's shape {p.data.shape}"
                        )
                    value = value.astype(p.data.dtype)  # a copy: never shares the caller's arrays
                elif name == "step":
                    if not (isinstance(value, (int, np.integer)) and value >= 0):
                        raise ValueError(f"state_dict: state {i}.step is {value!r}, expected an int >= 0")
                    value = int(value)
                restored[name] = value
            state[id(p)] = restored
        for mine, update in updates:  # only after every check passed: no half-loaded optimizer
            mine.update(update)
        self.state = state


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__(
            params, dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
        )

    def _validate(self, group: dict) -> None:
        _check("lr", group["lr"])
        _check("momentum", group["momentum"])
        _check("dampening", group["dampening"])
        _check("weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"nesterov: needs momentum > 0 and dampening = 0, "
                f"got momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _prepare(self, p, g, state, group):
        momentum = float(group["momentum"])
        buf = None
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.zeros_like(p)
        return _SGDArrays(p, g, buf), _SGDHyper(
            float(group["lr"]),
            momentum,
            float(group["dampening"]),
            bool(group["nesterov"]),
            float(group["weight_decay"]),
            state["step"] == 1,
        )

    @staticmethod
    def _update(a, h, tmp, tmp2):
        """buf = momentum * buf + (1 - dampening) * g;  p -= lr * (g + momentum * buf if nesterov else buf)."""
        p, buf = a.p, a.momentum_buffer
        g = _add_decay(a.g, p, h.weight_decay, tmp2)
        if buf is not None:
            if h.first:  # PyTorch starts the buffer at the first gradient, undamped
                np.copyto(buf, g)
            else:
                buf *= h.momentum
                if h.dampening:
                    np.multiply(g, 1.0 - h.dampening, out=tmp)
                    buf += tmp
                else:
                    buf += g
            if h.nesterov:
                np.multiply(buf, h.momentum, out=tmp)
                tmp += g
                g = tmp
            else:
                g = buf
        np.multiply(g, -h.lr, out=tmp)
        p += tmp


class _SGDArrays(NamedTuple):
    p: np.ndarray
    g: np.ndarray
    momentum_buffer: np.ndarray | None


class _SGDHyper(NamedTuple):
    lr: float
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float
    first: bool  # the first step: the momentum buffer starts at the gradient


class Adam(Optimizer):
    """Adam (Kingma & Ba) as torch.optim.Adam: L2 weight decay added to the gradient.

    State: ``m = exp_avg / (1 - beta1)`` and ``s = exp_avg_sq / (1 - beta2)``, PyTorch's
    averages without their (1 - beta) factors, which fold into the step size and eps with the
    bias corrections. That saves two of twelve passes over each parameter per step.
    """

    _decoupled = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ):
        self._plans = {}  # id(param group) -> _FusedPlan
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad))

    def _validate(self, group: dict) -> None:
        _check("lr", group["lr"])
        if len(group["betas"]) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {group['betas']!r}")
        _check("betas[0]", group["betas"][0], 0.0, 1.0)
        _check("betas[1]", group["betas"][1], 0.0, 1.0)
        _check("eps", group["eps"])
        _check("weight_decay", group["weight_decay"])

    def _prepare(self, p, g, state, group):
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        if "m" not in state:
            state["m"] = np.zeros_like(p)
            state["s"] = np.zeros_like(p)
            if group["amsgrad"]:
                state["s_max"] = np.zeros_like(p)
        step_size, root = _adam_scales(lr, beta1, beta2, state["step"])
        return _AdamArrays(p, g, state["m"], state["s"], state.get("s_max")), _AdamHyper(
            beta1,
            beta2,
            eps * root,
            step_size,
            0.0 if self._decoupled else wd,  # Adam: L2 decay added to the gradient
            1.0 - lr * wd if self._decoupled else 1.0,
        )  # AdamW: the weights decay

    @staticmethod
    def _update(a, h, tmp, tmp2):
        """p *= decay;  g += weight_decay * p;  p -= _adam_direction(g)."""
        p = a.p
        if h.decay != 1.0:
            p *= h.decay
        g = _add_decay(a.g, p, h.weight_decay, tmp2)
        p -= _adam_direction(g, a.m, a.s, a.s_max, h, tmp)

    def _step_fused(self, group: dict) -> bool:
        """Update a group of small parameters as one flat array; False if the group does not qualify.

        Small parameters (XOR's 2x2 weights) spend their time in the ~10 NumPy calls per
        parameter, not in arithmetic: here the moments live in one flat buffer (the state's
        "m" and "s" are views into it), the gradients are gathered into one, and
        _adam_direction runs once; each parameter then subtracts its slice. Elementwise float
        ops are correctly rounded, so the result is bit-identical to the per-parameter path.
        """
        if group["amsgrad"] or group["weight_decay"]:
            return False
        plan = self._plans.get(id(group))
        params = group["params"]
        if plan is None or plan.params is not params or plan.state is not self.state:
            if plan is not None and plan.params is params and plan.state is None:
                return False  # known not to qualify
            if any(p.grad is None for p in params):
                return False  # parameters without a gradient get no state: the per-parameter path
            plan = self._plan(group)
            if plan is None:
                return False
        if len(plan.entries) != len(params):
            return False
        t = None
        dtype = plan.direction.dtype
        for q, (p, st, shape, m, s, _, g_slot) in zip(params, plan.entries):  # _FusedEntry's fields
            g = p.grad
            if (
                q is not p
                or g is None
                or g.shape != shape
                or p.data.shape != shape
                or g.dtype is not dtype
                or st["m"] is not m
                or st["s"] is not s
            ):
                return False
            if t is None:
                t = st["step"]
            elif st["step"] != t:
                return False
            if g is not g_slot:  # npnn.plan's replay writes gradients into the slots themselves
                g_slot[...] = g  # gathered into the flat buffer (cheaper than one concatenate)
        t += 1
        for e in plan.entries:
            e.state["step"] = t
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        step_size, root = _adam_scales(float(group["lr"]), beta1, beta2, t)
        # The hyperparameters as 0-d arrays of the parameters' dtype: a NumPy op converts a
        # Python float to that dtype (NEP 50) anyway, the same rounding, but takes twice as long.
        h = plan.hyper
        h.beta1[()] = beta1
        h.beta2[()] = beta2
        h.eps[()] = float(group["eps"]) * root
        h.step_size[()] = step_size
        _adam_direction(plan.g, plan.m, plan.s, None, h, plan.direction)
        for e in plan.entries:
            data = e.param.data
            data -= e.direction
        return True

    def _plan(self, group: dict):
        """Flat buffers and per-parameter views for _step_fused (None when the group is not all small)."""
        params = group["params"]
        self._plans[id(group)] = _FusedPlan(params, None)  # "does not qualify" unless built below
        sizes = [p.data.size for p in params]
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) != 1 or sum(sizes) > _FUSE_MAX:
            return None
        dtype = dtypes.pop()
        n = sum(sizes)
        m, s, direction, gflat = (np.zeros(n, dtype) for _ in range(4))
        entries = []
        off = 0
        for p, k in zip(params, sizes):
            shape = p.data.shape
            st = self.state.get(id(p))
            if st is None:
                st = self.state[id(p)] = {"step": 0}
            view = [a[off : off + k].reshape(shape) for a in (m, s, direction, gflat)]
            if "m" in st:  # moments from earlier steps or load_state_dict: move them in
                view[0][...] = st["m"]
                view[1][...] = st["s"]
            st["m"], st["s"] = view[0], view[1]
            entries.append(_FusedEntry(p, st, shape, *view))
            off += k
        hyper = _AdamHyper(*(np.zeros((), dtype) for _ in range(4)), weight_decay=0.0, decay=1.0)
        plan = _FusedPlan(params, self.state, tuple(entries), gflat, m, s, direction, hyper)
        self._plans[id(group)] = plan
        return plan


def _adam_direction(g, m, s, s_max, h, out: np.ndarray) -> np.ndarray:
    """m = beta1 m + g;  s = beta2 s + g*g (s_max = max(s_max, s));  out = step_size m / (sqrt(s) + eps)."""
    m *= h.beta1
    m += g
    np.multiply(g, g, out=out)
    s *= h.beta2
    s += out
    if s_max is not None:  # amsgrad
        np.maximum(s_max, s, out=s_max)
        s = s_max
    np.sqrt(s, out=out)
    out += h.eps
    np.divide(m, out, out=out)
    out *= h.step_size
    return out


class _AdamArrays(NamedTuple):
    p: np.ndarray
    g: np.ndarray
    m: np.ndarray  # exp_avg / (1 - beta1)
    s: np.ndarray  # exp_avg_sq / (1 - beta2)
    s_max: np.ndarray | None  # amsgrad's running maximum of s


class _AdamHyper(NamedTuple):
    beta1: float
    beta2: float
    eps: float  # eps folded with the bias correction (see _adam_scales)
    step_size: float  # lr folded with the bias corrections and (1 - beta1)
    weight_decay: float  # Adam's L2 term (0 for AdamW)
    decay: float  # AdamW's weight factor 1 - lr * weight_decay (1 for Adam)


class _FusedEntry(NamedTuple):
    """One parameter of a fused group and its views into the flat buffers."""

    param: _t.Tensor
    state: dict
    shape: tuple
    m: np.ndarray
    s: np.ndarray
    direction: np.ndarray
    g: np.ndarray


class _FusedPlan(NamedTuple):
    """Flat buffers of a group of small parameters (state None: the group does not qualify)."""

    params: list
    state: dict | None
    entries: tuple = ()
    g: np.ndarray | None = None
    m: np.ndarray | None = None
    s: np.ndarray | None = None
    direction: np.ndarray | None = None
    hyper: _AdamHyper | None = None


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter) as torch.optim.AdamW: decoupled weight decay."""

    _decoupled = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop (alpha, eps outside the sqrt, momentum, centered)."""

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ):
        super().__init__(
            params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered)
        )

    def _validate(self, group: dict) -> None:
        _check("lr", group["lr"])
        _check("alpha", group["alpha"], 0.0, 1.0, closed_high=True)
        _check("eps", group["eps"])
        _check("weight_decay", group["weight_decay"])
        _check("momentum", group["momentum"])

    def _prepare(self, p, g, state, group):
        momentum = float(group["momentum"])
        if "square_avg" not in state:
            state["square_avg"] = np.zeros_like(p)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(p)
            if momentum:
                state["momentum_buffer"] = np.zeros_like(p)
        return _RMSpropArrays(
            p, g, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer")
        ), _RMSpropHyper(
            float(group["lr"]), float(group["alpha"]), float(group["eps"]), float(group["weight_decay"]), momentum
        )

    @staticmethod
    def _update(a, h, tmp, tmp2):
        """sq = alpha sq + (1 - alpha) g*g;  d = g / (sqrt(sq - grad_avg**2 if centered else sq) + eps);
        p -= lr * (buf = momentum buf + d if momentum else d)."""
        p, sq, ga, buf = a.p, a.square_avg, a.grad_avg, a.momentum_buffer
        g = _add_decay(a.g, p, h.weight_decay, tmp2)
        np.multiply(g, 1.0 - h.alpha, out=tmp)
        tmp *= g
        sq *= h.alpha
        sq += tmp
        if ga is not None:  # centered: subtract the squared mean gradient
            np.subtract(g, ga, out=tmp)  # grad_avg += (1 - alpha) * (g - grad_avg), PyTorch's lerp
            tmp *= 1.0 - h.alpha
            ga += tmp
            np.multiply(ga, ga, out=tmp)
            np.subtract(sq, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(sq, out=tmp)
        tmp += h.eps
        np.divide(g, tmp, out=tmp)
        if buf is not None:
            buf *= h.momentum
            buf += tmp
            np.multiply(buf, -h.lr, out=tmp)
        else:
            tmp *= -h.lr
        p += tmp


class _RMSpropArrays(NamedTuple):
    p: np.ndarray
    g: np.ndarray
    square_avg: np.ndarray
    grad_avg: np.ndarray | None  # centered only
    momentum_buffer: np.ndarray | None  # momentum > 0 only


class _RMSpropHyper(NamedTuple):
    lr: float
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
