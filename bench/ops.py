"""Python overhead per op: a chain of small-tensor ops, forward + backward, npnn vs PyTorch.

Each step of the chain is one op on a 8x8 float32 tensor (64 elements), cycling through
add, mul, sigmoid, tanh, relu, matmul, sub with a constant, and broadcasting add of a bias;
the chain ends in sum() and backward(). Prints the median time per op and npnn/PyTorch ratio
(target <= 0.5). Run: python bench/ops.py [--length 200] [--repeats 50].
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import npnn


def chain(lib, x, w, b, length: int) -> None:
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
            y = y @ w
        elif k == 6:
            y = y - 0.5
        else:
            y = y + b
    y.sum().backward()


def median_per_op(run, length: int, repeats: int) -> float:
    """Median over repeats of (time of one chain) / (ops in it), in microseconds."""
    run()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / (length + 2) * 1e6  # + sum + the backward seed


def main() -> None:
    """Measure both libraries in this process and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=200, help="ops per chain")
    ap.add_argument("--repeats", type=int, default=50, help="chains timed per library")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    xs, ws, bs = (rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((8, 8), (8, 8), (8,)))

    x = npnn.Tensor(xs, requires_grad=True)
    w = npnn.Tensor(ws, requires_grad=True)
    b = npnn.Tensor(bs, requires_grad=True)
    ours = median_per_op(lambda: chain(npnn, x, w, b, args.length), args.length, args.repeats)
    print(f"npnn    {ours:7.2f} us/op (forward + backward, {xs.size}-element tensors)")
    try:
        import torch
    except ImportError:
        print("PyTorch not installed (pip install torch): no ratio")
        return
    torch.set_num_threads(2)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (xs, ws, bs))
    theirs = median_per_op(lambda: chain(torch, tx, tw, tb, args.length), args.length,
                           args.repeats)
    print(f"PyTorch {theirs:7.2f} us/op (torch {torch.__version__}, 2 threads)")
    print(f"ratio npnn/PyTorch: {ours / theirs:.2f}x (target <= 0.50x)")


if __name__ == "__main__":
    main()
