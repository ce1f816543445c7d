"""Benchmark: MNIST training epochs and peak memory, npnn vs PyTorch CPU, side by side.

The models of `python -m npnn.mnist` (MLP 784-512x4-10 with dropout; CNN conv32-pool-conv64-
pool-dropout-dense), Adam(1e-3), batch 100, on the real MNIST training set. Every measurement
runs in its own subprocess (`--worker`), so each framework's peak RSS (ru_maxrss: imports,
data, model, optimizer state, training) is its own; the frameworks take turns in rotating
order, --repeat times, and the medians are compared. The MLP also runs as a hand-written NumPy
loop (the issue's yardstick: what plain NumPy does here without autodiff). All get the same
thread count (--threads, default 2: torch.set_num_threads and the OMP/OpenBLAS/MKL variables).
Every worker loads MNIST with npnn.datasets, so every process imports npnn first and gets its
OpenBLAS thread timeout (npnn/__init__.py); PyTorch's matmuls do not use OpenBLAS, and its step
time measured the same without it.

An epoch is 600 steps; --mlp-steps / --cnn-steps time fewer and scale to 600 (said in the
output). Targets: MLP epoch <= 0.7x PyTorch's, CNN epoch <= 1.0x, peak RSS <= PyTorch's.
--synthetic trains on random digits of MNIST's shapes when the data set is not at hand.

    python bench/mnist.py [--data DIR | --synthetic] [--repeat 3] [--mlp-steps 600] [--cnn-steps 100]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

STEPS_PER_EPOCH = 600
BATCH = 100
DROP = 0.3


def _batches(n: int, steps: int, seed: int):
    """Index arrays of `steps` shuffled batches (reshuffled each pass over the data)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    per_pass = n // BATCH
    for s in range(steps):
        if s and s % per_pass == 0:
            order = rng.permutation(n)
        b = s % per_pass
        yield order[b * BATCH : (b + 1) * BATCH]


