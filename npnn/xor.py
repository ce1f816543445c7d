"""The course lab "TensorBoard for XOR NN" on npnn + tbwriter: `python -m npnn.xor`.

The five steps of the lab, written the npnn way (`lab` below): 1. name the scopes and record
the summaries, 2. merge them, 3. open a FileWriter and add the graph, 4. write the merged
summary every step, 5. look at it with `tensorboard --logdir logs/xor_logs`.
`python -m npnn.xor --help` lists the flags (several --lr values give one run each).
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import shlex
import sys
import time

import numpy as np

import npnn
from npnn import Parameter, Tensor, init, name_scope, optim, summary
from tbwriter import FileWriter
from tbwriter.summary import hparams


def lab(logdir: str = "logs/xor_logs", lr: float = 0.01, steps: int = 10001, seed: int = 777,
        optimizer: str = "adam", log_every: int = 1, quiet: bool = False) -> dict:
    """Train the XOR net, logging the lab's summaries into logdir; return the final results."""
    npnn.manual_seed(seed)
    summary.clear()
    X = Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32), name="x")
    Y = Tensor(np.array([[0], [1], [1], [0]], np.float32), name="y")
    with name_scope("Layer1"):
        W1 = Parameter(init.normal([2, 2]), name="weight_1")  # like tf.random_normal
        b1 = Parameter(init.normal([2]), name="bias_1")
    with name_scope("Layer2"):
        W2 = Parameter(init.normal([2, 1]), name="weight_2")
        b2 = Parameter(init.normal([1]), name="bias_2")

    def forward(X, Y):  # Step 1: scopes and summaries (recorded tensors, read at merge time)
        with name_scope("Layer1"):
            layer1 = npnn.sigmoid(X @ W1 + b1)
            summary.histogram("W1", W1), summary.histogram("B1", b1), summary.histogram("Layer1", layer1)
        with name_scope("Layer2"):
            hypothesis = npnn.sigmoid(layer1 @ W2 + b2)
            summary.histogram("W2", W2), summary.histogram("B2", b2)
            summary.histogram("Hypothesis", hypothesis)
        with name_scope("Cost"):
            cost = -(Y * npnn.log(hypothesis) + (1 - Y) * npnn.log(1 - hypothesis)).mean()
            summary.scalar("Cost", cost)
        accuracy = ((hypothesis > 0.5).float() == Y).float().mean()
        summary.scalar("accuracy", accuracy)
        return hypothesis, cost, accuracy

    with name_scope("Train"):
        train = optim.Adam([W1, b1, W2, b2], lr=lr) if optimizer == "adam" else optim.SGD([W1, b1, W2, b2], lr=lr)
    graph = npnn.trace(forward, X, Y)
    grads = graph.add_node("Train/gradients", "Gradients", ["Cost/Neg"])
    graph.add_node(f"Train/{type(train).__name__}", "Apply" + type(train).__name__,
                   [grads, "Layer1/weight_1", "Layer1/bias_1", "Layer2/weight_2", "Layer2/bias_2"])

    writer = FileWriter(logdir)  # Step 3: the writer and the graph
    writer.add_graph(graph)
    hp = {"lr": lr, "optimizer": optimizer, "steps": steps, "seed": seed}
    start, group = time.time(), os.path.basename(os.path.normpath(logdir))  # HPARAMS' trial id
    writer.add_summary(hparams(hp, {}, group_name=group, start_time_secs=start)[1])  # HPARAMS session start
    for step in range(steps):  # Step 4: train, writing the merged summary (Step 2) every step
        hypothesis, cost, accuracy = forward(X, Y)
        if step % log_every == 0:
            writer.add_summary(summary.merge_all(), global_step=step)
        train.zero_grad()
        cost.backward()
        train.step()
        if not quiet and step % 100 == 0:
            print(step, cost.item())
    with npnn.no_grad():
        hypothesis, cost, accuracy = forward(X, Y)
    writer.add_summary(hparams(hp, {}, group_name=group, start_time_secs=start)[2])  # session end, timed now
    writer.close()
    return {"logdir": logdir, "hypothesis": hypothesis.data, "predicted": (hypothesis.data > 0.5).astype(np.float32),
            "accuracy": accuracy.item(), "cost": cost.item()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m npnn.xor", description=__doc__.splitlines()[0])
    p.add_argument("--logdir", default="logs/xor_logs", help="where the run(s) go (default: %(default)s)")
    p.add_argument("--lr", type=float, action="append",
                   help="learning rate (default 0.01); repeat it for one run per value in LOGDIR/lr_<value>")
    p.add_argument("--steps", type=int, default=10001, help="training steps (default: %(default)s)")
    p.add_argument("--seed", type=int, default=777, help="seed of the initial weights (default: %(default)s)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="(default: %(default)s)")
    p.add_argument("--log-every", type=int, default=1, metavar="N",
                   help="write the merged summary every N steps (default: 1, every step as the lab)")
    p.add_argument("--quiet", action="store_true", help="no per-100-steps progress lines")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the event files of an existing run first (default: append to it)")
    return p


def _fail(msg: str):
    """One line on stderr and exit status 2, like argparse's own errors."""
    print(f"python -m npnn.xor: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _prepare(run_dir: str, overwrite: bool) -> None:
    """Create run_dir (or check it is writable); with overwrite, delete its event files."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
        if overwrite:
            for f in glob.glob(os.path.join(glob.escape(run_dir), "events.out.tfevents.*")):
                os.remove(f)
    except OSError as e:
        _fail(f"--logdir: cannot write into {run_dir!r} ({e.strerror or e})")


def main(argv=None) -> list:
    """Parse the flags, run the lab once per learning rate, print the results and how to view them."""
    args = _parser().parse_args(argv)
    lrs = list(dict.fromkeys(args.lr or [0.01]))
    for lr in lrs:
        if not (lr > 0 and math.isfinite(lr)):
            _fail(f"--lr must be a positive number, got {lr}")
    if args.steps < 1:
        _fail(f"--steps must be >= 1, got {args.steps}")
    if args.log_every < 1:
        _fail(f"--log-every must be >= 1, got {args.log_every}")
    runs = [(lr, args.logdir if len(lrs) == 1 else os.path.join(args.logdir, f"lr_{lr:g}")) for lr in lrs]
    for _, run_dir in runs:
        _prepare(run_dir, args.overwrite)
    results = []
    for lr, run_dir in runs:
        if len(runs) > 1:
            print(f"== run {run_dir} (lr={lr:g}, {args.optimizer})")
        r = lab(run_dir, lr, args.steps, args.seed, args.optimizer, args.log_every, args.quiet)
        if not args.quiet:
            print(f"\nHypothesis:\n{r['hypothesis']}\nPredicted:\n{r['predicted']}")
        print(f"Accuracy: {r['accuracy']}")
        results.append(r)
    print(f"\nView it in TensorBoard:  tensorboard --logdir {shlex.quote(args.logdir)}")
    print("On a remote machine, forward the port first:  ssh -L 7007:127.0.0.1:6006 user@host  "
          "(then open http://127.0.0.1:7007)")
    return results


if __name__ == "__main__":
    main()
