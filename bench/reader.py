"""Reading scalars back: tbwriter.read_scalars vs TensorBoard's EventAccumulator and tbparse, same run.

Writes one event file of 400,000 scalars (4 tags) with a 64-value histogram after every 100
scalars (tbwriter.SummaryWriter), then reads every scalar back with each reader, taking
turns, and prints the median wall and CPU times and the ratios; also `python -m tbwriter
export` (in process) to CSV. Checks that all readers return the same values.

    python bench/reader.py [--scalars 400000] [--repeats 3]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tbwriter  # noqa: E402
from tbwriter import __main__ as cli  # noqa: E402

TAGS = ("loss", "accuracy", "train/learning_rate", "eval/loss")


def write_logdir(root: str, scalars: int) -> str:
    """A run of `scalars` scalars over TAGS with a histogram after every 100; returns the run's path."""
    run = os.path.join(root, "run")
    rng = np.random.default_rng(0)
    values = rng.random(scalars).astype(np.float32).tolist()
    with tbwriter.SummaryWriter(run) as w:
        for i, v in enumerate(values):
            w.add_scalar(TAGS[i % len(TAGS)], v, i // len(TAGS))
            if i % 100 == 99:
                w.add_histogram("weights", rng.standard_normal(64).astype(np.float32), i // len(TAGS))
    return run


def read_ours(path: str) -> dict:
    """{tag: (steps, values)} from tbwriter.read_scalars."""
    return {
        tag: (s.steps.tolist(), s.values.astype(float).tolist()) for tag, s in tbwriter.read_scalars(path)["."].items()
    }


def read_accumulator(path: str) -> dict:
    """{tag: (steps, values)} from TensorBoard's EventAccumulator, keeping every scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: ([e.step for e in acc.Scalars(tag)], [e.value for e in acc.Scalars(tag)]) for tag in acc.Tags()["scalars"]
    }


def read_tbparse(path: str) -> dict:
    """{tag: (steps, values)} from tbparse's SummaryReader(...).scalars DataFrame."""
    from tbparse import SummaryReader

    df = SummaryReader(path).scalars
    return {tag: (g["step"].tolist(), g["value"].tolist()) for tag, g in df.groupby("tag", sort=False)}


def export_csv(path: str) -> dict:
    """`python -m tbwriter export PATH --csv OUT`, in process; returns nothing to compare."""
    out = os.path.join(tempfile.mkdtemp(prefix="bench-reader-"), "o.csv")
    with open(os.devnull, "w") as null:
        code = cli.main(["export", path, "--csv", out], stdout=null, stderr=null)
    shutil.rmtree(os.path.dirname(out))
    assert code == 0
    return None


def timed(fn, path: str):
    """(wall seconds, CPU seconds, result) of fn(path)."""
    t, c = time.perf_counter(), time.process_time()
    result = fn(path)
    return time.perf_counter() - t, time.process_time() - c, result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scalars", type=int, default=400_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    root = tempfile.mkdtemp(prefix="bench-reader-")
    try:
        path = write_logdir(root, args.scalars)
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        print(
            f"{args.scalars:,} scalars + {args.scalars // 100:,} histograms, {size / 1e6:.1f} MB; "
            f"medians of {args.repeats} interleaved repeats; load {os.getloadavg()[0]:.1f}"
        )
        readers = {
            "read_scalars": read_ours,
            "EventAccumulator": read_accumulator,
            "tbparse": read_tbparse,
            "export --csv": export_csv,
        }
        times = {name: [] for name in readers}
        results = {}
        for _ in range(args.repeats):
            for name, fn in readers.items():
                wall, cpu, results[name] = timed(fn, path)
                times[name].append((wall, cpu))
        want = results["EventAccumulator"]
        for name in ("read_scalars", "tbparse"):
            same = results[name] == want
            print(f"{name} values equal EventAccumulator's: {same}")
        ours_wall = statistics.median(t[0] for t in times["read_scalars"])
        ours_cpu = statistics.median(t[1] for t in times["read_scalars"])
        for name, samples in times.items():
            wall = statistics.median(t[0] for t in samples)
            cpu = statistics.median(t[1] for t in samples)
            print(
                f"{name:18s} wall {wall:7.3f} s  cpu {cpu:7.3f} s   "
                f"vs read_scalars: {wall / ours_wall:6.1f}x wall, {cpu / ours_cpu:6.1f}x cpu"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
