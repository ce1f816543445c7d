"""How TensorBoard's two loaders treat a run that grows by one immutable event object per flush.

The layout is tbwriter's remote one (docs/remote.md): one object per upload, names sorting
in write order. Rounds of `--per-round` objects (100 scalars each) are written while
TensorBoard 2.21 runs (reload every second), and after each round this prints when all
points are served and what the loader did:
- the Python loader (`--load_fast=false`) on s3:// (a moto server here, which logs every
  request): LIST and GET requests per reload, and objects whose bytes were fetched twice;
- the Rust data server (`--load_fast=true`; it reads local paths and gs:// only) on a local
  directory written through a file:// URL: event files it holds open;
- the Rust data server on 2 x `--nofile` objects with its open-file limit (RLIMIT_NOFILE)
  at `--nofile`.

    python bench/remote_loaders.py [--rounds 3] [--per-round 40] [--nofile 64]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
import tbwriter  # noqa: E402
from remote import serve_s3  # noqa: E402  (bench/remote.py, beside this file)
from tbserver import free_port  # noqa: E402


class RequestLog:
    """WSGI middleware keeping (time, method, path, bytes sent) of every request."""

    def __init__(self, app):
        self.app = app
        self.entries = []

    def __call__(self, environ, start_response):
        status = []

        def start(s, headers, *a):
            status.append(s)
            return start_response(s, headers, *a)

        body = b"".join(self.app(environ, start))
        self.entries.append(
            (
                time.monotonic(),
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                environ.get("QUERY_STRING", ""),
                status[0][:3],
                len(body),
            )
        )
        return [body]


def start_tensorboard(logdir: str, load_fast: bool, nofile=None, log=os.devnull):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        logdir,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        f"--load_fast={str(load_fast).lower()}",
        "--reload_interval",
        "1",
        "--samples_per_plugin",
        "scalars=1000000",
    ]
    if nofile:  # the shell sets the limit, then becomes tensorboard (no preexec_fn: threads run here)
        cmd = ["sh", "-c", f'ulimit -n {int(nofile)} && exec "$0" "$@"', *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"))  # noqa: SIM115
    base = f"http://127.0.0.1:{port}"
    for _ in range(480):  # up before the first round, so the times below are the loader's
        try:
            urllib.request.urlopen(base + "/data/environment", timeout=5).close()
            break
        except OSError:
            time.sleep(0.25)
    return proc, base


def points(base: str) -> int:
    """Scalar points TensorBoard serves for run '.', tag 'loss' (0 while not loaded)."""
    try:
        with urllib.request.urlopen(base + "/data/plugin/scalars/scalars?run=.&tag=loss", timeout=10) as r:
            return len(json.loads(r.read()))
    except (OSError, ValueError):
        return 0


def wait_points(base: str, want: int, timeout: float = 120) -> float:
    """Seconds until TensorBoard serves `want` points (or the count it got to, negated)."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        n = points(base)
        if n >= want:
            return time.monotonic() - t
        time.sleep(0.25)
    return -points(base)


def open_event_files(tb_pid: int) -> int:
    """Event files held open by tensorboard or its data server child."""
    n = 0
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            stat = open(f"/proc/{pid}/stat").read()
            if int(pid) != tb_pid and int(stat.rsplit(")", 1)[1].split()[1]) != tb_pid:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                n += "tfevents" in os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
    return n


def write_round(writer, start: int, objects: int) -> int:
    """Write `objects` flushes of 100 scalars each from step `start`; return the next step."""
    for _ in range(objects):
        for step in range(start, start + 100):
            writer.add_scalar_value("loss", step * 0.5, step)
        writer.flush()
        start += 100
    return start


def python_loader_on_s3(rounds: int, per_round: int):
    endpoint, log, server = serve_s3(RequestLog, "loaders")
    w = tbwriter.FileWriter("s3://loaders/run")
    proc, base = start_tensorboard("s3://loaders/run", load_fast=False)
    print("Python loader, s3:// (moto):")
    try:
        step = 0
        for r in range(rounds):
            step = write_round(w, step, per_round)
            t0 = time.monotonic()
            took = wait_points(base, step)
            time.sleep(5)  # steady state: reloads with nothing new
            t1 = time.monotonic()
            tb_gets = [e for e in log.entries if e[1] == "GET" and "tfevents" in e[2]]
            window = [e for e in log.entries if t0 + took <= e[0] <= t1]
            lists = sum(e[1] == "GET" and "tfevents" not in e[2] for e in window)
            gets = sum(e[1] == "GET" and "tfevents" in e[2] for e in window)
            fetched = {}
            for e in tb_gets:
                if e[4] in ("200", "206") and e[5] > 0:
                    fetched[e[2]] = fetched.get(e[2], 0) + 1
            twice = sum(c > 1 for c in fetched.values())
            secs = t1 - t0 - took
            print(
                f"  {1 + (r + 1) * per_round:4d} objects: all {step} points after {took:5.1f} s "
                f"({took / per_round:.2f} s per new object); then per "
                f"second: {lists / secs:.1f} LIST, {gets / secs:.1f} GET of event objects; "
                f"objects fetched with bytes: {len(fetched)}, of them twice or more: {twice}"
            )
    finally:
        proc.terminate()
        proc.wait()
        w.close()
        server.shutdown()


def rust_loader_on_disk(rounds: int, per_round: int):
    d = tempfile.mkdtemp(prefix="loaders-")
    w = tbwriter.FileWriter("file://" + d)
    proc, base = start_tensorboard(d, load_fast=True)
    print("Rust data server, local directory:")
    try:
        step = 0
        for r in range(rounds):
            step = write_round(w, step, per_round)
            took = wait_points(base, step)
            print(
                f"  {1 + (r + 1) * per_round:4d} objects: all {step} points after {took:5.1f} s; "
                f"event files open: {open_event_files(proc.pid)}"
            )
    finally:
        proc.terminate()
        proc.wait()
        w.close()


def rust_loader_past_its_file_limit(nofile: int):
    """The Rust data server on 2 x nofile objects with RLIMIT_NOFILE at nofile."""
    d = tempfile.mkdtemp(prefix="loaders-")
    w = tbwriter.FileWriter("file://" + d)
    step = write_round(w, 0, 2 * nofile)
    w.close()
    log = os.path.join(d, "tensorboard.log")
    proc, base = start_tensorboard(d, load_fast=True, nofile=nofile, log=log)
    try:
        time.sleep(30)
        served, files = points(base), open_event_files(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    failed = open(log).read().count("Failed to open event file")
    print(
        f"Rust data server, RLIMIT_NOFILE {nofile}, {2 * nofile + 2} objects already there: {served} of "
        f"{step} points served after 30 s; event files open: {files}; 'Failed to open event file' "
        f"warnings: {failed}"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=40)
    p.add_argument("--nofile", type=int, default=64)
    args = p.parse_args()
    python_loader_on_s3(args.rounds, args.per_round)
    rust_loader_on_disk(args.rounds, args.per_round)
    rust_loader_past_its_file_limit(args.nofile)


if __name__ == "__main__":
    main()
