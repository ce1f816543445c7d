"""One-off check (not a test): npnn.optim against torch.optim on the same gradients.

Runs each optimizer configuration for --steps steps on float32 parameters of a few shapes
(one large enough for npnn's two-thread split), feeding both libraries the same gradient
sequence, and prints the largest absolute and relative parameter differences, and the time
per step of each. Needs torch (the optional bench dependency).

    python bench/optim_vs_torch.py [--steps 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import npnn
from npnn import optim

SHAPES = [(512, 784), (512,), (10, 512), (3, 3, 3, 3)]

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("Adam", dict(lr=1e-3, amsgrad=True)),
    ("AdamW", dict(lr=1e-3)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, momentum=0.9, centered=True, weight_decay=1e-3)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(args.steps)]
    print(f"{'optimizer':<75} {'max abs diff':>12} {'max rel diff':>12} {'npnn ms':>8} {'torch ms':>8}")
    for name, kw in CONFIGS:
        ps = [npnn.Parameter(a.copy()) for a in start]
        ts = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
        opt = getattr(optim, name)(ps, **kw)
        topt = getattr(torch.optim, name)(ts, **kw)
        tn, tt = [], []
        for gs in grads:
            for p, t, g in zip(ps, ts, gs):
                p.grad = g
                t.grad = torch.from_numpy(g)
            t0 = time.perf_counter()
            opt.step()
            t1 = time.perf_counter()
            topt.step()
            t2 = time.perf_counter()
            tn.append(t1 - t0)
            tt.append(t2 - t1)
        assert all(p.data.dtype == np.float32 for p in ps)
        diff = max(float(np.abs(p.data - t.detach().numpy()).max()) for p, t in zip(ps, ts))
        rel = max(
            float((np.abs(p.data - t.detach().numpy()) / (np.abs(t.detach().numpy()) + 1e-6)).max())
            for p, t in zip(ps, ts)
        )
        label = f"{name}({', '.join(f'{k}={v}' for k, v in kw.items())})"
        print(f"{label:<75} {diff:12.3g} {rel:12.3g} {1e3 * np.median(tn):8.2f} {1e3 * np.median(tt):8.2f}")


if __name__ == "__main__":
    main()