def worker_npnn(model_name: str, images, labels, steps: int):
    """Train `steps` steps of npnn's model; return per-step seconds (after 5 warm-up steps)."""
    import numpy as np

    import npnn
    from npnn import functional as F, optim
    from npnn.mnist import MODELS

    npnn.manual_seed(0)
    model = MODELS[model_name]()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i, idx in enumerate(_batches(len(labels), steps + 5, 1)):
        t = time.perf_counter()
        loss = F.cross_entropy(model(npnn.Tensor(images[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t)
    assert np.isfinite(loss.item())
    return times


def torch_model(torch, model_name: str):
    """The same network in PyTorch, Xavier-uniform weights and zero biases like npnn.mnist."""
    nn = torch.nn
    if model_name == "mlp":
        sizes = [784, 512, 512, 512, 512, 10]
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers += [nn.ReLU(), nn.Dropout(DROP)]
    else:
        layers = [
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(DROP),
            nn.Linear(64 * 7 * 7, 10),
        ]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def worker_torch(model_name: str, images, labels, steps: int, threads: int):
    """Train `steps` steps of the PyTorch model; return per-step seconds (after 5 warm-up steps)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model(torch, model_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    times = []
    for i, idx in enumerate(_batches(len(labels), steps + 5, 1)):
        t = time.perf_counter()
        idx = torch.from_numpy(idx)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 5:
            times.append(time.perf_counter() - t)
    return times


def worker_numpy(images, labels, steps: int):
    """The MLP as a hand-written NumPy loop: no autodiff, PyTorch's Adam rule in place in one
    thread; the issue's yardstick for what plain NumPy does on this machine."""
    import numpy as np

    rng = np.random.default_rng(0)
    sizes = [784, 512, 512, 512, 512, 10]
    ws = [
        rng.uniform(-1, 1, (b, a)).astype(np.float32) * np.float32(np.sqrt(6 / (a + b)))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    params = ws + [np.zeros(b, np.float32) for b in sizes[1:]]
    m, v, tmp = ([np.zeros_like(q) for q in params] for _ in range(3))
    rows = np.arange(BATCH)
    times = []
    for i, idx in enumerate(_batches(len(labels), steps + 5, 1)):
        t = time.perf_counter()
        h, y = images[idx], labels[idx]
        acts, masks = [h], []
        for k in range(5):
            h = h @ ws[k].T
            h += params[5 + k]
            if k < 4:
                mask = (h > 0) & (rng.random(h.shape, dtype=np.float32) >= DROP)
                h *= mask
                h *= np.float32(1 / (1 - DROP))
                masks.append(mask)
                acts.append(h)
        e = np.exp(h - h.max(axis=1, keepdims=True))
        g = e / e.sum(axis=1, keepdims=True)  # d(mean cross-entropy)/d(logits)
        g[rows, y] -= 1
        g /= np.float32(BATCH)
        grads = [None] * 10
        for k in range(4, -1, -1):
            grads[k] = g.T @ acts[k]
            grads[5 + k] = g.sum(axis=0)
            if k:
                g = g @ ws[k]
                g *= masks[k - 1]
                g *= np.float32(1 / (1 - DROP))
        bc1, bc2 = 1 - 0.9 ** (i + 1), 1 - 0.999 ** (i + 1)
        for q, gq, mq, vq, tq in zip(params, grads, m, v, tmp):  # in place, into scratch
            mq *= 0.9
            np.multiply(gq, 0.1, out=tq)
            mq += tq
            vq *= 0.999
            np.multiply(gq, gq, out=tq)
            tq *= 0.001
            vq += tq
            np.sqrt(vq, out=tq)
            tq *= 1 / np.sqrt(bc2)
            tq += 1e-8
            np.divide(mq, tq, out=tq)
            tq *= 1e-3 / bc1
            q -= tq
        if i >= 5:
            times.append(time.perf_counter() - t)
    assert np.isfinite(params[0]).all()
    return times


def synthetic_mnist(flatten: bool):
    """60,000 random digits of MNIST's shapes and value range (~19% nonzero pixels, like MNIST's)."""
    import npnn  # noqa: F401 (first, for its OpenBLAS setting, as load_mnist would be)
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.random((60000, 784), dtype=np.float32)
    images[rng.random((60000, 784), dtype=np.float32) >= 0.19] = 0
    labels = rng.integers(0, 10, 60000)
    return (images if flatten else images.reshape(-1, 1, 28, 28)), labels


def worker(args) -> None:
    """Child process: load the data, train, print one JSON line with step times and peak RSS."""
    if args.synthetic:
        images, labels = synthetic_mnist(args.model == "mlp")
    else:
        from npnn.datasets import load_mnist

        d = load_mnist(args.data, flatten=args.model == "mlp", progress=False)
        images, labels = d.train_images, d.train_labels
    if args.worker == "npnn":
        times = worker_npnn(args.model, images, labels, args.steps)
    elif args.worker == "numpy":
        times = worker_numpy(images, labels, args.steps)
    else:
        times = worker_torch(args.model, images, labels, args.steps, args.threads)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {"total": sum(times), "median": statistics.median(times), "steps": len(times), "rss_mib": rss_kib / 1024}
        )
    )


def run_worker(framework: str, model: str, steps: int, args) -> dict:
    """Run one child with the thread variables set; return its JSON result."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        framework,
        "--model",
        model,
        "--steps",
        str(steps),
        "--threads",
        str(args.threads),
    ]
    if args.data:
        cmd += ["--data", args.data]
    if args.synthetic:
        cmd.append("--synthetic")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{framework} {model} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="MNIST directory (default: npnn's default)")
    p.add_argument("--repeat", type=int, default=3, help="runs per framework and model (medians)")
    p.add_argument("--mlp-steps", type=int, default=STEPS_PER_EPOCH, help="timed MLP steps per run")
    p.add_argument("--cnn-steps", type=int, default=100, help="timed CNN steps per run (scaled to an epoch)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="random digits of MNIST's shapes instead of the data set (same work per step)",
    )
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    p.add_argument("--worker", choices=["npnn", "torch", "numpy"], help=argparse.SUPPRESS)
    p.add_argument("--model", choices=["mlp", "cnn"], help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    import numpy
    import torch

    model_name = (
        next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
            "unknown CPU",
        )
        if os.path.exists("/proc/cpuinfo")
        else "unknown CPU"
    )
    print(
        f"{model_name}; numpy {numpy.__version__}, torch {torch.__version__}, {args.threads} threads each, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    )
    rows = []
    for model in args.models:
        steps = args.mlp_steps if model == "mlp" else args.cnn_steps
        frameworks = ["npnn", "torch", "numpy"] if model == "mlp" else ["npnn", "torch"]
        results = {fw: [] for fw in frameworks}
        for r in range(args.repeat):
            for fw in frameworks[r % len(frameworks) :] + frameworks[: r % len(frameworks)]:  # rotate
                res = run_worker(fw, model, steps, args)
                results[fw].append(res)
                print(
                    f"  {model} {fw:5s} run {r + 1}: {res['total'] * STEPS_PER_EPOCH / res['steps']:7.1f} s/epoch, "
                    f"median step {res['median'] * 1e3:6.1f} ms, peak RSS {res['rss_mib']:6.0f} MiB",
                    flush=True,
                )
        epoch = {
            fw: statistics.median(x["total"] * STEPS_PER_EPOCH / x["steps"] for x in v) for fw, v in results.items()
        }
        step = {fw: statistics.median(x["median"] for x in v) for fw, v in results.items()}
        rss = {fw: statistics.median(x["rss_mib"] for x in v) for fw, v in results.items()}
        rows.append((model, steps, epoch, step, rss))
    print(
        f"\nload average {os.getloadavg()[0]:.1f} at end; medians of {args.repeat} runs; "
        f"an epoch = {STEPS_PER_EPOCH} steps of {BATCH}"
    )
    print(
        f"{'model':5s} {'timed steps':>11s} {'npnn s/epoch':>12s} {'torch s/epoch':>13s} {'ratio':>6s} "
        f"{'target':>6s} {'step ratio':>10s} {'npnn RSS':>9s} {'torch RSS':>9s} {'ratio':>6s}"
    )
    for model, steps, epoch, step, rss in rows:
        target = 0.7 if model == "mlp" else 1.0
        ratio = epoch["npnn"] / epoch["torch"]
        print(
            f"{model:5s} {steps:11d} {epoch['npnn']:12.1f} {epoch['torch']:13.1f} {ratio:6.2f} "
            f"{'<=' + str(target):>6s} {step['npnn'] / step['torch']:10.2f} "
            f"{rss['npnn']:8.0f}M {rss['torch']:8.0f}M {rss['npnn'] / rss['torch']:6.2f}"
        )
        if "numpy" in epoch:
            print(
                f"{'':5s} hand-written NumPy loop: {epoch['numpy']:.1f} s/epoch = "
                f"{epoch['numpy'] / epoch['torch']:.2f} of PyTorch's; npnn = "
                f"{epoch['npnn'] / epoch['numpy']:.2f} of the NumPy loop's"
            )


if __name__ == "__main__":
    main()
