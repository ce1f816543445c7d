"""One training step of the course's deep MNIST MLP, npnn vs PyTorch CPU, side by side.

784-512-512-512-512-10, ReLU, dropout (keep 0.7), softmax cross-entropy, Adam(1e-3), batch 100.
Both nets start from the same weights and see the same batch; steps of the two libraries
alternate in blocks so that both meet the same machine load. Prints median times and the ratio
npnn / PyTorch (target <= 0.8). PyTorch runs with torch.set_num_threads(2); NumPy's BLAS
uses the thread count the environment gives it (printed).

    python bench/mlp.py [--steps 300] [--block 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time

import npnn  # before NumPy, so npnn's OPENBLAS_THREAD_TIMEOUT applies (see npnn/__init__.py)
import numpy as np
from npnn import functional as F
from npnn import nn, optim, parallel

SIZES = [784, 512, 512, 512, 512, 10]
BATCH = 100
DROP = 0.3  # keep_prob 0.7


def blas_threads() -> str:
    """NumPy's OpenBLAS thread count, read from the loaded library (threadpoolctl if present)."""
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info())
    except ImportError:
        pass
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    for lib in libs:
        handle = ctypes.CDLL(lib)
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(handle, sym):
                return f"openblas={getattr(handle, sym)()} ({os.path.basename(lib)})"
    return "unknown"


def npnn_model() -> nn.Sequential:
    """The MLP in npnn with Xavier-uniform weights, as the course's lab 10-5."""
    layers = []
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        lin = nn.Linear(a, b)
        npnn.init.xavier_uniform(lin.weight)
        layers.append(lin)
        if i < len(SIZES) - 2:
            layers += [nn.ReLU(), nn.Dropout(DROP)]
    return nn.Sequential(*layers)


def torch_model(torch, source: nn.Sequential):
    """The same MLP in PyTorch, weights copied from the npnn model."""
    layers = []
    for m in source:
        if isinstance(m, nn.Linear):
            lin = torch.nn.Linear(m.in_features, m.out_features)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(m.weight.data))
                lin.bias.copy_(torch.from_numpy(m.bias.data))
            layers.append(lin)
        elif isinstance(m, nn.ReLU):
            layers.append(torch.nn.ReLU())
        else:
            layers.append(torch.nn.Dropout(m.p))
    return torch.nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per library")
    parser.add_argument("--block", type=int, default=10, help="steps per library before switching")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    parallel.NUM_THREADS = min(args.threads, 2)  # npnn's op threads, like torch's intra-op ones
    npnn.manual_seed(0)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 784), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    model = npnn_model()
    tmodel = torch_model(torch, model)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xn = npnn.Tensor(x)
    # Same network in both? Without dropout the first losses must agree to float32 rounding.
    model.eval()
    tmodel.eval()
    with npnn.no_grad(), torch.no_grad():
        same = (F.cross_entropy(model(xn), y).item(), loss_fn(tmodel(xt), yt).item())
    model.train()
    tmodel.train()
    phases = {"forward": [], "backward": [], "step": []}

    def npnn_step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(model(xn), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        phases["forward"].append(t1 - t0)
        phases["backward"].append(t2 - t1)
        phases["step"].append(t3 - t2)
        return t3 - t0

    def torch_step() -> float:
        t0 = time.perf_counter()
        topt.zero_grad()
        loss = loss_fn(tmodel(xt), yt)
        loss.backward()
        topt.step()
        return time.perf_counter() - t0

    for _ in range(5):  # warm-up: allocator, BLAS threads, optimizer state
        npnn_step()
        torch_step()
    for v in phases.values():
        v.clear()
    times: dict[str, list[float]] = {"npnn": [], "torch": []}
    done = 0
    while done < args.steps:
        n = min(args.block, args.steps - done)
        times["npnn"] += [npnn_step() for _ in range(n)]
        times["torch"] += [torch_step() for _ in range(n)]
        done += n

    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    print(
        f"MLP 784-512x4-10, batch {BATCH}, dropout keep {1 - DROP}, Adam; {args.steps} steps each, "
        f"medians; torch {torch.__version__} threads={torch.get_num_threads()}, numpy {np.__version__} "
        f"BLAS threads: {blas_threads()}, npnn.parallel threads={parallel.NUM_THREADS}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"initial loss without dropout: npnn {same[0]:.6f}, torch {same[1]:.6f}")
    print("npnn phases: " + ", ".join(f"{k} {1e3 * float(np.median(v)):.2f} ms" for k, v in phases.items()))
    # The fastest tenth of the steps shows each library nearest to an idle machine.
    fast = {k: 1e3 * float(np.percentile(v, 10)) for k, v in times.items()}
    print(f"npnn  {ms['npnn']:.2f} ms/step (10th percentile {fast['npnn']:.2f})")
    print(f"torch {ms['torch']:.2f} ms/step (10th percentile {fast['torch']:.2f})")
    print(
        f"ratio npnn/torch {ms['npnn'] / ms['torch']:.2f} of medians, "
        f"{fast['npnn'] / fast['torch']:.2f} of 10th percentiles (target <= 0.8)"
    )


if __name__ == "__main__":
    main()
