"""Benchmark: data-parallel MNIST on one machine, 2 processes x 1 thread vs 1 process x 2 threads.

The models of `python -m npnn.mnist`, Adam(1e-3), global batch 100 on the real MNIST training
set. "1x2" is one process with 2 OpenBLAS threads and 2 optimizer threads; "2x1" is
`mpiexec -n 2` (each rank bound to one core, 1 thread each, 50 images per step) with one
allreduce of the gradients per step. The two take turns, --repeat times, medians compared.
Each step is split into forward, backward, allreduce (including waiting for the slower rank)
and optimizer; after training, the allreduce of the same buffer is timed alone 30 times right
after a barrier (the pure communication). The 2x1 ranks also record the CPU time of their one
thread (time.thread_time): on a loaded machine it stays near the work done, where wall time
does not. The last table is a paper model for 8 and 64 machines built from those CPU times
(docs/distributed.md explains it).

    python bench/distributed.py [--data DIR] [--repeat 3] [--mlp-steps 200] [--cnn-steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

SAMPLES = 60_000  # an epoch of MNIST
BATCH = 100  # the global batch
WARMUP = 3
# Named networks for the paper model: (name, bandwidth in bytes/s, latency per message in s).
NETWORKS = [("10 Gbit/s Ethernet, TCP", 10e9 / 8, 50e-6), ("100 Gbit/s InfiniBand EDR", 100e9 / 8, 2e-6)]


def worker(args) -> None:
    """Under mpiexec or alone: train, time each phase, print rank 0's JSON line."""
    import numpy as np

    import npnn
    from npnn import distributed as dist
    from npnn import functional as F
    from npnn import optim, parallel
    from npnn.datasets import load_mnist
    from npnn.mnist import MODELS

    dist.init()
    parallel.NUM_THREADS = args.threads
    d = load_mnist(args.data, flatten=args.model == "mlp", progress=False)
    npnn.manual_seed(0)
    model = MODELS[args.model]()
    params = list(model.parameters())
    opt = optim.Adam(params, lr=1e-3)
    dist.broadcast_parameters(params)
    rng = np.random.default_rng(1)
    phases = {
        "forward": [],
        "backward": [],
        "allreduce": [],
        "optimizer": [],
        "step": [],
        "forward_cpu": [],
        "backward_cpu": [],
        "optimizer_cpu": [],
    }
    nbytes = 0
    for i in range(args.steps + WARMUP):
        idx = dist.shard(rng.choice(len(d.train_labels), BATCH, replace=False))
        t0, c0 = time.perf_counter(), time.thread_time()
        loss = F.cross_entropy(model(npnn.Tensor(d.train_images[idx])), d.train_labels[idx])
        t1, c1 = time.perf_counter(), time.thread_time()
        opt.zero_grad()
        loss.backward()
        t2, c2 = time.perf_counter(), time.thread_time()
        if dist.size() > 1:
            nbytes = dist.allreduce_gradients(params)
        t3, c3 = time.perf_counter(), time.thread_time()
        opt.step()
        t4, c4 = time.perf_counter(), time.thread_time()
        if i >= WARMUP:
            for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0, c1 - c0, c2 - c1, c4 - c3)):
                phases[name].append(dt)
    alone = []
    for _ in range(30 if dist.size() > 1 else 0):
        dist.barrier()
        t = time.perf_counter()
        dist.allreduce_gradients(params)
        alone.append(time.perf_counter() - t)
    assert np.isfinite(loss.item())
    result = {name: statistics.median(v) for name, v in phases.items()}
    result.update(
        total=sum(phases["step"]),
        steps=args.steps,
        bytes=nbytes,
        allreduce_alone=statistics.median(alone) if alone else 0.0,
        allreduce_alone_min=min(alone) if alone else 0.0,
        params=sum(p.data.size for p in params),
        local_batch=len(idx),
    )
    if dist.rank() == 0:
        print(json.dumps(result))


