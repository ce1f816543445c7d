"""Weight initializers: float32 arrays drawn from npnn's seeded generator.

Each function takes either a shape (int or tuple) and returns a new float32 ndarray, or a
Tensor / ndarray and fills it in place (returning it), like ``torch.nn.init.*_``.
Randomness comes from ``npnn.random.generator()`` (seeded by ``npnn.manual_seed(n)``)
unless an explicit ``numpy.random.Generator`` is passed as ``generator=``.
Fans follow PyTorch's layout: weight ``[out, in, *kernel]``, so fan_in = in * prod(kernel).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "calculate_fans",
    "normal",
    "uniform",
    "xavier_uniform",
    "xavier_normal",
    "he_normal",
    "he_uniform",
    "zeros",
    "ones",
    "constant",
]


def _rng(generator: np.random.Generator | None) -> np.random.Generator:
    """The generator to draw from: the explicit one, else npnn's default."""
    if generator is None:
        from npnn.random import generator as default_generator  # late: keeps init importable alone

        return default_generator()
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator: expected numpy.random.Generator or None, got {type(generator).__name__}")
    return generator


def _array_of(target) -> np.ndarray | None:
    """The array behind a Tensor or an ndarray (None for anything else)."""
    if isinstance(target, np.ndarray):
        return target
    data = getattr(target, "data", None)
    return data if isinstance(data, np.ndarray) else None


def _shape_of(target) -> tuple[int, ...]:
    """The shape of a shape spec, Tensor or ndarray."""
    if isinstance(target, (int, np.integer)):
        return (int(target),)
    if isinstance(target, (tuple, list)):
        shape = tuple(int(d) for d in target)
        if any(d < 0 for d in shape):
            raise ValueError(f"shape: expected non-negative sizes, got {tuple(target)}")
        return shape
    data = _array_of(target)
    if data is not None:
        return data.shape
    raise TypeError(f"shape: expected an int, a tuple, a Tensor or an ndarray, got {type(target).__name__}")


def _fill(target, values: np.ndarray):
    """Return values for a shape spec, or copy them into a Tensor / ndarray in place."""
    if isinstance(target, (int, np.integer, tuple, list)):
        return values
    _array_of(target)[...] = values  # casts to the target's dtype (float64 kept for gradient checks)
    return target


def calculate_fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape in PyTorch layout [out, in, *kernel]."""
    shape = _shape_of(shape)
    if len(shape) < 2:
        raise ValueError(f"shape: fans need at least 2 dimensions, got {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def normal(shape, mean: float = 0.0, std: float = 1.0, generator: np.random.Generator | None = None):
    """Normal(mean, std) values in float32, like ``tf.random_normal``."""
    if not std >= 0:
        raise ValueError(f"std: expected >= 0, got {std}")
    # Drawn in float64, then rounded (like randn(...).astype(np.float32)): numpy's float32
    # ziggurat gives other numbers, and with those seed 777 leaves the XOR lab at accuracy 0.75.
    values = _rng(generator).standard_normal(_shape_of(shape))
    if std != 1.0:
        values *= float(std)
    if mean != 0.0:
        values += float(mean)
    out = _fill(shape, values)
    return out.astype(np.float32) if out is values else out


def uniform(shape, low: float = 0.0, high: float = 1.0, generator: np.random.Generator | None = None):
    """Uniform[low, high) values in float32."""
    if not high >= low:
        raise ValueError(f"high: expected >= low ({low}), got {high}")
    values = _rng(generator).random(_shape_of(shape), dtype=np.float32)
    values *= float(high - low)
    values += float(low)
    return _fill(shape, values)


def xavier_uniform(shape, gain: float = 1.0, generator: np.random.Generator | None = None):
    """Glorot uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fans(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, -bound, bound, generator)


def xavier_normal(shape, gain: float = 1.0, generator: np.random.Generator | None = None):
    """Glorot normal: N(0, std), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = calculate_fans(shape)
    return normal(shape, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _fan(shape, mode: str) -> int:
    """fan_in or fan_out as chosen by mode."""
    fan_in, fan_out = calculate_fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")


def he_normal(shape, mode: str = "fan_in", gain: float = math.sqrt(2.0), generator: np.random.Generator | None = None):
    """He / Kaiming normal (PyTorch's kaiming_normal_ for ReLU): N(0, gain / sqrt(fan))."""
    return normal(shape, 0.0, gain / math.sqrt(_fan(shape, mode)), generator)


def he_uniform(shape, mode: str = "fan_in", gain: float = math.sqrt(2.0), generator: np.random.Generator | None = None):
    """He / Kaiming uniform: U(-a, a), a = gain * sqrt(3 / fan)."""
    bound = gain * math.sqrt(3.0 / _fan(shape, mode))
    return uniform(shape, -bound, bound, generator)


def constant(shape, value: float):
    """All elements equal to value, float32."""
    return _fill(shape, np.full(_shape_of(shape), value, dtype=np.float32))


def zeros(shape):
    """All zeros, float32."""
    return constant(shape, 0.0)


def ones(shape):
    """All ones, float32."""
    return constant(shape, 1.0)
