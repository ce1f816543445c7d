"""npnn: reverse-mode autodiff on NumPy with a PyTorch-like API."""

import os as _os
import sys as _sys

# OpenBLAS's idle threads spin ~0.1 s after each product, holding a core our other threads
# need (docs/performance.md); it reads the variable when NumPy loads, so npnn must come first.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")
from npnn.allocator import keep_freed_memory as _keep_freed_memory

_keep_freed_memory()  # large arrays reuse the heap between steps instead of fresh kernel pages
from npnn.tensor import Parameter, Tensor, enable_grad, is_grad_enabled, no_grad
from npnn.ops import (
    abs,
    clip,
    concatenate,
    exp,
    log,
    log_softmax,
    matmul,
    maximum,
    minimum,
    relu,
    sigmoid,
    softmax,
    sqrt,
    stack,
    tanh,
    where,
)
from npnn.random import manual_seed
from npnn.graph import Graph, name_scope, trace
from npnn import functional
from npnn import init
from npnn import nn
from npnn import optim


def __getattr__(name: str):
    """`npnn.summary` on first use: the core imports tbwriter only once summaries are used."""
    if name == "summary":
        import importlib

        return importlib.import_module("npnn.summary")
    raise AttributeError(f"module 'npnn' has no attribute {name!r}")
