"""What `python -m npnn.xor` and `python -m npnn.mnist` share: flag checks that fail in one
line before any work, and one run directory per run."""

from __future__ import annotations

import argparse
import errno
import glob
import math
import os
import posixpath
import re
import signal
import sys
import tempfile
import threading
import time


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
    """Why files cannot be written into directory path (created if missing), or None.

    Tried, not read from permission bits (root passes those, /proc refuses anyway): a probe
    file in the directory, or a probe directory in its nearest existing parent, made and removed.
    """
    if "://" in path:
        return url_problem(path)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"{path} is a file, not a directory"
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    where = "" if existing == os.path.abspath(path) else f"{path}: "
    if not os.path.isdir(existing):
        return f"{where}{existing} is a file, not a directory"
    try:
        if where:
            os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=existing))
        else:
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=existing)
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{where}{existing} is not writable"
        return f"{where}cannot create anything in {existing}: {e.strerror or e}"
    return None


def file_problem(path: str) -> str | None:
    """Why a file cannot be written at path, whose directory must exist, or None."""
    if "://" in path:
        from tbwriter.remote import redact

        return f"expected a local file, got the URL {redact(path)}"
    if os.path.isdir(path):
        return f"{path} is a directory, not a file"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(parent):  # a typo would otherwise become a new directory tree
        return f"{path}: no such directory {parent}"
    problem = directory_problem(parent)
    return problem and f"{path}: {problem}"


def url_problem(url: str) -> str | None:
    """Why runs cannot be written under url, or None: an unknown scheme, or a probe object that cannot be stored.

    A missing bucket or a wrong endpoint is found here, in one line, before any training, and not
    at the first flush; the probe is removed again.
    """
    from tbwriter import remote

    try:
        fs, root = remote.filesystem(url)
    except ValueError as e:
        return str(e).removeprefix("logdir: ").removeprefix("logdir ")
    except OSError as e:  # a store that logs in while connecting (ftp://) and refused
        return f"cannot write to {remote.redact(url)}: {e.strerror}"
    probe = f"{root.rstrip('/')}/.probe-{os.getpid()}-{time.time_ns()}"
    try:
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as e:  # each store raises its own errors (botocore, aiohttp, OSError)
        reason = " ".join(str(e).split())[:300] or type(e).__name__  # one line, however the store words it
        userinfo = re.match(r"[^/]*://([^/@]*)@", url)
        if userinfo and userinfo.group(1):  # a store may quote it as a bucket name, outside any URL redact() would see
            reason = reason.replace(userinfo.group(1), "***")
        return f"cannot write to {remote.redact(url)}: {remote.redact(reason)}"
    return None


def event_files(run_dir: str) -> list[str]:
    """The event files in run_dir, a path or a URL: what makes it a run TensorBoard shows."""
    if "://" not in run_dir:
        return glob.glob(os.path.join(glob.escape(run_dir), "*tfevents*"))
    from tbwriter import remote

    fs, path = remote.filesystem(run_dir)
    fs.invalidate_cache()  # a listing cached before this run's probe or a previous run is stale
    try:
        names = [posixpath.basename(p) for p in fs.ls(path.rstrip("/"), detail=False)]
    except FileNotFoundError:
        return []
    return [f"{run_dir.rstrip('/')}/{n}" for n in sorted(names) if "tfevents" in n]


def remove_files(paths: list[str]) -> None:
    """Remove files given as paths or URLs (--overwrite's old event files)."""
    for p in paths:
        if "://" in p:
            from tbwriter import remote

            fs, path = remote.filesystem(p)
            fs.rm_file(path)
        else:
            os.remove(p)


def new_run_dir(run_dir: str) -> str:
    """run_dir if it holds no run yet, else the first of run_dir_run2, _run3, ... that holds none.

    A rerun gets its own run: appending it to the old one would show TensorBoard one run with
    two curves, and pair the old run's hparams with the new run's values. URLs are listed the same way.
    """
    if not event_files(run_dir):
        return run_dir
    n = 2
    while event_files(f"{run_dir}_run{n}"):
        n += 1
    return f"{run_dir}_run{n}"


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The dests of the flags argv gives (abbreviated or not), as parser reads them."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


class Interrupted(Exception):
    """Ctrl-C, with what the program left behind (which run, which checkpoint)."""


class StopOnInterrupt:
    """Within `with`: the first Ctrl-C only sets `requested`, so a loop stops at a step boundary
    where its state is whole (a checkpoint taken mid-update would not resume exactly); a second
    one raises KeyboardInterrupt at once."""

    def __init__(self, active: bool = True):
        self.requested = False
        self.previous = None
        self.active = active

    def __enter__(self) -> "StopOnInterrupt":
        main = threading.current_thread() is threading.main_thread()
        if self.active and main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def run_main(prog: str, main, argv: list[str] | None = None) -> int:
    """main(argv)'s exit code; Ctrl-C becomes one line on stderr ("<prog>: interrupted: ...") and exit 130."""
    try:
        return main(argv)
    except Interrupted as e:
        print(f"{prog}: interrupted: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
    return 130
