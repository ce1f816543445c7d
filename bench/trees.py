"""Before/after: npnn's own programs (the XOR lab, a short MNIST run) timed as whole processes
with two source trees taking turns (e.g. `git archive <before> | tar -x -C /tmp/before`).

    python bench/trees.py /tmp/before . [--repeat 5] [--data DIR] [--mnist-limit 10000]

Each run is a fresh process with PYTHONPATH set to one tree, into a fresh logdir; medians.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(tree: str, args: list) -> float:
    """Seconds of one `python <args>` run with `tree` first on the path, into a fresh logdir."""
    d = tempfile.mkdtemp(prefix="bench-trees-")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTHONWARNINGS="ignore")
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, *[a.replace("{logdir}", d) for a in args]], env=env, capture_output=True)
        if proc.returncode:
            sys.exit(f"{tree}: {' '.join(args)} failed:\n{proc.stderr.decode()[-2000:]}")
        return time.perf_counter() - t
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", default=None, help="MNIST directory (default: npnn's)")
    ap.add_argument("--mnist-limit", type=int, default=10000, help="training images of the MNIST run (one epoch)")
    args = ap.parse_args()
    data = ["--data", args.data] if args.data else []
    programs = {
        "XOR lab (python -m npnn.xor --quiet)": ["-m", "npnn.xor", "--quiet", "--overwrite", "--logdir", "{logdir}"],
        f"MNIST MLP, 1 epoch of {args.mnist_limit} images": [
            "-m",
            "npnn.mnist",
            *data,
            "--epochs",
            "1",
            "--limit",
            str(args.mnist_limit),
            "--test-limit",
            "2000",
            "--no-progress",
            "--logdir",
            "{logdir}",
        ],
    }
    print(f"before {args.before}, after {args.after}, medians of {args.repeat}, load {os.getloadavg()[0]:.1f}")
    for name, prog in programs.items():
        runs = {"before": [], "after": []}
        for _ in range(args.repeat):
            for which in runs:
                runs[which].append(timed(getattr(args, which), prog))
        b, a = statistics.median(runs["before"]), statistics.median(runs["after"])
        print(f"{name:45s} before {b:6.2f} s   after {a:6.2f} s   after/before {a / b:.3f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
