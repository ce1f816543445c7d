"""Layers as Modules, PyTorch style: parameters register themselves on attribute assignment.

A Module's Parameters and sub-Modules live in ordinary attributes (fast lookups in
``forward``) and, in registration order, in ``_parameters`` / ``_modules``, which give
``named_parameters()`` its dotted names ("0.weight", "encoder.fc.bias").
Weights use PyTorch's layout: Linear ``[out, in]``, Conv2d ``[out, in, kh, kw]``.
"""

from __future__ import annotations

import math
import os
import stat
import zlib
from collections import OrderedDict
from typing import Iterator

import numpy as np

from npnn import functional as F
from npnn import init
from npnn.tensor import Parameter, Tensor

__all__ = [
    "Module",
    "Parameter",
    "Linear",
    "Conv2d",
    "MaxPool2d",
    "Dropout",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Flatten",
    "Identity",
    "ModuleList",
    "Sequential",
]


class Module:
    """Base class of layers and models: parameters, children, train/eval, state dicts."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value) -> None:
        params = self.__dict__.get("_parameters")
        if params is None and isinstance(value, (Parameter, Module)):
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        if params is not None:
            modules = self._modules
            if isinstance(value, Parameter):
                modules.pop(name, None)
                params[name] = value
            elif isinstance(value, Module):
                params.pop(name, None)
                modules[name] = value
            elif name in params:
                if value is not None:
                    raise TypeError(
                        f"{name}: expected a Parameter or None for a registered parameter, got {type(value).__name__}"
                    )
                params[name] = None
            elif name in modules:
                if value is not None:
                    raise TypeError(
                        f"{name}: expected a Module or None for a registered submodule, got {type(value).__name__}"
                    )
                modules[name] = None
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args, **kwargs):
        """The computation; subclasses override it."""
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal -------------------------------------------------------------------------

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        """Direct submodules with their attribute names."""
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator["Module"]:
        """Direct submodules."""
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module ("" or prefix) and all descendants, with dotted names, each once."""
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            kids = [(f"{name}.{n}" if name else n, c) for n, c in m.named_children()]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator["Module"]:
        """This module and all descendants."""
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Parameters with dotted names ("0.weight"); a shared parameter is listed once."""
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in modules:
            for pname, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """All parameters, for an optimizer."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def train(self, mode: bool = True) -> "Module":
        """Set training mode here and in every descendant (affects Dropout)."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        """Set evaluation mode (train(False))."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every parameter's gradient to None."""
        for p in self.parameters():
            p.grad = None

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of all parameter arrays by dotted name (a snapshot, unaffected by later steps)."""
        return OrderedDict((name, p.data.copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays into the parameters in place; every key and shape is checked first."""
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"state_dict: {'; '.join(parts)} for {type(self).__name__}")
        staged = []
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = np.asarray(getattr(state_dict[name], "data", state_dict[name]))
            problem = _check_array(name, value.shape, value.dtype, p.data.shape)
            if problem:
                raise ValueError(f"state_dict: {problem}")
            staged.append((p, value))
        for p, value in staged:  # only after every check passed: no half-loaded model
            p.data[...] = value

    def save(self, path) -> None:
        """Write state_dict() as .npz, whole or not at all (a FIFO or device is written as a stream, not replaced)."""
        _save_npz(path, self.state_dict())

    def load(self, path) -> "Module":
        """Load parameters saved by save(path); every name, shape and dtype is checked before any data is read."""
        own = OrderedDict(self.named_parameters())

        def check(name: str, shape: tuple, dtype: np.dtype):
            if name not in own:
                return f"unexpected key {name!r} for {type(self).__name__}"
            return _check_array(name, shape, dtype, own[name].data.shape)

        self.load_state_dict(read_npz(path, check, required=own))
        return self

    # -- printing --------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The arguments shown inside this module's repr."""
        return ""

    def __repr__(self) -> str:
        kids = list(self.named_children())
        if not kids:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in kids:
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        lines.append(")")
        return "\n".join(lines)


def _save_npz(path, arrays: dict) -> None:
    """np.savez(path, **arrays) through tbwriter.output: whole or not at all; a FIFO or device is streamed."""
    from tbwriter.output import write_output

    write_output(path, lambda f: np.savez(f, **arrays))  # a file object: np.savez adds no ".npz" to the name


