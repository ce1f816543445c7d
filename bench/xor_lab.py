"""Benchmark: the whole XOR TensorBoard lab, npnn vs PyTorch (+tensorboardX / torch.utils.tensorboard) vs TF1.

Each program runs the full lab (10001 steps, 6 histograms + 2 scalars written every step, the
graph, close) as a whole subprocess, timed end to end (interpreter start, imports, training,
writing, exit); medians over --repeat runs, all measured in this one run. It also times training
alone (no logging) of npnn against PyTorch, and reports the event-file sizes.

    python bench/xor_lab.py [--repeat 3] [--steps 10001] [--tf-python /path/to/python]

TF1 graph mode (`tf.compat.v1`) runs under the interpreter given by --tf-python or the
NPNN_BENCH_TF_PYTHON environment variable (a venv with tensorflow-cpu); without it, or with torch /
tensorboardX missing, that peer is reported as absent. The child programs live in this file
(`--child NAME LOGDIR`) and import only what their framework needs.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

X_DATA = [[0, 0], [0, 1], [1, 0], [1, 1]]
Y_DATA = [[0], [1], [1], [0]]


def _report(loop_secs: float, accuracy: float, cost: float) -> None:
    """Print the child's result as the last line of stdout (JSON), read by the parent."""
    print(json.dumps({"loop": loop_secs, "accuracy": float(accuracy), "cost": float(cost)}))


