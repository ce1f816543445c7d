"""What survives: kill -9, disk full, a removed directory, threads, two processes, fork().

Real child processes, real limits (RLIMIT_FSIZE, a 64 KiB tmpfs where mount is allowed), and
files read back with a CRC check written in test_writer.py and TensorBoard's EventAccumulator.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest
from tensorboard.compat.proto import event_pb2 as tb_event_pb2
from test_writer import REPO, accumulator, event_files, read_events, read_records

import tbwriter
from tbwriter.events import EventFileError, WriterStateError


PRELUDE = f"import sys; sys.path.insert(0, {REPO!r})\n"  # makes the repo importable in a child


def run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a Python snippet with the repo importable; return the finished process."""
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def check_scalar_file(path: str, tag: str, value_of) -> int:
    """All CRC-valid records of path hold consecutive steps 0.. with value_of(step); return the count."""
    records, _clean = read_records(path)
    assert tb_event_pb2.Event.FromString(records[0]).file_version == "brain.Event:2"
    steps = []
    for rec in records[1:]:
        e = tb_event_pb2.Event.FromString(rec)
        (v,) = e.summary.value
        assert v.tag == tag and v.simple_value == value_of(e.step), (e.step, v.simple_value)
        steps.append(e.step)
    assert steps == list(range(len(steps)))
    return len(steps)


# --- kill -9 -------------------------------------------------------------------------------

KILL_CHILD = """
    import tbwriter
    w = tbwriter.FileWriter(sys.argv[1], max_queue=7, flush_secs=1000)
    print(w.event_writer.path, flush=True)
    i = 0
    while True:
        w.add_scalar_value("k", i * 0.5, i)
        i += 1
        if i % 13 == 0:
            w.flush()
            print(i, flush=True)  # every step < i is in the OS now
"""


@pytest.mark.parametrize("seed", range(5))
def test_flushed_records_survive_kill_9(tmp_path, seed):
    rng = random.Random(seed)
    proc = subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(KILL_CHILD), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        path = proc.stdout.readline().strip()
        flushed = 0
        for _ in range(rng.randint(1, 400)):
            flushed = int(proc.stdout.readline())
        time.sleep(rng.uniform(0, 0.02))  # a random moment inside the write loop
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    n = check_scalar_file(path, "k", lambda s: s * 0.5)
    assert n >= flushed > 0
    # TensorBoard's own loader reads the same records, a torn tail or not.
    got = accumulator(tmp_path).Scalars("k")
    assert [e.step for e in got] == list(range(n))


# --- write errors: raised at the next call, naming the file, never a hang ------------------------


