"""Optimizers with PyTorch's update rules, updating parameters in place in float32.

Every update works on ``param.data`` with ``param.grad`` through ``out=`` into the
optimizer's own state and one shared scratch buffer, so a step allocates nothing and never
upcasts: hyperparameters enter as Python floats, which NumPy 2 keeps at float32.
``zero_grad()`` sets ``.grad`` to None (PyTorch's default): the next backward then hands
its first gradient over without a memset or an add.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop"]


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


class Optimizer:
    """Base class: parameter groups, per-parameter state, zero_grad() and step()."""

    def __init__(self, params, defaults: dict):
        if hasattr(params, "data") and not isinstance(params, (list, tuple, dict)):
            raise TypeError("params: expected an iterable of Parameters or of dicts, got a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("params: optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}  # id(param) -> state arrays
        for group in groups:
            self.add_param_group(group)
        self._scratch = np.empty(0, dtype=np.float32)

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

    def _buffer(self, like: np.ndarray, slot: int = 0) -> np.ndarray:
        """A scratch array shaped like `like`, a view into one buffer shared by all parameters."""
        n = like.size
        if self._scratch.size < 2 * n or self._scratch.dtype != like.dtype:
            self._scratch = np.empty(2 * max(n, self._scratch.size // 2), dtype=like.dtype)
        return self._scratch[slot * n:(slot + 1) * n].reshape(like.shape)

    def _grad(self, p, weight_decay: float) -> np.ndarray:
        """The gradient, plus weight_decay * param (L2 penalty, PyTorch's coupled form)."""
        g = p.grad
        if g.shape != p.data.shape:
            raise ValueError(f"grad: shape {g.shape} does not match parameter shape {p.data.shape}")
        if weight_decay:
            out = self._buffer(p.data, 1)
            np.multiply(p.data, weight_decay, out=out)
            out += g
            return out
        return g

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state.get(id(p))
                    if state is None:
                        state = self.state[id(p)] = {"step": 0}
                    state["step"] += 1
                    self._update(p, state, group)

    def _update(self, p, state: dict, group: dict) -> None:
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
        """Restore hyperparameters and state saved by state_dict() for the same parameters."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict: has {len(groups)} param groups, optimizer has {len(self.param_groups)}")
        params = []
        for mine, saved in zip(self.param_groups, groups):
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError(f"state_dict: a group has {len(saved['params'])} params, "
                                 f"optimizer's has {len(mine['params'])}")
            mine.update({k: v for k, v in saved.items() if k != "params"})
            params.extend(mine["params"])
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            restored = {}
            for name, value in s.items():
                if isinstance(value, np.ndarray) and value.shape != p.data.shape and value.ndim > 0:
                    raise ValueError(f"state_dict: state {i}.{name} has shape {value.shape}, "
                                     f"parameter has {p.data.shape}")
                restored[name] = value.astype(p.data.dtype) if isinstance(value, np.ndarray) and value.ndim else (
                    int(value) if name == "step" else value)
            self.state[id(p)] = restored


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

    def _update(self, p, state: dict, group: dict) -> None:
        lr, momentum = float(group["lr"]), float(group["momentum"])
        g = self._grad(p, float(group["weight_decay"]))
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=p.data.dtype, copy=True)
            else:
                buf *= momentum
                if group["dampening"]:
                    tmp = self._buffer(p.data, 0)
                    np.multiply(g, 1.0 - float(group["dampening"]), out=tmp)
                    buf += tmp
                else:
                    buf += g
            if group["nesterov"]:
                d = self._buffer(p.data, 0)
                np.multiply(buf, momentum, out=d)
                d += g
                g = d
            else:
                g = buf
        d = self._buffer(p.data, 0)
        np.multiply(g, -lr, out=d)
        p.data += d


class Adam(Optimizer):
    """Adam (Kingma & Ba) as torch.optim.Adam: L2 weight decay added to the gradient."""

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False):
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

    def _update(self, p, state: dict, group: dict) -> None:
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = float(group["betas"][0]), float(group["betas"][1])
        data = p.data
        if self._decoupled:
            if wd:
                data *= 1.0 - lr * wd  # AdamW: decay the weights, not the gradient
            g = p.grad
            if g.shape != data.shape:
                raise ValueError(f"grad: shape {g.shape} does not match parameter shape {data.shape}")
        else:
            g = self._grad(p, wd)
        m = state.get("exp_avg")
        if m is None:
            m = state["exp_avg"] = np.zeros_like(data)
            state["exp_avg_sq"] = np.zeros_like(data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(data)
        v = state["exp_avg_sq"]
        tmp = self._buffer(data, 0)
        t = state["step"]
        # m += (1 - beta1) * (g - m), PyTorch's lerp
        np.subtract(g, m, out=tmp)
        tmp *= 1.0 - beta1
        m += tmp
        # v = beta2 * v + (1 - beta2) * g * g
        np.multiply(g, 1.0 - beta2, out=tmp)
        tmp *= g
        v *= beta2
        v += tmp
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        # PyTorch: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps); the bias corrections
        # are folded into two scalars: p -= step_size * m / (sqrt(v) + eps * sqrt(bc2)).
        bc2_sqrt = math.sqrt(1.0 - beta2 ** t)
        step_size = lr * bc2_sqrt / (1.0 - beta1 ** t)
        np.sqrt(v, out=tmp)
        tmp += eps * bc2_sqrt
        np.divide(m, tmp, out=tmp)
        tmp *= -step_size
        data += tmp


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

    def _update(self, p, state: dict, group: dict) -> None:
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        momentum = float(group["momentum"])
        data = p.data
        g = self._grad(p, float(group["weight_decay"]))
        sq = state.get("square_avg")
        if sq is None:
            sq = state["square_avg"] = np.zeros_like(data)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(data)
            if momentum:
                state["momentum_buffer"] = np.zeros_like(data)
        tmp = self._buffer(data, 0)
        # square_avg = alpha * square_avg + (1 - alpha) * g * g
        np.multiply(g, 1.0 - alpha, out=tmp)
        tmp *= g
        sq *= alpha
        sq += tmp
        if group["centered"]:
            ga = state["grad_avg"]
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
        if momentum:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += tmp
            np.multiply(buf, -lr, out=tmp)
        else:
            tmp *= -lr
        data += tmp