def _check_array(name: str, shape: tuple, dtype: np.dtype, expected_shape: tuple) -> "str | None":
    """What is wrong with an array of this shape and dtype for a parameter of expected_shape, or None."""
    if dtype.kind not in "biuf":
        return f"{name!r} has dtype {dtype}, expected numbers"
    if tuple(shape) != tuple(expected_shape):
        return f"{name!r} has shape {tuple(shape)}, the model's parameter has shape {tuple(expected_shape)}"
    return None


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npz(path, check, required=(), only=None) -> dict:
    """The arrays of an .npz file (names in `only`, default all), all or nothing.

    Raises ValueError naming the file and every problem.

    Member names and .npy headers (shape, dtype) are checked first, by check(name, shape,
    dtype) -> problem or None, and against `required` names; data is read only when all pass,
    and never more than the headers declare, so a small file cannot claim gigabytes.
    """
    import zipfile

    path = os.fspath(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open below
            raise ValueError("not a regular file (a FIFO or device?), expected an .npz file")
        with zipfile.ZipFile(path) as z:
            problems, members = [], []
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    problems.append(f"member {info.filename!r} is not an .npy array")
                    continue
                name = info.filename[:-4]
                if only is not None and name not in only:
                    continue
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in _NPY_HEADERS:
                        problems.append(f"{name!r}: unsupported .npy format version {version}")
                        continue
                    shape, fortran, dtype = _NPY_HEADERS[version](f)
                    offset = f.tell()
                problem = check(name, shape, dtype)
                nbytes = math.prod(shape) * dtype.itemsize
                if problem is None and info.file_size != offset + nbytes:
                    problem = (
                        f"{name!r} declares shape {shape} of {dtype} ({nbytes} bytes) "
                        f"but holds {info.file_size - offset} bytes"
                    )
                if problem:
                    problems.append(problem)
                members.append((name, info, offset, shape, fortran, dtype))
            names = {m[0] for m in members}
            missing = [k for k in required if k not in names]
            if missing:
                problems.append(f"missing keys {missing}")
            if problems:
                raise ValueError("; ".join(problems))
            arrays = {}
            for name, info, offset, shape, fortran, dtype in members:
                with z.open(info) as f:
                    data = f.read(info.file_size)  # the zip's CRC is checked at the end
                arrays[name] = np.frombuffer(data, dtype, offset=offset).reshape(shape, order="F" if fortran else "C")
            return arrays
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path}: {e}") from None


def _pair(value, name: str, low: int = 1) -> tuple[int, int]:
    """An int or a pair of ints as a pair, checked >= low (1: positive, 0: non-negative)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= low for v in pair):
        what = "positive" if low == 1 else "non-negative"
        raise ValueError(f"{name}: expected a {what} int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _positive(value, name: str) -> int:
    """A positive int, else ValueError naming the argument."""
    if not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


class Linear(Module):
    """y = x @ weight.T + bias; weight [out, in], both U(-1/sqrt(in), 1/sqrt(in)) like PyTorch."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, generator: np.random.Generator | None = None
    ):
        super().__init__()
        self.in_features = _positive(in_features, "in_features")
        self.out_features = _positive(out_features, "out_features")
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(init.uniform((out_features, in_features), -bound, bound, generator), name="weight")
        self.bias = Parameter(init.uniform((out_features,), -bound, bound, generator), name="bias") if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution over NCHW input; weight [out, in, kh, kw], PyTorch's default init."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        bias: bool = True,
        generator: np.random.Generator | None = None,
    ):
        super().__init__()
        self.in_channels = _positive(in_channels, "in_channels")
        self.out_channels = _positive(out_channels, "out_channels")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding", low=0)
        shape = (out_channels, in_channels) + self.kernel_size
        bound = 1.0 / math.sqrt(in_channels * self.kernel_size[0] * self.kernel_size[1])
        self.weight = Parameter(init.uniform(shape, -bound, bound, generator), name="weight")
        self.bias = Parameter(init.uniform((out_channels,), -bound, bound, generator), name="bias") if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class MaxPool2d(Module):
    """Max pooling over NCHW input; stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        _pair(self.kernel_size, "kernel_size")
        _pair(self.stride, "stride")

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class Dropout(Module):
    """Zero each element with probability p while training, scale the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a drop probability in [0, 1], got {p!r} (keep_prob 0.7 is p=0.3)")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Sigmoid(Module):
    """1 / (1 + exp(-x))."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    """tanh(x)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Identity(Module):
    """Returns its input."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Flatten(Module):
    """Flatten dimensions start_dim..end_dim (default: all but the batch)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        start = self.start_dim % len(shape)
        end = self.end_dim % len(shape)
        if end < start:
            raise ValueError(f"end_dim: {self.end_dim} comes before start_dim {self.start_dim} for shape {shape}")
        return x.reshape(shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class ModuleList(Module):
    """A list of modules, registered as children "0", "1", ...; indexable, no forward of its own."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        """Add a module at the end."""
        if not isinstance(module, Module):
            raise TypeError(f"module: expected a Module, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        """Add several modules at the end."""
        for m in modules:
            self.append(m)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return type(self)(items[index]) if type(self) is ModuleList else Sequential(*items[index])
        try:
            return items[index]
        except (IndexError, TypeError):
            raise IndexError(
                f"index: {index!r} out of range for {type(self).__name__} of length {len(items)}"
            ) from None


class Sequential(ModuleList):
    """Modules applied in order; children named "0", "1", ... (or an OrderedDict's keys); indexable."""

    def __init__(self, *modules):
        Module.__init__(self)
        if len(modules) == 1 and isinstance(modules[0], (OrderedDict, dict)):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            if not isinstance(m, Module):
                raise TypeError(f"modules[{name}]: expected a Module, got {type(m).__name__}")
            setattr(self, name, m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x
