"""The MNIST CNN's training step, npnn vs PyTorch CPU, alternating in one process.

The model of `python -m npnn.mnist --model cnn` and the same network in PyTorch (bench/mnist.py's
torch_model), Adam(1e-3), batch 100 of random digits (the work per step does not depend on the
pixels). The libraries alternate in blocks of --block steps, so both meet the same load, and
each step is timed twice: wall clock, and this process's CPU time (all its threads), which a
loaded machine inflates far less than the wall clock when both run on one thread. Prints the
medians and their ratios npnn / PyTorch (bench/mnist.py's target: CNN epoch <= 1.0x).

    python bench/cnn_step.py [--steps 60] [--block 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import npnn  # before NumPy, for npnn's OpenBLAS and allocator settings (npnn/__init__.py)
from npnn import functional as F
from npnn import optim
from npnn.mnist import MODELS

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist import synthetic_mnist, torch_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps per library")
    p.add_argument("--block", type=int, default=5, help="steps per library before switching")
    p.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch.set_num_threads (set OPENBLAS_NUM_THREADS to the same before starting, for NumPy)",
    )
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    images, labels = synthetic_mnist(flatten=False)
    images, labels = images[:6000], labels[:6000]
    npnn.manual_seed(0)
    torch.manual_seed(0)
    model = MODELS["cnn"]()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    tmodel = torch_model(torch, "cnn")
    topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
    tx, ty = torch.from_numpy(images), torch.from_numpy(labels)

    def npnn_step(s: slice) -> None:
        loss = F.cross_entropy(model(npnn.Tensor(images[s])), labels[s])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def torch_step(s: slice) -> None:
        loss = torch.nn.functional.cross_entropy(tmodel(tx[s]), ty[s])
        topt.zero_grad()
        loss.backward()
        topt.step()

    steps = {"npnn": npnn_step, "torch": torch_step}
    times = {k: ([], []) for k in steps}
    for step in steps.values():  # warm-up
        for i in range(3):
            step(slice(i * 100, i * 100 + 100))
    done = 0
    while done < args.steps:
        for k, step in steps.items():
            for i in range(done, done + args.block):
                s = slice(i * 100 % 6000, i * 100 % 6000 + 100)
                w, c = time.perf_counter(), time.process_time()
                step(s)
                times[k][0].append(time.perf_counter() - w)
                times[k][1].append(time.process_time() - c)
        steps = dict(reversed(list(steps.items())))  # the other goes first next round
        done += args.block
    med = {k: [statistics.median(v) * 1e3 for v in t] for k, t in times.items()}
    print(
        f"{args.threads} threads (OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}), "
        f"{args.steps} steps each, load average {os.getloadavg()[0]:.1f} at end"
    )
    print(
        f"wall: npnn {med['npnn'][0]:.1f} ms, torch {med['torch'][0]:.1f} ms, "
        f"ratio {med['npnn'][0] / med['torch'][0]:.2f}"
    )
    print(
        f"CPU:  npnn {med['npnn'][1]:.1f} ms, torch {med['torch'][1]:.1f} ms, "
        f"ratio {med['npnn'][1] / med['torch'][1]:.2f}"
    )


if __name__ == "__main__":
    main()
