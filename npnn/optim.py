"""Optimizers with PyTorch's update rules, updating parameters in place in float32.

Each optimizer is a ``_prepare`` (per-step Python-float scalars and the state arrays of one
parameter) and a ``_kernel`` (the update on flat arrays through ``out=``, into its own state
and scratch buffers). A step thus allocates nothing and never upcasts: Python floats keep
float32 in NumPy 2. Large parameters are split in two halves updated by two threads
(``NUM_THREADS``; NumPy's ufunc loops release the GIL), the way PyTorch's CPU kernels use
their intra-op threads. Adam's groups of small parameters (XOR's) instead update as one flat
array (``Adam._step_fused``), bit-identical to the per-parameter kernel. ``zero_grad()`` sets
``.grad`` to None (PyTorch's default): the next backward then hands its first gradient over
without a memset or an add.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from npnn import tensor as _t

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "NUM_THREADS"]

# Threads per step, at most the cores this process may use (mpiexec binds each rank to one);
# set npnn.optim.NUM_THREADS = 1 to disable.
NUM_THREADS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
_MIN_SPLIT = 1 << 16  # elements: below this a thread hand-off costs more than it saves
_FUSE_MAX = 1 << 12  # elements: groups of parameters up to this size update as one flat array
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child inherits _pool without its thread: it makes its own
_scratch = threading.local()  # per-thread temporaries, grown on demand


def _temps(n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Two scratch arrays of n elements owned by the calling thread."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.size < 2 * n or buf.dtype != dtype:
        size = 2 * max(n, 0 if buf is None or buf.dtype != dtype else buf.size // 2)
        buf = _scratch.buf = np.empty(size, dtype=dtype)
    return buf[:n], buf[n:2 * n]


def _run_all(tasks: list) -> None:
    """Run kernel(*arrays, tmp, tmp2, *scalars) for each task with this thread's scratch."""
    for kernel, arrays, scalars in tasks:
        p = arrays[0]
        tmp, tmp2 = _temps(p.size, p.dtype)
        kernel(*arrays, tmp.reshape(p.shape), tmp2.reshape(p.shape), *scalars)


def _execute(tasks: list) -> None:
    """Run the tasks; halves of large contiguous parameters go to a second thread."""
    global _pool, _pool_pid
    if NUM_THREADS < 2:
        _run_all(tasks)
        return
    mine, theirs = [], []
    for kernel, arrays, scalars in tasks:
        n = arrays[0].size
        if n < _MIN_SPLIT or not all(a is None or a.flags.c_contiguous for a in arrays):
            mine.append((kernel, arrays, scalars))
            continue
        h = n // 2
        flat = [None if a is None else a.reshape(-1) for a in arrays]
        mine.append((kernel, [None if a is None else a[:h] for a in flat], scalars))
        theirs.append((kernel, [None if a is None else a[h:] for a in flat], scalars))
    if not theirs:
        _run_all(mine)
        return
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npnn-optim")
        _pool_pid = os.getpid()
    future = _pool.submit(_run_all, theirs)
    try:
        _run_all(mine)
    finally:
        future.result()


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
    root = math.sqrt(1.0 - beta2 ** t) / math.sqrt(1.0 - beta2)
    return lr * (1.0 - beta1) * root / (1.0 - beta1 ** t), root


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
        self._step_groups(self.param_groups)

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
                arrays, scalars = self._prepare(p.data, state, group)
                tasks.append((self._kernel, [p.data, g, *arrays], scalars))
        _execute(tasks)

    def _prepare(self, data: np.ndarray, state: dict, group: dict) -> tuple[list, tuple]:
        """(state arrays, Python-float scalars) for one parameter's update this step."""
        raise NotImplementedError

    @staticmethod
    def _kernel(p, g, *arrays_and_scalars) -> None:
        """The in-place update on (flat) arrays: p, g, state arrays, tmp, tmp2, scalars."""
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
        state = {index[k]: {n: (a.copy() if isinstance(a, np.ndarray) else a) for n, a in s.items()}
                 for k, s in self.state.items() if k in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and state saved by state_dict() for the same parameters; all checked, then assigned."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict: has {len(groups)} param groups, optimizer has {len(self.param_groups)}")
        params, updates = [], []
        for mine, saved in zip(self.param_groups, groups):
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError(f"state_dict: a group has {len(saved['params'])} params, "
                                 f"optimizer's has {len(mine['params'])}")
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
                        raise ValueError(f"state_dict: state {i}.{name} has shape {value.shape} and dtype "
                                         f"{value.dtype}, expected numbers of the parameter's shape {p.data.shape}")
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

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay))

    def _validate(self, group: dict) -> None:
        _check("lr", group["lr"])
        _check("momentum", group["momentum"])
        _check("dampening", group["dampening"])
        _check("weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"nesterov: needs momentum > 0 and dampening = 0, "
                             f"got momentum={group['momentum']}, dampening={group['dampening']}")

    def _prepare(self, data, state, group):
        momentum = float(group["momentum"])
        buf = None
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.zeros_like(data)
        first = state["step"] == 1
        return [buf], (float(group["lr"]), momentum, float(group["dampening"]), bool(group["nesterov"]),
                       float(group["weight_decay"]), first)

    @staticmethod
    def _kernel(p, g, buf, tmp, tmp2, lr, momentum, dampening, nesterov, weight_decay, first):
        g = _add_decay(g, p, weight_decay, tmp2)
        if buf is not None:
            if first:  # PyTorch starts the buffer at the first gradient, undamped
                np.copyto(buf, g)
            else:
                buf *= momentum
                if dampening:
                    np.multiply(g, 1.0 - dampening, out=tmp)
                    buf += tmp
                else:
                    buf += g
            if nesterov:
                np.multiply(buf, momentum, out=tmp)
                tmp += g
                g = tmp
            else:
                g = buf
        np.multiply(g, -lr, out=tmp)
        p += tmp


