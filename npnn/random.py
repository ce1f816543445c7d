"""npnn's default random generator: seeded by manual_seed, drawn from by init and dropout."""

from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "generator"]

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator (like torch.manual_seed) and return it."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator() -> np.random.Generator:
    """The default numpy.random.Generator (replaced by each manual_seed call)."""
    return _generator
