"""Soak test: kill -9 a writing child process hundreds of times, then check its file with the reader.

Each round forks a child (or, with --spawn, starts a fresh interpreter) that writes into its
own logdir with tbwriter's SummaryWriter: a scalar every step, a blob (an image-sized value of
a few bytes to 200 KB) every 5th step, `flush()` every few steps, reporting to the parent, through
a pipe, how many events the last returned flush() covered. Writer settings vary per round
(max_queue 1..100, flush_secs 0.01..120, so the writer's timer thread is busy in some rounds).
The parent SIGKILLs the child at a random moment and then reads the file with tbwriter.reader:

- no record may be corrupt (a truncated last record is fine: it is what a kill mid-write leaves);
- every event that passes its CRC is exactly the one the child wrote at that position
  (events are a deterministic function of the step);
- at least as many events survive as the last flush() that returned had covered.

Prints the figures; exits 1 if any round broke a rule.
    python bench/soak_kill.py --kills 300 [--seed 1] [--max-delay 0.3] [--spawn]
"""

import argparse
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from tbwriter import SummaryWriter, reader
from tbwriter.proto import summary_pb2


def scalar_at(step: int) -> float:
    """The loss the child writes at step (exact in float32 after the writer's rounding)."""
    return float(np.float32(1.0 / (1 + step)))


def blob_at(step: int) -> bytes:
    """The blob the child writes at step (every 5th): up to 200 KB, so kills land mid-write too."""
    return bytes([step % 251]) * ((step * 7919) % 200_000)


def expected_events(limit: int):
    """(tag, step, payload) of the events the child writes, in order."""
    for step in range(limit):
        yield "loss", step, scalar_at(step)
        if step % 5 == 0:
            yield "blob", step, blob_at(step)


def child(logdir: str, max_queue: int, flush_secs: float, flush_every: int, report_fd: int) -> None:
    """Write forever (until killed), reporting after each returned flush() how many events it covered."""
    writer = SummaryWriter(logdir, max_queue=max_queue, flush_secs=flush_secs)
    fw = writer.file_writer
    written = 0
    os.write(report_fd, b"0\n")  # started: the parent's random delay counts from here
    step = 0
    deadline = time.monotonic() + 30  # never outlive a parent that died
    while time.monotonic() < deadline:
        writer.add_scalar("loss", scalar_at(step), step)
        written += 1
        if step % 5 == 0:
            summary = summary_pb2.Summary()
            image = summary.value.add(tag="blob").image
            image.encoded_image_string = blob_at(step)
            fw.add_summary(summary, step)
            written += 1
        step += 1
        if step % flush_every == 0:
            writer.flush()
            os.write(report_fd, b"%d\n" % written)
    os._exit(0)


def start_child(logdir, params, spawn: bool):
    """Start a writing child; return (pid or Popen, read end of its report pipe)."""
    if spawn:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", logdir, *map(str, params)], stdout=subprocess.PIPE
        )
        return proc, proc.stdout.fileno(), proc
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            child(logdir, *params, report_fd=write_fd)
        finally:
            os._exit(1)
    os.close(write_fd)
    return pid, read_fd, None


def read_reports(fd: int, until: float) -> bytes:
    """Collect report bytes until the time `until` (or EOF), so the child never blocks on a full pipe."""
    data = b""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return data
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return data
            data += chunk


def read_first_report(fd: int) -> bytes:
    """Wait (up to 60 s) for the child's first line, sent once its writer exists."""
    data = b""
    deadline = time.monotonic() + 60
    while b"\n" not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        chunk = os.read(fd, 65536) if ready else b""
        if ready and not chunk:
            break
        data += chunk
    return data


def check_round(logdir: str, flushed: int) -> tuple[int, int, list]:
    """Read the child's file; return (events checked, truncated files, problems)."""
    problems = []
    truncated = []
    files = reader.event_files(logdir) if os.listdir(logdir) else {}
    paths = [p for ps in files.values() for p in ps]
    if len(paths) > 1:
        problems.append(f"{len(paths)} event files, expected 1")
    checked = 0
    for path in paths:
        events = reader.read_events(path, on_truncated=truncated.append)
        expected = expected_events(10**9)
        try:
            first = next(events, None)
            if first is not None and first.file_version != "brain.Event:2":
                problems.append(f"{path}: first event is not the file_version event")
            for event in events:
                tag, step, payload = next(expected)
                value = event.summary.value[0]
                got = (value.tag, event.step, value.simple_value if tag == "loss" else value.image.encoded_image_string)
                if got != (tag, step, payload):
                    problems.append(f"{path}: event {checked} is {got[:2]}, expected {(tag, step)} with its payload")
                    break
                checked += 1
        except reader.CorruptRecordError as e:
            problems.append(str(e))
    if checked < flushed:
        problems.append(f"{checked} events readable, but flush() had returned for {flushed}")
    return checked, len(truncated), problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-delay", type=float, default=0.3, help="kill within this many seconds of the start")
    p.add_argument("--spawn", action="store_true", help="fresh interpreter per child instead of fork()")
    p.add_argument(
        "--child", nargs=4, metavar=("LOGDIR", "MAX_QUEUE", "FLUSH_SECS", "FLUSH_EVERY"), help=argparse.SUPPRESS
    )
    args = p.parse_args()
    if args.child:
        logdir, mq, fs, fe = args.child
        child(logdir, int(mq), float(fs), int(fe), report_fd=sys.stdout.fileno())
    rng = random.Random(args.seed)
    root = tempfile.mkdtemp(prefix="soak_kill_")
    totals = {"kills": 0, "events": 0, "flushed": 0, "truncated": 0, "empty": 0, "bad": 0}
    started = time.monotonic()
    try:
        for k in range(args.kills):
            logdir = os.path.join(root, f"round{k}")
            os.makedirs(logdir)
            params = (rng.choice([1, 2, 10, 100]), rng.choice([0.01, 0.05, 120.0]), rng.choice([1, 3, 17, 50]))
            handle, fd, proc = start_child(logdir, params, args.spawn)
            reports = read_first_report(fd)
            reports += read_reports(fd, time.monotonic() + rng.uniform(0, args.max_delay))
            pid = proc.pid if proc else handle
            os.kill(pid, signal.SIGKILL)
            if proc:
                proc.wait()
            else:
                os.waitpid(pid, 0)
            reports += read_reports(fd, time.monotonic() + 5)  # all the child wrote before it died
            if not proc:
                os.close(fd)
            flushed = max([0, *map(int, reports.split())])
            checked, truncated, problems = check_round(logdir, flushed)
            totals["kills"] += 1
            totals["events"] += checked
            totals["flushed"] += flushed
            totals["truncated"] += truncated
            totals["empty"] += checked == 0
            if problems:
                totals["bad"] += 1
                print(f"round {k} (max_queue, flush_secs, flush_every = {params}): " + "; ".join(problems))
            shutil.rmtree(logdir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{totals['kills']} kill -9 rounds in {time.monotonic() - started:.0f} s "
        f"({'spawn' if args.spawn else 'fork'}): "
        f"{totals['events']} events read back and checked equal to what was written, "
        f"{totals['flushed']} of them covered by a returned flush(); "
        f"{totals['truncated']} files ended in a truncated record (skipped), "
        f"{totals['empty']} rounds killed before any event; rounds breaking a rule: {totals['bad']}"
    )
    return 1 if totals["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