def test_file_size_limit_raises_at_the_next_call_naming_the_file(tmp_path):
    out = run_child(f"""
        import resource, signal, time
        import tbwriter
        from tbwriter.events import EventFileError, WriterStateError
        from tbwriter.proto import summary_pb2
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        inline = tbwriter.FileWriter({str(tmp_path / "inline")!r}, max_queue=10, flush_secs=1000)
        timer = tbwriter.FileWriter({str(tmp_path / "timer")!r}, max_queue=10**9, flush_secs=0.05)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
        try:
            for i in range(100000):
                inline.add_scalar_value("d", i, i)
            print("never raised")
        except EventFileError as e:
            print("inline", e.errno, e.filename == inline.event_writer.path, "could not write" in str(e))
        for call in (lambda: inline.add_scalar_value("d", 1, 1), inline.flush):
            try:
                call()
            except EventFileError as e:
                print("again", e.errno)
        inline.close()  # the error was raised already: close releases the file quietly
        try:
            inline.flush()
        except EventFileError as e:
            print("after close", e.errno)
        # All pending (max_queue is huge): only the timer thread writes, and hits the limit
        # after about 20 kB; the add after that raises its error.
        deadline = time.monotonic() + 60
        i = 0
        while True:
            try:
                timer.add_scalar_value("d", i, i)
            except EventFileError as e:
                print("timer", e.errno, e.filename == timer.event_writer.path)
                break
            i += 1
            if i > 2000:
                time.sleep(0.02)
            assert time.monotonic() < deadline, "the timer's error never surfaced"
        timer.close()  # already raised: closes quietly
        closer = tbwriter.FileWriter({str(tmp_path / "closer")!r}, max_queue=10**9, flush_secs=0.2)
        big = summary_pb2.Summary()
        for i in range(3000):
            big.value.add(tag=f"v{{i}}", simple_value=i)
        closer.add_summary(big, 0)  # one record of ~40 kB
        time.sleep(1.0)  # the timer hits the limit; close() is the next call
        try:
            closer.close()
        except EventFileError as e:
            print("close", e.errno, e.filename == closer.event_writer.path)
        print("done")
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    efbig = 27
    assert lines[:7] == [
        f"inline {efbig} True True",
        f"again {efbig}",
        f"again {efbig}",
        f"after close {efbig}",
        f"timer {efbig} True",
        f"close {efbig} True",
        "done",
    ], out.stdout
    assert len(read_records(event_files(tmp_path / "closer")[0])[0]) == 1  # file_version only
    for run in ("inline", "timer"):
        (path,) = event_files(tmp_path / run)
        assert os.path.getsize(path) <= 20000
        assert check_scalar_file(path, "d", float) > 100  # what got in before the limit is intact


def test_full_filesystem_raises_enospc(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True, timeout=30
        )
        why = r.stderr.strip() or f"exit status {r.returncode}"
    except OSError as e:
        r, why = None, str(e)
    if r is None or r.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here ({why}); "
            "test_file_size_limit_raises_at_the_next_call_naming_the_file covers a full disk"
        )
    try:
        w = tbwriter.SummaryWriter(mnt / "run", max_queue=100)
        with pytest.raises(EventFileError) as info:
            for i in range(100000):
                w.add_scalar("full", i, i)
        assert info.value.errno == 28 and info.value.filename == w.file_writer.event_writer.path
        with pytest.raises(EventFileError):
            w.flush()
        path = w.file_writer.event_writer.path
        w.close()
        n = check_scalar_file(path, "full", float)
        assert n > 500
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_removed_directory_raises_at_flush(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path / "gone", max_queue=1000)
    w.add_scalar("x", 1.0, 0)
    w.flush()
    shutil.rmtree(tmp_path / "gone")
    w.add_scalar("x", 2.0, 1)
    with pytest.raises(EventFileError, match="deleted") as info:
        w.flush()
    assert info.value.filename == w.file_writer.event_writer.path
    with pytest.raises(EventFileError):
        w.add_scalar("x", 3.0, 2)
    w.close()


def test_permission_denied_names_the_directory():
    base = tempfile.mkdtemp()  # under /tmp, so an unprivileged user can reach it
    try:
        os.chmod(base, 0o755)
        locked = os.path.join(base, "locked")
        os.mkdir(locked, 0o555)  # nobody may create files in it
        # As root nothing is denied, so then the child drops to an unprivileged user first.
        out = run_child(f"""
            import os
            import tbwriter
            if os.geteuid() == 0:
                os.setgid(65534); os.setuid(65534)
            try:
                tbwriter.SummaryWriter({locked!r})
            except PermissionError as e:
                print("denied", e.filename.startswith({locked!r}))
        """)
        assert out.stdout.strip() == "denied True", (out.stdout, out.stderr)
        assert os.listdir(locked) == []
    finally:
        shutil.rmtree(base)


# --- concurrency -----------------------------------------------------------------------------


def test_eight_threads_ten_thousand_scalars_each(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path)
    stop = threading.Event()

    def write(k):
        for i in range(10_000):
            w.add_scalar(f"t{k}", k * 100_000 + i, i)

    def flusher():
        while not stop.is_set():
            w.flush()
            time.sleep(0.001)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    f = threading.Thread(target=flusher)
    f.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    f.join()
    w.close()
    (path,) = event_files(tmp_path)
    records, clean = read_records(path)
    assert clean and len(records) == 1 + 80_000
    per_tag = {}
    for rec in records[1:]:
        e = tb_event_pb2.Event.FromString(rec)
        (v,) = e.summary.value
        per_tag.setdefault(v.tag, []).append((e.step, v.simple_value))
    for k in range(8):
        assert per_tag[f"t{k}"] == [(i, float(k * 100_000 + i)) for i in range(10_000)]


TWO_PROC_CHILD = """
    import time, tbwriter
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    w = tbwriter.SummaryWriter(sys.argv[1])
    for i in range(1000):
        w.add_scalar("p" + sys.argv[3], i, i)
    path = w.file_writer.event_writer.path
    w.close()
    print(path)
"""


def test_two_processes_one_logdir_same_second(tmp_path):
    start = int(time.time()) + 3.1  # both create their file just after the same second starts
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(TWO_PROC_CHILD), str(tmp_path), str(start), str(k)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    paths = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(paths)) == 2 and sorted(paths) == event_files(tmp_path)
    secs = {os.path.basename(p).split(".")[3] for p in paths}
    print(f"two processes created their files in {len(secs)} distinct second(s)")
    for k, path in enumerate(paths):
        assert check_scalar_file(path, f"p{k}", float) == 1000


FORK_CHILD = """
    import multiprocessing, os, tbwriter
    from tbwriter.events import WriterStateError
    w = tbwriter.SummaryWriter(sys.argv[1], max_queue=1000, flush_secs=1000)
    for i in range(5):
        w.add_scalar("parent", i, i)  # pending in the buffer when the process forks

    def child_tries(logdir):
        msgs = []
        for name, call in (("add", lambda: w.add_scalar("parent", 99, 99)), ("flush", w.flush), ("close", w.close)):
            try:
                call()
                msgs.append(name + " ok")
            except WriterStateError as e:
                msgs.append(name + " refused" + (" fork" if "fork()" in str(e) else ""))
        with tbwriter.SummaryWriter(logdir) as own:  # the child's own writer works
            own.add_scalar("child", 1.0, 1)
        return msgs

    pid = os.fork()
    if pid == 0:  # a bare fork: the child exits normally, running atexit and finalizers
        print(*child_tries(sys.argv[1] + "/child_fork"), flush=True)
        sys.exit(0)
    os.waitpid(pid, 0)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        print(*pool.apply(child_tries, (sys.argv[1] + "/child_mp",)), flush=True)  # w: inherited
    for i in range(5, 10):
        w.add_scalar("parent", i, i)
    w.close()
    print("parent done")
"""


def test_a_forked_child_cannot_touch_the_parents_file(tmp_path):
    out = run_child(FORK_CHILD.replace("sys.argv[1]", repr(str(tmp_path))))
    assert out.returncode == 0, out.stderr
    expect = "add refused fork flush refused fork close refused fork"
    assert out.stdout.split("\n")[:3] == [expect, expect, "parent done"], out.stdout
    (path,) = event_files(tmp_path)
    assert check_scalar_file(path, "parent", float) == 10  # each record once, none from a child
    for sub in ("child_fork", "child_mp"):
        assert [(e.step, e.value) for e in accumulator(tmp_path / sub).Scalars("child")] == [(1, 1.0)]


def test_a_closed_writer_never_reopens(tmp_path):
    w = tbwriter.FileWriter(tmp_path)
    w.close()
    for call in (lambda: w.add_scalar_value("x", 1, 1), w.flush, w.reopen, lambda: w.add_graph(b"")):
        with pytest.raises(WriterStateError):
            call()
    assert len(read_events(event_files(tmp_path)[0])) == 1
