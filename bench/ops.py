"""Python overhead per op: a chain of small-tensor ops, forward + backward, npnn vs PyTorch.

Each step of the chain is one op on an 8x8 float32 tensor (64 elements), cycling through
add, mul, sigmoid, tanh, relu, matmul, sub of a constant and a broadcasting bias add;
the chain ends in sum() and backward(). Prints the median time per op (thread CPU time and
wall time) and the npnn/PyTorch ratios (target <= 0.5).
Run from the repository root: python bench/ops.py [--length 200] [--repeats 50].
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
    """{name: (CPU us/op, wall us/op)}: medians over chains of time per op, for each runner.

    The runners take turns (one chain each per round), so load from other processes on a
    shared machine falls on all of them alike. CPU time is the calling thread's
    (time.thread_time): other processes cannot inflate it, and PyTorch runs small ops and
    their backward on the calling thread, so it undercounts PyTorch if anything.
    """
    for run in runs.values():
        run()  # warm up
    cpu = {name: [] for name in runs}
    wall = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.thread_time() - c0)
    per_op = 1e6 / (length + 2)  # + sum() and the backward seed
    return {name: (statistics.median(cpu[name]) * per_op, statistics.median(wall[name]) * per_op) for name in runs}


def main() -> None:
    """Measure both libraries in this process and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=200, help="ops per chain")
    ap.add_argument("--repeats", type=int, default=50, help="chains timed per library")
    args = ap.parse_args()
    arrays = chain_inputs()
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
    print(
        f"chain of {args.length} ops on {arrays[0].size}-element float32 tensors, forward + "
        f"backward, median of {args.repeats} chains each"
    )
    print(f"npnn    {us['npnn'][0]:7.2f} us/op CPU, {us['npnn'][1]:7.2f} us/op wall")
    if torch is None:
        print("PyTorch not installed (pip install torch): no ratio")
        return
    print(
        f"PyTorch {us['torch'][0]:7.2f} us/op CPU, {us['torch'][1]:7.2f} us/op wall "
        f"(torch {torch.__version__}, 2 threads)"
    )
    print(
        f"ratio npnn/PyTorch: {us['npnn'][0] / us['torch'][0]:.2f}x CPU time, "
        f"{us['npnn'][1] / us['torch'][1]:.2f}x wall time (target <= 0.50x)"
    )


if __name__ == "__main__":
    main()