def run(config: str, model: str, steps: int, args) -> dict:
    """One run of "1x2" or "2x1"; returns rank 0's JSON result."""
    threads = 2 if config == "1x2" else 1
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--model",
        model,
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ] + (["--data", args.data] if args.data else [])
    if config == "2x1":
        mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
        if mpiexec is None:
            sys.exit(
                "bench/distributed.py: no mpiexec next to Python or on PATH: pip install 'npnn-tbwriter[distributed]'"
            )
        cmd = [mpiexec, "-n", "2", *cmd]
        if os.geteuid() == 0:  # OpenMPI refuses root without these two (its documented opt-in)
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if out.returncode:
        raise RuntimeError(f"{config} {model} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ring_allreduce(nbytes: float, machines: int, bandwidth: float, latency: float) -> float:
    """Seconds of a ring allreduce: 2(M-1) messages of nbytes/M each, one after another."""
    return 2 * (machines - 1) * (latency + nbytes / machines / bandwidth)


def paper_model(model: str, ranks: dict) -> None:
    """Epoch time on M machines like this one (2 cores, 2 ranks x 1 thread each), from the
    2x1 ranks' CPU times; two batch rules (global batch 100, or 100 per machine)."""
    per_sample = (ranks["forward_cpu"] + ranks["backward_cpu"]) / ranks["local_batch"]
    optimizer = ranks["optimizer_cpu"]  # every rank applies the whole update each step
    backward_share = ranks["backward_cpu"] / (ranks["forward_cpu"] + ranks["backward_cpu"])
    nbytes = ranks["bytes"]
    print(
        f"\npaper model, {model}: {per_sample * 1e6:.0f} us CPU/sample forward+backward on one core, "
        f"optimizer {optimizer * 1e3:.1f} ms CPU/step, backward {backward_share:.0%} of forward+backward, "
        f"{nbytes / 1e6:.2f} MB allreduced per step, 2 ranks per machine"
    )
    print(
        f"{'network':26s} {'machines':>8s} {'batch rule':>15s} {'steps':>5s} {'compute s':>9s} "
        f"{'allreduce s':>11s} {'epoch s':>8s} {'overlapped s':>12s} {'comm share':>10s}"
    )
    for name, bandwidth, latency in NETWORKS:
        for machines in (1, 8, 64):
            for rule, global_batch in (("global 100", BATCH), ("100 per machine", BATCH * machines)):
                if machines == 1 and rule != "global 100":
                    continue
                steps = SAMPLES / global_batch
                local = global_batch / (2 * machines)
                step_compute = per_sample * local + optimizer
                comm = ring_allreduce(nbytes, 2 * machines, bandwidth, latency) if machines > 1 else 0.0
                # Overlap: buckets finished early in backward are reduced while the rest computes.
                hidden = min(comm, per_sample * local * backward_share)
                epoch, overlapped = steps * (step_compute + comm), steps * (step_compute + comm - hidden)
                print(
                    f"{name:26s} {machines:8d} {rule:>15s} {steps:5.0f} {steps * step_compute:9.2f} "
                    f"{steps * comm:11.2f} {epoch:8.2f} {overlapped:12.2f} {comm / (step_compute + comm):10.0%}"
                )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="MNIST directory (default: npnn's default)")
    p.add_argument("--repeat", type=int, default=3, help="runs per configuration and model (medians)")
    p.add_argument("--mlp-steps", type=int, default=200, help="timed MLP steps per run (scaled to an epoch)")
    p.add_argument("--cnn-steps", type=int, default=20, help="timed CNN steps per run (scaled to an epoch)")
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", choices=["mlp", "cnn"], help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
        f"global batch {BATCH}, an epoch = {SAMPLES // BATCH} steps"
    )
    rows = []
    for model in args.models:
        steps = args.mlp_steps if model == "mlp" else args.cnn_steps
        results = {"1x2": [], "2x1": []}
        for r in range(args.repeat):
            for config in ["1x2", "2x1"] if r % 2 == 0 else ["2x1", "1x2"]:  # alternate
                res = run(config, model, steps, args)
                results[config].append(res)
                print(
                    f"  {model} {config} run {r + 1}: {res['total'] * SAMPLES / BATCH / res['steps']:6.1f} s/epoch, "
                    f"step {res['step'] * 1e3:6.1f} ms (forward {res['forward'] * 1e3:.1f}, backward "
                    f"{res['backward'] * 1e3:.1f}, allreduce {res['allreduce'] * 1e3:.1f}, optimizer "
                    f"{res['optimizer'] * 1e3:.1f}); allreduce alone {res['allreduce_alone'] * 1e3:.2f} ms "
                    f"(fastest {res['allreduce_alone_min'] * 1e3:.2f})",
                    flush=True,
                )
        med = {c: {k: statistics.median(x[k] for x in v) for k in v[0]} for c, v in results.items()}
        rows.append((model, med))
    print(f"\nload average {os.getloadavg()[0]:.1f} at end; medians of {args.repeat} runs each")
    print(
        f"{'model':5s} {'1x2 s/epoch':>11s} {'2x1 s/epoch':>11s} {'2x1/1x2':>7s} {'allreduce ms/step':>17s} "
        f"{'alone ms':>8s} {'fastest ms':>10s} {'MB/step':>7s} {'GB/s fastest':>12s}"
    )
    for model, med in rows:
        one, two = med["1x2"], med["2x1"]
        e1, e2 = (m["total"] * SAMPLES / BATCH / m["steps"] for m in (one, two))
        print(
            f"{model:5s} {e1:11.1f} {e2:11.1f} {e2 / e1:7.2f} {two['allreduce'] * 1e3:17.2f} "
            f"{two['allreduce_alone'] * 1e3:8.2f} {two['allreduce_alone_min'] * 1e3:10.2f} "
            f"{two['bytes'] / 1e6:7.2f} {two['bytes'] / two['allreduce_alone_min'] / 1e9:12.2f}"
        )
    for model, med in rows:
        paper_model(model, med["2x1"])


if __name__ == "__main__":
    main()