def child_torch(logdir: str, steps: int, writer_kind: str) -> None:
    """The lab in PyTorch; writer_kind is 'tensorboardX', 'torch' (torch.utils.tensorboard) or 'none'."""
    import torch

    if writer_kind == "tensorboardX":
        from tensorboardX import SummaryWriter
    elif writer_kind == "torch":
        from torch.utils.tensorboard import SummaryWriter
    torch.manual_seed(777)
    x = torch.tensor(X_DATA, dtype=torch.float32)
    y = torch.tensor(Y_DATA, dtype=torch.float32)

    class XOR(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W1 = torch.nn.Parameter(torch.randn(2, 2))
            self.b1 = torch.nn.Parameter(torch.randn(2))
            self.W2 = torch.nn.Parameter(torch.randn(2, 1))
            self.b2 = torch.nn.Parameter(torch.randn(1))

        def forward(self, x):
            layer1 = torch.sigmoid(x @ self.W1 + self.b1)
            return layer1, torch.sigmoid(layer1 @ self.W2 + self.b2)

    model = XOR()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    writer = None
    if writer_kind != "none":
        writer = SummaryWriter(logdir)
        writer.add_graph(model, x)
    t0 = time.perf_counter()
    for step in range(steps):
        layer1, h = model(x)
        cost = -(y * torch.log(h) + (1 - y) * torch.log(1 - h)).mean()
        if writer is not None:
            with torch.no_grad():
                accuracy = ((h > 0.5).float() == y).float().mean()
            writer.add_histogram("Layer1/W1", model.W1, step)
            writer.add_histogram("Layer1/B1", model.b1, step)
            writer.add_histogram("Layer1/Layer1", layer1, step)
            writer.add_histogram("Layer2/W2", model.W2, step)
            writer.add_histogram("Layer2/B2", model.b2, step)
            writer.add_histogram("Layer2/Hypothesis", h, step)
            writer.add_scalar("Cost/Cost", cost.item(), step)
            writer.add_scalar("accuracy", accuracy.item(), step)
        opt.zero_grad()
        cost.backward()
        opt.step()
    loop = time.perf_counter() - t0
    with torch.no_grad():
        _, h = model(x)
        cost = -(y * torch.log(h) + (1 - y) * torch.log(1 - h)).mean()
        accuracy = ((h > 0.5).float() == y).float().mean()
    if writer is not None:
        writer.close()
    _report(loop, accuracy.item(), cost.item())


def child_tf1(logdir: str, steps: int, seed: int = 777) -> None:
    """The lab as the course wrote it: TensorFlow 1 graph mode through tf.compat.v1."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    tf1.set_random_seed(seed)
    x_data = np.array(X_DATA, dtype=np.float32)
    y_data = np.array(Y_DATA, dtype=np.float32)
    X = tf1.placeholder(tf.float32, [None, 2], name="x")
    Y = tf1.placeholder(tf.float32, [None, 1], name="y")
    with tf.name_scope("Layer1"):
        W1 = tf.Variable(tf1.random_normal([2, 2]), name="weight_1")
        b1 = tf.Variable(tf1.random_normal([2]), name="bias_1")
        layer1 = tf.sigmoid(tf.matmul(X, W1) + b1)
        tf1.summary.histogram("W1", W1)
        tf1.summary.histogram("B1", b1)
        tf1.summary.histogram("Layer1", layer1)
    with tf.name_scope("Layer2"):
        W2 = tf.Variable(tf1.random_normal([2, 1]), name="weight_2")
        b2 = tf.Variable(tf1.random_normal([1]), name="bias_2")
        hypothesis = tf.sigmoid(tf.matmul(layer1, W2) + b2)
        tf1.summary.histogram("W2", W2)
        tf1.summary.histogram("B2", b2)
        tf1.summary.histogram("Hypothesis", hypothesis)
    with tf.name_scope("Cost"):
        cost = -tf.reduce_mean(Y * tf1.log(hypothesis) + (1 - Y) * tf1.log(1 - hypothesis))
        tf1.summary.scalar("Cost", cost)
    with tf.name_scope("Train"):
        train = tf1.train.AdamOptimizer(learning_rate=0.01).minimize(cost)
    predicted = tf.cast(hypothesis > 0.5, dtype=tf.float32)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(predicted, Y), dtype=tf.float32))
    tf1.summary.scalar("accuracy", accuracy)
    with tf1.Session() as sess:
        merged_summary = tf1.summary.merge_all()
        writer = tf1.summary.FileWriter(logdir)
        writer.add_graph(sess.graph)
        sess.run(tf1.global_variables_initializer())
        feed = {X: x_data, Y: y_data}
        t0 = time.perf_counter()
        for step in range(steps):
            _, summary, cost_val = sess.run([train, merged_summary, cost], feed_dict=feed)
            writer.add_summary(summary, global_step=step)
        loop = time.perf_counter() - t0
        a, c = sess.run([accuracy, cost], feed_dict=feed)
        writer.close()
    _report(loop, a, c)


def child_npnn_train(steps: int) -> None:
    """npnn's lab training loop alone (no summaries, no writer): the 'training alone' figure."""
    from xor_step import npnn_forward, npnn_setup  # bench/xor_step.py: the same net, seed and Adam

    import npnn

    x, y, W1, b1, W2, b2, opt = npnn_setup()
    t0 = time.perf_counter()
    for _ in range(steps):
        cost = npnn_forward(x, y, W1, b1, W2, b2)[1]
        opt.zero_grad()
        cost.backward()
        opt.step()
    loop = time.perf_counter() - t0
    with npnn.no_grad():
        h, cost = npnn_forward(x, y, W1, b1, W2, b2)
    accuracy = float(((h.data > 0.5) == y.data).mean())
    _report(loop, accuracy, cost.item())


def run_child(cmd: list, logdir: Path) -> dict:
    """Run one program as a subprocess into a fresh logdir; return wall time, its report, event bytes."""
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir(parents=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    report = {}
    lines = proc.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        report = json.loads(lines[-1])
    else:  # npnn.xor prints "Accuracy: 1.0" like the lab
        for line in lines:
            if line.startswith("Accuracy:"):
                report["accuracy"] = float(line.split()[1])
    size = sum(f.stat().st_size for f in logdir.rglob("*") if f.is_file())
    return {"wall": wall, "size": size, **report}


def compare_sizes(programs: dict, absent: dict, seeds: list) -> None:
    """Event-file bytes of the npnn and TF1 labs for each seed, and the ratio of their medians."""
    if "tf1" in absent:
        raise SystemExit(f"TF1 is absent: {absent['tf1']}")
    tmp = Path(tempfile.mkdtemp(prefix="xor-lab-sizes-"))
    sizes = {"npnn": [], "tf1": []}
    try:
        for seed in seeds:
            acc = {}
            for n in sizes:
                cmd = [a.replace("{logdir}", str(tmp / n)) for a in programs[n][0]] + ["--seed", str(seed)]
                r = run_child(cmd, tmp / n)
                sizes[n].append(r["size"])
                acc[n] = r.get("accuracy")
            print(
                f"seed {seed:6d}: npnn {sizes['npnn'][-1] / 1e6:6.2f} MB (accuracy {acc['npnn']})  "
                f"TF1 {sizes['tf1'][-1] / 1e6:6.2f} MB (accuracy {acc['tf1']})",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = statistics.median(sizes["npnn"]), statistics.median(sizes["tf1"])
    print(
        f"median over {len(seeds)} seeds: npnn {a / 1e6:.2f} MB, TF1 {b / 1e6:.2f} MB, npnn / TF1 {a / b:.2f} "
        f"(target <= 1: {'meets' if a <= b else 'MISSES'})"
    )


def main() -> None:
    """Parse flags, run every available program --repeat times, print the table and the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per program (medians are reported)")
    p.add_argument(
        "--slow-repeat",
        type=int,
        default=1,
        help="runs of the PyTorch programs that log (each takes 20-30 s; default 1)",
    )
    p.add_argument("--steps", type=int, default=10001, help="training steps (the lab: 10001)")
    p.add_argument(
        "--tf-python",
        default=os.environ.get("NPNN_BENCH_TF_PYTHON"),
        help="python with tensorflow for the TF1 peer (default: $NPNN_BENCH_TF_PYTHON)",
    )
    p.add_argument("--only", action="append", help="run only these programs (repeatable)")
    p.add_argument(
        "--size-seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="instead of timing: event-file sizes of npnn and TF1 for each seed (the "
        "histograms' sparse size depends on where training ends, so one seed is anecdote)",
    )
    p.add_argument("--seed", type=int, default=777, help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=2, metavar=("NAME", "LOGDIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        name, logdir = args.child
        if name == "tf1":
            child_tf1(logdir, args.steps, args.seed)
        elif name == "npnn-train":
            child_npnn_train(args.steps)
        else:
            child_torch(
                logdir, args.steps, {"torch-tbx": "tensorboardX", "torch-tb": "torch", "torch-train": "none"}[name]
            )
        return

    me = str(Path(__file__).resolve())
    py = sys.executable

    def child(name, exe=py):
        return [exe, me, "--child", name, "{logdir}", "--steps", str(args.steps)]

    programs = {
        "npnn": (
            [py, "-m", "npnn.xor", "--quiet", "--overwrite", "--logdir", "{logdir}", "--steps", str(args.steps)],
            "npnn + tbwriter (python -m npnn.xor --quiet)",
        ),
        "tf1": (child("tf1", args.tf_python) if args.tf_python else None, "TensorFlow 1 graph mode (tf.compat.v1)"),
        "torch-tbx": (child("torch-tbx"), "PyTorch + tensorboardX"),
        "torch-tb": (child("torch-tb"), "PyTorch + torch.utils.tensorboard"),
        "npnn-train": (child("npnn-train"), "npnn training alone (no logging)"),
        "torch-train": (child("torch-train"), "PyTorch training alone (no logging)"),
    }
    absent = {}
    if not args.tf_python:
        absent["tf1"] = "no --tf-python / NPNN_BENCH_TF_PYTHON given"
    elif subprocess.run([args.tf_python, "-c", "import tensorflow"], capture_output=True).returncode:
        absent["tf1"] = f"{args.tf_python} cannot import tensorflow"
    for mod, names in (("torch", ["torch-tbx", "torch-tb", "torch-train"]), ("tensorboardX", ["torch-tbx"])):
        if subprocess.run([py, "-c", f"import {mod}"], capture_output=True).returncode:
            for n in names:
                absent.setdefault(n, f"{mod} is not installed")
    if args.size_seeds:
        return compare_sizes(programs, absent, args.size_seeds)
    order = [n for n in programs if not args.only or n in args.only]
    results = {n: [] for n in order if n not in absent}
    tmp = Path(tempfile.mkdtemp(prefix="xor-lab-bench-"))
    try:
        # Interleave the programs so that machine noise spreads over all of them alike.
        slow = {"torch-tbx", "torch-tb"}
        for i in range(args.repeat):
            for n in results:
                if n in slow and i >= args.slow_repeat:
                    continue
                cmd = [a.replace("{logdir}", str(tmp / n)) for a in programs[n][0]]
                results[n].append(run_child(cmd, tmp / n))
                r = results[n][-1]
                print(f"  {n}: {r['wall']:.2f} s, {r['size'] / 1e6:.2f} MB", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {
        n: {k: statistics.median(r[k] for r in rs) for k in ("wall", "size", "loop") if k in rs[0]}
        | {"accuracy": rs[-1].get("accuracy")}
        for n, rs in results.items()
    }
    print(
        f"XOR lab, {args.steps} steps, medians of {args.repeat} runs ({args.slow_repeat} for PyTorch + writers); "
        f"whole process, wall seconds; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'program':48} {'process s':>9} {'loop s':>7} {'events MB':>9} {'accuracy':>8}")
    for n in order:
        label = programs[n][1]
        if n in absent:
            print(f"{label:48} absent: {absent[n]}")
            continue
        m = med[n]
        loop = f"{m['loop']:7.2f}" if "loop" in m else f"{'-':>7}"
        size = f"{m['size'] / 1e6:9.2f}" if m["size"] else f"{'-':>9}"
        print(f"{label:48} {m['wall']:9.2f} {loop} {size} {m['accuracy']!s:>8}")
    print()

    def ratio(label: str, a: str, b: str, key: str, target: float) -> None:
        if a in med and b in med and key in med[a] and key in med[b]:
            r = med[b][key] / med[a][key]
            verdict = "meets" if r >= target else "MISSES"
            print(f"{label:58} {r:6.2f}x  (target >= {target}x: {verdict})")
        else:
            print(f"{label:58} n/a ({b if b not in med else a} not measured)")

    ratio("npnn whole process vs TF1 (TF1 time / npnn time)", "npnn", "tf1", "wall", 6)
    ratio("npnn whole process vs PyTorch + tensorboardX", "npnn", "torch-tbx", "wall", 12)
    ratio("npnn whole process vs PyTorch + torch.utils.tensorboard", "npnn", "torch-tb", "wall", 12)
    ratio("npnn training alone vs PyTorch (loop time)", "npnn-train", "torch-train", "loop", 2)
    ratio("npnn training alone vs PyTorch (whole process)", "npnn-train", "torch-train", "wall", 2)
    if "npnn" in med and "tf1" in med:
        a, b = med["npnn"]["size"], med["tf1"]["size"]
        # The sparse histograms' size follows each run's trajectory (another RNG): --size-seeds compares seeds.
        print(f"{'event file size npnn / TF1 (one seed each)':58} {a / b:6.2f}")


if __name__ == "__main__":
    main()
