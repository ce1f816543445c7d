"""close() interrupted by KeyboardInterrupt at every step, then retried: nothing lost, nothing doubled.

Each step of close (every os call it makes) is interrupted once, either instead of the call or
right after it by a real SIGINT; a decoy file opened between the interrupt and the retry takes
any fd number the writer let go, so a retry closing or writing the wrong fd shows in the decoy.
The SIGINT flood runs a child process whose own thread sends SIGINTs while it closes many writers.
"""

import os
import signal
import subprocess
import sys
import textwrap
import types

import pytest
from test_writer import accumulator, event_files
from test_writer_safety import PRELUDE, check_scalar_file

import tbwriter
from tbwriter import events as events_mod

N_RECORDS = 50  # buffered, unwritten records that close() has to get out
WRAPPED = ("write", "fstat", "close")


class InterruptingOs(types.SimpleNamespace):
    """The os module for events.py: counts calls of WRAPPED and interrupts call number `at` once."""

    def __init__(self, at: int = -1, after: bool = False):
        super().__init__(calls=[], at=at, after=after)
        for name in WRAPPED:
            setattr(self, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name, real):
        def call(*args):
            k = len(self.calls)
            self.calls.append(name)
            if k == self.at and not self.after:
                raise KeyboardInterrupt
            result = real(*args)
            if k == self.at:
                signal.raise_signal(signal.SIGINT)  # the real handler raises at the next check
            return result

        return call

    def __getattr__(self, name):
        return getattr(os, name)


def interrupted(call, fake) -> None:
    """call() with events' os replaced by fake, which must interrupt it with KeyboardInterrupt."""
    events_mod.os = fake
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        events_mod.os = os


def buffered_writer(logdir) -> tbwriter.FileWriter:
    """A writer holding N_RECORDS scalars (steps 0..) in memory, none written yet."""
    w = tbwriter.FileWriter(logdir, max_queue=10**6, flush_secs=10**6)
    for i in range(N_RECORDS):
        w.add_scalar_value("x", float(i), i)
    return w


def close_calls(tmp_path) -> list:
    """The os calls an uninterrupted close makes."""
    fake = InterruptingOs()
    w = buffered_writer(tmp_path / "count")
    events_mod.os = fake
    try:
        w.close()
    finally:
        events_mod.os = os
    return fake.calls


def test_close_interrupted_at_every_step_then_retried(tmp_path):
    calls = close_calls(tmp_path)
    assert calls[-1] == "close" and "write" in calls, calls
    cases = [(at, after) for at in range(len(calls)) for after in (False, True)]
    for at, after in cases:
        logdir = tmp_path / f"{at}_{after}"
        w = buffered_writer(logdir)
        fake = InterruptingOs(at, after)
        interrupted(w.close, fake)
        assert w.event_writer._finalizer.alive, (at, after)  # an unfinished close is still owed
        decoy_path = tmp_path / f"decoy_{at}_{after}"
        decoy = os.open(decoy_path, os.O_WRONLY | os.O_CREAT)  # takes a released fd number
        try:
            w.close()  # the retry
            assert not w.event_writer._finalizer.alive
            os.write(decoy, b"d")  # EBADF here if the retry closed the decoy's number
        finally:
            os.close(decoy)
        assert decoy_path.read_bytes() == b"d", (at, after, calls[at])
        (path,) = event_files(logdir)
        assert check_scalar_file(path, "x", float) == N_RECORDS, (at, after, calls[at])
        assert len(accumulator(logdir).Scalars("x")) == N_RECORDS


def test_an_interrupted_close_is_finished_by_the_finalizer(tmp_path):
    w = buffered_writer(tmp_path)
    interrupted(w.close, InterruptingOs(0))
    w.event_writer._finalizer()  # what garbage collection or interpreter exit runs
    (path,) = event_files(tmp_path)
    assert check_scalar_file(path, "x", float) == N_RECORDS


def test_an_interrupted_summarywriter_close_closes_every_file_on_retry(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path, max_queue=10**6, flush_secs=10**6)
    for i in range(N_RECORDS):
        w.add_scalars("pair", {"a": i, "b": 2 * i}, i)  # two sub-run files
        w.add_scalar("x", float(i), i)
    files = list(w.all_writers.values())  # kept alive: no finalizer may finish what close() left
    interrupted(w.close, InterruptingOs(0))  # the first file's first write
    w.close()
    assert all(fw.event_writer.closed for fw in files)
    for run, scale in (("pair_a", 1), ("pair_b", 2)):
        (path,) = event_files(tmp_path / run)
        assert check_scalar_file(path, "pair", lambda s: scale * s) == N_RECORDS
    assert [e.value for e in accumulator(tmp_path).Scalars("x")] == [float(i) for i in range(N_RECORDS)]


@pytest.mark.parametrize("after", [False, True])
def test_an_interrupted_flush_loses_nothing(tmp_path, after):
    w = buffered_writer(tmp_path)
    interrupted(w.flush, InterruptingOs(0, after))  # after: the write happened, its result was lost
    w.add_scalar_value("x", float(N_RECORDS), N_RECORDS)
    w.close()
    (path,) = event_files(tmp_path)
    assert check_scalar_file(path, "x", float) == N_RECORDS + 1


FLOOD_CHILD = """
    import os, signal, threading, time
    import tbwriter
    logdir, n_writers, n_records = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    armed = [False]
    def on_sigint(*_):
        if armed[0]:
            raise KeyboardInterrupt
    signal.signal(signal.SIGINT, on_sigint)
    writers = [tbwriter.SummaryWriter(os.path.join(logdir, "run%03d" % k), max_queue=10 ** 6,
                                      flush_secs=10 ** 6) for k in range(n_writers)]
    for w in writers:
        for i in range(n_records):
            w.add_text("t", "x" * 400, i)  # ~half a kilobyte per record: close takes a while
    stop = threading.Event()
    def flood():
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.0002)
    threading.Thread(target=flood, daemon=True).start()
    hits, decoys, errors = 0, [], []
    for w in writers:
        while True:
            try:
                armed[0] = True
                w.close()
                armed[0] = False
                break
            except KeyboardInterrupt:
                armed[0] = False
                hits += 1
                decoys.append(os.open(os.path.join(logdir, "decoy%05d" % len(decoys)),
                                      os.O_WRONLY | os.O_CREAT))
            except OSError as e:
                armed[0] = False
                errors.append(repr(e))
                break
    stop.set()
    for fd in decoys:
        try:
            os.fstat(fd)
        except OSError as e:
            errors.append("decoy: " + repr(e))
    print(hits, len(decoys), errors)
"""


def test_sigint_flood_against_many_writers_loses_nothing(tmp_path):
    n_writers, n_records = 40, 200
    out = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(FLOOD_CHILD), str(tmp_path), str(n_writers), str(n_records)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    hits, n_decoys, errors = out.stdout.split(" ", 2)
    print(f"SIGINT flood: {hits} interrupted closes over {n_writers} writers")
    assert errors.strip() == "[]"  # no EBADF, no decoy closed behind its owner's back
    assert int(hits) > 0, "the flood never hit a close; nothing was tested"
    for name in sorted(os.listdir(tmp_path)):
        path = tmp_path / name
        if name.startswith("decoy"):
            assert path.stat().st_size == 0, f"{name} received a writer's records"
            continue
        acc = accumulator(path)
        texts = acc.Tensors("t/text_summary")
        assert [e.step for e in texts] == list(range(n_records)), name
        assert len(event_files(path)) == 1
