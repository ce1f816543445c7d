"""The course lab "TensorBoard for XOR NN" on npnn + tbwriter: `python -m npnn.xor`.

The five steps of the lab, written the npnn way (`lab` below): 1. name the scopes and record
the summaries, 2. merge them, 3. open a FileWriter and add the graph, 4. write the merged
summary every step, 5. look at it with `tensorboard --logdir logs/xor_logs`.
`python -m npnn.xor --help` lists the flags (several --lr values give one run each).
"""

from __future__ import annotations

import os
import shlex
import sys

import numpy as np

import npnn
from npnn import Parameter, Tensor, cli, init, name_scope, optim, plan, summary
from tbwriter import FileWriter


def lab(
    logdir: str = "logs/xor_logs",
    lr: float = 0.01,
    steps: int = 10001,
    seed: int = 777,
    optimizer: str = "adam",
    log_every: int = 1,
    quiet: bool = False,
) -> dict:
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

    with name_scope("Train"):  # the optimizer's nodes go in the Train box, as in TF1
        train = optim.Adam([W1, b1, W2, b2], lr=lr) if optimizer == "adam" else optim.SGD([W1, b1, W2, b2], lr=lr)

    def train_step(X, Y):  # traced once for the graph: Train/gradients fed by the cost, Train/Adam
        hypothesis, cost, accuracy = forward(X, Y)
        train.zero_grad()
        cost.backward()
        train.step()
        return cost

    writer = FileWriter(logdir)  # Step 3: the writer and the graph
    writer.add_graph(npnn.trace(train_step, X, Y))
    # Like TF1's graph, the step is recorded once and replayed (npnn.plan), bit-identical to
    # calling forward, cost.backward() and train.step(); its summaries read the replayed values.
    run = plan.compile(lambda X, Y: forward(X, Y)[1], train)
    try:
        for step in range(steps):  # Step 4: train, writing the merged summary (Step 2) every step
            cost = run.forward_backward(X, Y)
            if step % log_every == 0:  # before the update, as sess.run([merged, train]) evaluates it
                writer.add_summary(summary.merge_all(), global_step=step)
            run.update()
            if not quiet and step % 100 == 0:
                print(step, cost.item())
        with npnn.no_grad():
            hypothesis, cost, accuracy = forward(X, Y)
        # HPARAMS: this run's settings; its metrics are the last Cost/Cost and accuracy TensorBoard read.
        writer.add_hparams({"lr": lr, "optimizer": optimizer, "steps": steps, "seed": seed}, {})
    finally:  # on Ctrl-C too: the steps written so far stay readable
        writer.close()
    return {
        "logdir": logdir,
        "hypothesis": hypothesis.data,
        "predicted": (hypothesis.data > 0.5).astype(np.float32),
        "accuracy": accuracy.item(),
        "cost": cost.item(),
    }


def _parser() -> cli.Parser:
    p = cli.Parser(prog="python -m npnn.xor", description=__doc__.splitlines()[0])
    p.add_argument(
        "--logdir",
        default="logs/xor_logs",
        help="where the runs go, one directory each: LOGDIR/lr_<lr> (default: %(default)s)",
    )
    p.add_argument(
        "--lr",
        type=cli.positive_number,
        action="append",
        help="learning rate (default 0.01); repeat it for one run per value",
    )
    p.add_argument("--steps", type=cli.integer(1), default=10001, help="training steps (default: %(default)s)")
    p.add_argument(
        "--seed", type=cli.integer(0), default=777, help="seed of the initial weights (default: %(default)s)"
    )
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="(default: %(default)s)")
    p.add_argument(
        "--log-every",
        type=cli.integer(1),
        default=1,
        metavar="N",
        help="write the merged summary every N steps (default: 1, every step as the lab)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-100-steps progress lines")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the event files of a run directory that holds a run "
        "(default: the rerun goes to a new directory, LOGDIR/lr_<lr>_run2, ...)",
    )
    return p


def run_name(lr: float, optimizer: str) -> str:
    """The run directory's name: what distinguishes the run (lr_0.01, lr_0.1_sgd)."""
    return f"lr_{lr:g}" + ("" if optimizer == "adam" else f"_{optimizer}")


def main(argv=None) -> list:
    """Parse the flags, run the lab once per learning rate, print the results and how to view them."""
    parser = _parser()
    args = parser.parse_args(argv)
    problem = cli.directory_problem(args.logdir)
    if problem:
        parser.fail("--logdir", problem)
    runs = []
    for lr in dict.fromkeys(args.lr or [0.01]):
        run_dir = os.path.join(args.logdir, run_name(lr, args.optimizer))
        if args.overwrite:
            cli.remove_files(cli.event_files(run_dir))
        else:
            fresh = cli.new_run_dir(run_dir)
            if fresh != run_dir:
                print(f"{run_dir} already holds a run: this one goes to {fresh} (--overwrite replaces the old one)")
            run_dir = fresh
        runs.append((lr, run_dir))
    results = []
    for lr, run_dir in runs:
        if len(runs) > 1:
            print(f"== run {run_dir} (lr={lr:g}, {args.optimizer})")
        try:
            r = lab(run_dir, lr, args.steps, args.seed, args.optimizer, args.log_every, args.quiet)
        except KeyboardInterrupt:
            raise cli.Interrupted(f"run {run_dir} holds the steps written before the interrupt") from None
        if not args.quiet:
            print(f"\nHypothesis:\n{r['hypothesis']}\nPredicted:\n{r['predicted']}")
        print(f"Accuracy: {r['accuracy']}")
        results.append(r)
    print(f"\nView it in TensorBoard:  tensorboard --logdir {shlex.quote(args.logdir)}")
    print(
        "On a remote machine, forward the port first:  ssh -L 7007:127.0.0.1:6006 user@host  "
        "(then open http://127.0.0.1:7007)"
    )
    return results


def command(argv=None) -> int:
    """python -m npnn.xor: main() as a program, exit 0; Ctrl-C is one line and exit 130."""

    def program(argv) -> int:
        main(argv)
        return 0

    return cli.run_main("python -m npnn.xor", program, argv)


if __name__ == "__main__":
    sys.exit(command())
