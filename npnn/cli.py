"""What `python -m npnn.xor` and `python -m npnn.mnist` share: flag checks that fail in one
line before any work, and one run directory per run."""

from __future__ import annotations

import argparse
import glob
import math
import os


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, "<prog>: error: argument --flag: ...", exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def fail(self, flag: str, problem: str):
        """Exit 2 with one line naming the flag."""
        self.error(f"argument {flag}: {problem}")


def integer(minimum: int):
    """argparse type: an int >= minimum ("expected an integer >= 1, got 'one'")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def positive_number(text: str) -> float:
    """argparse type: a finite float > 0 ("expected a positive number, got 'fast'")."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def directory_problem(path: str) -> str | None:
    """Why files cannot be written into directory path (created if missing), or None."""
    if "://" in path:  # a remote logdir: tbwriter checks it when the writer opens it
        return None
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a directory"
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    where = "" if existing == os.path.abspath(path) else f"{path}: "
    if not os.path.isdir(existing):
        return f"{where}{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{where}{existing} is not writable"
    return None


def file_problem(path: str) -> str | None:
    """Why a file cannot be written at path, or None."""
    if os.path.isdir(path):
        return f"{path} is a directory, not a file"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    problem = directory_problem(os.path.dirname(os.path.abspath(path)))
    return problem and f"{path}: {problem}"


def event_files(run_dir: str) -> list[str]:
    """The event files in run_dir: what makes it a run TensorBoard shows."""
    return glob.glob(os.path.join(glob.escape(run_dir), "*tfevents*"))


def new_run_dir(run_dir: str) -> str:
    """run_dir if it holds no run yet, else the first of run_dir_run2, _run3, ... that holds none.

    A rerun gets its own run: appending it to the old one would show TensorBoard one run with
    two curves, and pair the old run's hparams with the new run's values.
    """
    if not event_files(run_dir):
        return run_dir
    n = 2
    while event_files(f"{run_dir}_run{n}"):
        n += 1
    return f"{run_dir}_run{n}"
