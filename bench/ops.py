"""Python overhead per op: a chain of small-tensor ops, forward + backward, npnn vs PyTorch.

Each step of the chain is one op on an 8x8 float32 tensor (64 elements), cycling through
add, mul, sigmoid, tanh, relu, matmul, sub of a constant and a broadcasting bias add;
the chain ends in sum() and backward(). Prints the median time per op and npnn/PyTorch ratio
(target <= 0.5). Run: python bench/ops.py [--length 200] [--repeats 50].
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import npnn


def chain(lib, x, w, m, b, length: int) -> None:
    """length ops on small tensors, then sum and backward; lib is npnn or torch (same names)."""
    y = x
    for i in range(length):
        k = i % 8
        if k == 0:
            y = y + x
        elif k == 1:
            y = y * w
        elif k == 2:
            y = lib.sigmoid(y)
        elif k == 3:
            y = lib.tanh(y)
        elif k == 4:
            y = lib.relu(y)
        elif k == 5:
            y = y @ m
        elif k == 6:
            y = y - 0.5
        else:
            y = y + b
    y.sum().backward()


def chain_inputs() -> list:
    """x, an elementwise weight near 1, a matmul weight near the identity, a bias (float32).

    Weights near 1 keep every gradient along the chain in the normal float range: vanishing
    gradients would turn denormal, and denormal arithmetic (~100x slower on x86) would time
    the FPU instead of the Python overhead this benchmark is about.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8))
    w = 1 + 0.05 * rng.standard_normal((8, 8))
    m = np.eye(8) + 0.05 * rng.standard_normal((8, 8))
    b = 0.1 * rng.standard_normal(8)
    return [a.astype(np.float32) for a in (x, w, m, b)]


def per_op_medians(runs: dict, length: int, repeats: int) -> dict:
    """Median time of one chain / ops in it, in microseconds, for each named runner.

    The runners take turns (one chain each per round), so load from other processes on a
    shared machine falls on all of them alike and the ratio stays honest.
    """
    for run in runs.values():
        run()  # warm up
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.thread_time()
            run()
            times[name].append(time.thread_time() - t0)
    return {name: statistics.median(ts) / (length + 2) * 1e6 for name, ts in times.items()}


def main() -> None:
    """Measure both libraries in this process and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=200, help="ops per chain")
    ap.add_argument("--repeats", type=int, default=50, help="chains timed per library")
    args = ap.parse_args()
    arrays = chain_inputs()
    xs = arrays[0]
    leaves = [npnn.Tensor(a, requires_grad=True) for a in arrays]
    runs = {"npnn": lambda: chain(npnn, *leaves, args.length)}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(2)
        tleaves = [torch.tensor(a, requires_grad=True) for a in arrays]
        runs["torch"] = lambda: chain(torch, *tleaves, args.length)
    us = per_op_medians(runs, args.length, args.repeats)
    print(f"npnn    {us['npnn']:7.2f} us/op (forward + backward, {xs.size}-element tensors, "
          f"median of {args.repeats} chains of {args.length} ops)")
    if torch is None:
        print("PyTorch not installed (pip install torch): no ratio")
        return
    print(f"PyTorch {us['torch']:7.2f} us/op (torch {torch.__version__}, 2 threads)")
    print(f"ratio npnn/PyTorch: {us['npnn'] / us['torch']:.2f}x (target <= 0.50x)")


if __name__ == "__main__":
    main()