class Adam(Optimizer):
    """Adam (Kingma & Ba) as torch.optim.Adam: L2 weight decay added to the gradient.

    State: ``m = exp_avg / (1 - beta1)`` and ``s = exp_avg_sq / (1 - beta2)``, PyTorch's
    averages without their (1 - beta) factors, which fold into the step size and eps with the
    bias corrections. That saves two of twelve passes over each parameter per step.
    """

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False):
        self._plans = {}  # id(param group) -> flat buffers of _step_fused, or (params, None)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def _validate(self, group: dict) -> None:
        _check("lr", group["lr"])
        if len(group["betas"]) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {group['betas']!r}")
        _check("betas[0]", group["betas"][0], 0.0, 1.0)
        _check("betas[1]", group["betas"][1], 0.0, 1.0)
        _check("eps", group["eps"])
        _check("weight_decay", group["weight_decay"])

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        if _t._tracer is not None:  # npnn.trace draws the step without taking it, as TF1's minimize
            return _t._tracer.record_step(self)
        rest = None
        for group in self.param_groups:
            if not self._step_fused(group):
                if rest is None:
                    rest = []
                rest.append(group)
        if rest:
            self._step_groups(rest)

    def _step_fused(self, group: dict) -> bool:
        """Update a group of small parameters as one flat array; False if the group does not qualify.

        Small parameters (XOR's 2x2 weights) spend their time in the ~10 NumPy calls per
        parameter, not in arithmetic: here the moments live in one flat buffer (the state's
        "m" and "s" are views into it), the gradients are gathered into one, and the same ufunc
        sequence as _kernel runs once; each parameter then adds its slice. Elementwise float
        ops are correctly rounded, so the result is bit-identical to the per-parameter path.
        """
        if group["amsgrad"] or group["weight_decay"]:
            return False
        plan = self._plans.get(id(group))
        params = group["params"]
        if plan is None or plan[0] is not params or plan[1] is not self.state:
            if plan is not None and plan[0] is params and plan[1] is None:
                return False  # known not to qualify
            if any(p.grad is None for p in params):
                return False  # parameters without a gradient get no state: the per-parameter path
            plan = self._plan(group)
            if plan is None:
                return False
        _, _, entries, gflat, m, s, tmp, k = plan
        if len(entries) != len(params):
            return False
        t = None
        for q, (p, st, shape, mv, sv, tv, gv) in zip(params, entries):
            g = p.grad
            if (q is not p or g is None or g.shape != shape or p.data.shape != shape or g.dtype is not tmp.dtype
                    or st["m"] is not mv or st["s"] is not sv):
                return False
            if t is None:
                t = st["step"]
            elif st["step"] != t:
                return False
            gv[...] = g  # gathered into the flat buffer (cheaper than one concatenate)
        t += 1
        for e in entries:
            e[1]["step"] = t
        lr, eps = float(group["lr"]), float(group["eps"])
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        step, root = _adam_scales(lr, beta1, beta2, t)
        g = gflat
        # The scalars as 0-d arrays of the parameters' dtype: a NumPy op converts a Python float
        # to that dtype (NEP 50) anyway, the same rounding as this assignment, but takes twice
        # as long doing it.
        b1, b2, e, neg_step = k
        b1[()] = beta1
        b2[()] = beta2
        e[()] = eps * root
        neg_step[()] = -step
        # _kernel's sequence with weight_decay 0, decay 1 and no amsgrad
        m *= b1
        m += g
        np.multiply(g, g, out=tmp)
        s *= b2
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += e
        np.divide(m, tmp, out=tmp)
        tmp *= neg_step
        for e in entries:
            data = e[0].data
            data += e[5]
        return True

    def _plan(self, group: dict):
        """Flat buffers and per-parameter views for _step_fused (None when the group is not all small)."""
        params = group["params"]
        self._plans[id(group)] = (params, None)  # "does not qualify" unless built below
        sizes = [p.data.size for p in params]
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) != 1 or sum(sizes) > _FUSE_MAX:
            return None
        dtype = dtypes.pop()
        n = sum(sizes)
        m, s, tmp, gflat = (np.zeros(n, dtype) for _ in range(4))
        entries = []
        off = 0
        for p, k in zip(params, sizes):
            shape = p.data.shape
            st = self.state.get(id(p))
            if st is None:
                st = self.state[id(p)] = {"step": 0}
            mv, sv = m[off:off + k].reshape(shape), s[off:off + k].reshape(shape)
            if "m" in st:  # moments from earlier steps or load_state_dict: move them in
                mv[...] = st["m"]
                sv[...] = st["s"]
            st["m"], st["s"] = mv, sv
            entries.append((p, st, shape, mv, sv, tmp[off:off + k].reshape(shape), gflat[off:off + k].reshape(shape)))
            off += k
        plan = (params, self.state, entries, gflat, m, s, tmp, tuple(np.zeros((), dtype) for _ in range(4)))
        self._plans[id(group)] = plan
        return plan

    def _prepare(self, data, state, group):
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        if "m" not in state:
            state["m"] = np.zeros_like(data)
            state["s"] = np.zeros_like(data)
            if group["amsgrad"]:
                state["s_max"] = np.zeros_like(data)
        step, root = _adam_scales(lr, beta1, beta2, state["step"])
        decay = 1.0 - lr * wd if self._decoupled else 1.0  # AdamW decays the weights
        return [state["m"], state["s"], state.get("s_max")], (
            beta1, beta2, 0.0 if self._decoupled else wd, decay, step, eps * root)

    @staticmethod
    def _kernel(p, g, m, s, s_max, tmp, tmp2, beta1, beta2, weight_decay, decay, step, eps):
        if decay != 1.0:
            p *= decay
        g = _add_decay(g, p, weight_decay, tmp2)
        m *= beta1
        m += g
        np.multiply(g, g, out=tmp)
        s *= beta2
        s += tmp
        if s_max is not None:  # amsgrad
            np.maximum(s_max, s, out=s_max)
            s = s_max
        np.sqrt(s, out=tmp)
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= -step
        p += tmp


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter) as torch.optim.AdamW: decoupled weight decay."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop (alpha, eps outside the sqrt, momentum, centered)."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _validate(self, group: dict) -> None:
        _check("lr", group["lr"])
        _check("alpha", group["alpha"], 0.0, 1.0, closed_high=True)
        _check("eps", group["eps"])
        _check("weight_decay", group["weight_decay"])
        _check("momentum", group["momentum"])

    def _prepare(self, data, state, group):
        momentum = float(group["momentum"])
        if "square_avg" not in state:
            state["square_avg"] = np.zeros_like(data)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(data)
            if momentum:
                state["momentum_buffer"] = np.zeros_like(data)
        return [state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer")], (
            float(group["lr"]), float(group["alpha"]), float(group["eps"]), float(group["weight_decay"]),
            momentum)

    @staticmethod
    def _kernel(p, g, sq, ga, buf, tmp, tmp2, lr, alpha, eps, weight_decay, momentum):
        g = _add_decay(g, p, weight_decay, tmp2)
        # square_avg = alpha * square_avg + (1 - alpha) * g * g
        np.multiply(g, 1.0 - alpha, out=tmp)
        tmp *= g
        sq *= alpha
        sq += tmp
        if ga is not None:  # centered: subtract the squared mean gradient
            np.subtract(g, ga, out=tmp)  # grad_avg += (1 - alpha) * (g - grad_avg), PyTorch's lerp
            tmp *= 1.0 - alpha
            ga += tmp
            np.multiply(ga, ga, out=tmp)
            np.subtract(sq, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(sq, out=tmp)
        tmp += eps
        np.divide(g, tmp, out=tmp)
        if buf is not None:
            buf *= momentum
            buf += tmp
            np.multiply(buf, -lr, out=tmp)
        else:
            tmp *= -lr
        p += tmp
