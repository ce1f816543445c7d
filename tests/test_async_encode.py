"""Heavy summaries on the worker thread (tbwriter/encoder.py): same bytes, call order, errors, limits, safety.

Every file is read back with the CRC-checking reader of test_writer.py and TensorBoard's
EventAccumulator. A "gate" job holds the worker so a test knows what is still pending.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2 as tb_event_pb2
from test_writer import accumulator, event_files, read_events, read_records
from test_writer_safety import PRELUDE, run_child

from conftest import requires

import tbwriter
from tbwriter import writer as writer_mod
from tbwriter.encoder import Pending

RNG = np.random.default_rng(23)
BIG = RNG.standard_normal(writer_mod.ASYNC_MIN_VALUES + 1).astype(np.float32)  # just past the threshold
IMG = RNG.random((3, 24, 20), dtype=np.float32)
BATCH = RNG.random((11, 3, 8, 8), dtype=np.float32)


def gate(w: tbwriter.SummaryWriter) -> threading.Event:
    """Hold w's worker until the returned event is set: jobs submitted meanwhile stay pending."""
    release, started = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait()

    w._encoder.submit(None, hold, 0, "gate")
    started.wait()
    return release


def _figure(k: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1.5), dpi=40)
    plt.plot(np.sin(np.linspace(0, k + 1, 50)))
    return fig


def torch():
    """torch, or a skip naming the extra: only the tests that log torch tensors need it."""
    return requires("torch", "peers", "logs torch tensors")


# Every method with a worker path, called twice with arguments that exercise its options.
METHODS = {
    "add_histogram": lambda w, i: w.add_histogram("h", BIG * (i + 1), i),
    "add_histogram list": lambda w, i: w.add_histogram("hl", (BIG[:5000] + i).tolist(), i),
    "add_histogram bins": lambda w, i: w.add_histogram("hb", BIG + i, i, bins=30, max_bins=10),
    "add_histogram torch": lambda w, i: w.add_histogram("ht", torch().from_numpy(BIG * i), i),
    "add_image": lambda w, i: w.add_image("i", IMG * i, i),
    "add_image HWC uint8": lambda w, i: w.add_image(
        "u", (IMG.transpose(1, 2, 0) * 200).astype(np.uint8), i, None, "HWC"
    ),
    "add_images": lambda w, i: w.add_images("g", BATCH + 0.1 * i, i),
    "add_images list": lambda w, i: w.add_images("gl", list(BATCH[: 3 + i]), i),
    "add_image_with_boxes": lambda w, i: w.add_image_with_boxes(
        "b", IMG, np.array([[1, 2, 10 + i, 12]]), i, labels=["cat"]
    ),
    "add_figure": lambda w, i: w.add_figure("f", _figure(i), i),
    "add_figure list": lambda w, i: w.add_figure("fl", [_figure(i), _figure(i + 1)], i),
    "add_video": lambda w, i: w.add_video("v", np.full((2, 3, 3, 8, 8), i / 3, np.float32), i),
    "add_audio": lambda w, i: w.add_audio("a", np.sin(np.linspace(0, 100 * (i + 1), 4000)), i, sample_rate=8000),
}


def write_run(logdir, calls, async_encode: bool, walltime=True) -> list:
    """Each call, then a scalar, for steps 0 and 1; return the file's records (bytes)."""
    w = tbwriter.SummaryWriter(logdir, async_encode=async_encode)
    wt = 1234.5 if walltime else None
    for i in range(2):
        for call in calls:
            with w.use_metadata(global_step=i, walltime=wt) if walltime else _nothing():
                call(w, i)
            w.add_scalar("after", i, i, walltime=wt)
    w.close()
    (path,) = event_files(logdir)
    return read_records(path)[0]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_writes_the_same_bytes_as_the_synchronous_path(tmp_path, method):
    got = write_run(tmp_path / "async", [METHODS[method]], True)
    want = write_run(tmp_path / "sync", [METHODS[method]], False)
    assert len(got) == len(want) == 5
    assert got[1:] == want[1:]  # record 0 is the file_version, stamped at creation


def test_all_methods_interleaved_same_events_except_wall_time(tmp_path):
    calls = [METHODS[m] for m in sorted(METHODS)]
    got = write_run(tmp_path / "async", calls, True, walltime=False)
    want = write_run(tmp_path / "sync", calls, False, walltime=False)

    def without_time(records):
        events = [tb_event_pb2.Event.FromString(r) for r in records[1:]]
        for e in events:
            e.wall_time = 0
        return [e.SerializeToString() for e in events]

    assert without_time(got) == without_time(want)
    acc = accumulator(tmp_path / "async")
    assert [e.step for e in acc.Histograms("h")] == [0, 1]
    assert [e.step for e in acc.Images("g")] == [0, 1]
    assert acc.Histograms("h")[1].histogram_value.num == BIG.size


def test_wall_time_is_the_calls_not_the_encodings(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path)
    release = gate(w)
    before = time.time()
    w.add_histogram("h", BIG, 0)
    after = time.time()
    time.sleep(0.05)  # the worker encodes later than the call
    release.set()
    w.close()
    (e,) = [e for e in read_events(event_files(tmp_path)[0]) if e.step == 0 and e.HasField("summary")]
    assert before <= e.wall_time <= after


def test_embedding_files_are_the_same(tmp_path):
    mat = RNG.standard_normal((30, 5)).astype(np.float32)
    labels = [f"p{i}" for i in range(30)]
    sprites = RNG.random((30, 3, 4, 4), dtype=np.float32)
    trees, first = [], mat[0, 0]
    for flag in (True, False):
        d = tmp_path / str(flag)
        w = tbwriter.SummaryWriter(d, async_encode=flag)
        w.add_embedding(mat, labels, sprites, 3, tag="e")
        w.add_embedding(mat * 2, None, None, 3, tag="e")  # the same step and tag: its own directory
        mat[0, 0] = 99.0  # after the call: the worker encodes its own copy
        labels[0] = "changed"
        w.close()
        mat[0, 0], labels[0] = first, "p0"
        trees.append(
            {
                os.path.relpath(os.path.join(root, f), d): open(os.path.join(root, f), "rb").read()
                for root, _, files in os.walk(d)
                for f in files
                if "tfevents" not in f
            }
        )
    assert trees[0] == trees[1] and len(trees[0]) == 5


def test_the_worker_encodes_a_copy_taken_at_call_time(tmp_path):
    values = BIG.copy()
    tensor = torch().from_numpy(IMG.copy())
    w = tbwriter.SummaryWriter(tmp_path)
    release = gate(w)
    w.add_histogram("h", values, 0)
    w.add_image("i", tensor, 0)
    values[:] = 7.0  # the caller reuses its buffers while the worker has not started
    tensor.zero_()
    release.set()
    w.close()
    acc = accumulator(tmp_path)
    assert acc.Histograms("h")[0].histogram_value.max == float(BIG.max())
    assert (
        acc.Images("i")[0].encoded_image_string == tbwriter.summary.image("i", IMG).value[0].image.encoded_image_string
    )


def test_a_scalar_after_a_pending_histogram_is_written_after_it(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path, max_queue=1)  # max_queue 1: each scalar tries to write at once
    release = gate(w)
    w.add_scalar("s", 0.0, 0)
    w.add_histogram("h", BIG, 1)
    for i in range(2, 40):
        w.add_scalar("s", float(i), i)
    state = w.file_writer.event_writer._state
    path = w.file_writer.event_writer.path
    assert [type(r) for r in state.buf[:1]] == [Pending] and len(state.buf) == 39  # held behind it
    assert [e.step for e in read_events(path)[1:]] == [0]  # nothing after the pending one reached the file
    release.set()
    w.flush()
    assert [e.step for e in read_events(path)[1:]] == list(range(40))
    w.close()
    acc = accumulator(tmp_path)
    assert [e.step for e in acc.Scalars("s")] == [0] + list(range(2, 40))
    assert [e.step for e in acc.Histograms("h")] == [1]


def test_an_encoding_error_is_raised_by_the_next_call_naming_tag_and_step(tmp_path):
    bad = BIG.copy()
    bad[5] = np.nan
    w = tbwriter.SummaryWriter(tmp_path)
    release = gate(w)
    w.add_histogram("nan", bad, 3)  # checked on the worker: returns at once
    w.add_histogram("ok", BIG, 4)
    release.set()
    w._encoder.wait()
    with pytest.raises(ValueError, match=r"add_histogram\(tag='nan', global_step=3\) failed on tbwriter's") as info:
        w.add_scalar("s", 1.0, 5)  # the call that raises has done its own work
    assert "NaN" in str(info.value.__cause__)
    w.add_scalar("s", 2.0, 6)  # raised once
    w.add_histogram("nan", bad, 7)
    w.add_image("neg", IMG, 8, dataformats="CHW")
    with pytest.raises(ValueError, match=r"global_step=7"):
        w.flush()
    w.add_audio("a", np.full(100, np.nan), 9)
    with pytest.raises(ValueError, match=r"add_audio\(tag='a', global_step=9\)"):
        w.close()
    acc = accumulator(tmp_path)
    assert [e.step for e in acc.Histograms("ok")] == [4]
    assert [e.step for e in acc.Scalars("s")] == [5, 6]
    assert [e.step for e in acc.Images("neg")] == [8]
    assert "nan" not in acc.Tags()["histograms"]


def test_shape_and_format_errors_are_raised_by_the_call_itself(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path)
    with pytest.raises(ValueError, match="dataformats"):
        w.add_image("i", IMG, 0, dataformats="XYZ")
    with pytest.raises(ValueError, match="channels"):
        w.add_images("g", RNG.random((2, 5, 4, 4)), 0)
    with pytest.raises(ValueError, match="bins"):
        w.add_histogram("h", BIG, 0, bins=0)
    with pytest.raises(TypeError, match="name must be a str"):
        w.add_image(3, IMG, 0)
    w.close()
    assert len(read_events(event_files(tmp_path)[0])) == 1


def test_memory_bound_blocks_the_caller_until_the_worker_catches_up(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path, async_max_bytes=3 * BIG.nbytes)
    release = gate(w)
    for i in range(3):
        w.add_histogram("h", BIG, i)  # 3 x nbytes: at the bound, not past it
    done = threading.Event()
    caller = threading.Thread(target=lambda: (w.add_histogram("h", BIG, 3), done.set()))
    caller.start()
    caller.join(0.5)
    assert not done.is_set() and w._encoder.queued_bytes == 3 * BIG.nbytes  # blocked: a 4th would pass the bound
    release.set()
    caller.join()
    assert done.is_set()
    w.close()
    assert [e.step for e in accumulator(tmp_path).Histograms("h")] == [0, 1, 2, 3]


def test_one_value_larger_than_the_bound_still_goes_through(tmp_path):
    with tbwriter.SummaryWriter(tmp_path, async_max_bytes=1000) as w:
        w.add_histogram("h", BIG, 0)
        w.add_histogram("h", BIG, 1)
    assert [e.step for e in accumulator(tmp_path).Histograms("h")] == [0, 1]
    with pytest.raises(ValueError, match="async_max_bytes"):
        tbwriter.SummaryWriter(tmp_path, async_max_bytes=0)


def test_flush_waits_for_the_worker_then_a_kill_9_loses_nothing(tmp_path):
    code = """
        import os, numpy as np, tbwriter
        w = tbwriter.SummaryWriter(sys.argv[1], max_queue=1000, flush_secs=1000)
        big = np.arange(10000, dtype=np.float32)
        for i in range(6):
            w.add_histogram("h", big + i, i)
            w.add_image("i", np.full((3, 64, 64), i / 10, np.float32), i)
            w.add_scalar("s", i, i)
        w.flush()
        os.kill(os.getpid(), 9)
    """
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code), str(tmp_path)], timeout=120)
    assert proc.returncode == -9
    acc = accumulator(tmp_path)
    assert [e.step for e in acc.Histograms("h")] == list(range(6))
    assert [e.step for e in acc.Images("i")] == list(range(6))
    assert [e.step for e in acc.Scalars("s")] == list(range(6))


def test_pending_values_are_written_at_interpreter_exit_and_when_dropped(tmp_path):
    out = run_child(f"""
        import numpy as np, tbwriter
        big = np.arange(100000, dtype=np.float32)
        dropped = tbwriter.SummaryWriter({str(tmp_path / "dropped")!r})
        for i in range(5):
            dropped.add_histogram("h", big + i, i)
        del dropped  # no close(): its finalizer waits for the worker
        w = tbwriter.SummaryWriter({str(tmp_path / "exit")!r})
        for i in range(5):
            w.add_histogram("h", big + i, i)
            w.add_scalar("s", i, i)
        # no close(): interpreter exit closes it once the worker is done
    """)
    assert out.returncode == 0, out.stderr
    for run in ("dropped", "exit"):
        assert [e.step for e in accumulator(tmp_path / run).Histograms("h")] == list(range(5))
    assert [e.step for e in accumulator(tmp_path / "exit").Scalars("s")] == list(range(5))


FORK_CHILD = """
    import os, threading, numpy as np, tbwriter
    from tbwriter.events import WriterStateError
    w = tbwriter.SummaryWriter(sys.argv[1], max_queue=1000, flush_secs=1000)
    release = threading.Event()
    w._encoder.submit(None, lambda: release.wait() and None, 0, "gate")
    big = np.arange(10000, dtype=np.float32)
    for i in range(3):
        w.add_histogram("parent", big + i, i)  # pending on the worker when the process forks
        w.add_scalar("ps", i, i)
    pid = os.fork()
    if pid == 0:
        msgs = []
        for name, call in (("hist", lambda: w.add_histogram("parent", big, 99)), ("flush", w.flush),
                           ("close", w.close)):
            try:
                call()
                msgs.append(name + " ok")
            except WriterStateError as e:
                msgs.append(name + " refused" + (" fork" if "fork()" in str(e) else ""))
        with tbwriter.SummaryWriter(sys.argv[1] + "/child") as own:  # the child's own worker
            own.add_histogram("child", big, 1)
        print(*msgs, flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    release.set()
    for i in range(3, 5):
        w.add_histogram("parent", big + i, i)
        w.add_scalar("ps", i, i)
    w.close()
    print("parent done")
"""


def test_a_forked_child_neither_waits_for_nor_writes_the_parents_pending_values(tmp_path):
    out = run_child(FORK_CHILD.replace("sys.argv[1]", repr(str(tmp_path))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["hist refused fork flush refused fork close refused fork", "parent done"]
    acc = accumulator(tmp_path)
    assert [e.step for e in acc.Histograms("parent")] == list(range(5))
    assert [e.step for e in acc.Scalars("ps")] == list(range(5))
    assert [e.step for e in accumulator(tmp_path / "child").Histograms("child")] == [1]


def test_close_interrupted_while_waiting_for_the_worker_then_retried(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path)
    release = gate(w)
    for i in range(4):
        w.add_image("i", IMG, i)
        w.add_scalar("s", i, i)
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        w.close()  # waits for the gated worker: the SIGINT lands there
    timer.join()
    release.set()
    w.close()
    (path,) = event_files(tmp_path)
    steps = [(e.summary.value[0].tag, e.step) for e in read_events(path)[1:]]
    assert steps == [(t, i) for i in range(4) for t in ("i", "s")]  # each once, in call order


def test_a_write_error_on_the_worker_is_raised_by_the_next_call(tmp_path):
    out = run_child(f"""
        import resource, signal, numpy as np, tbwriter
        from tbwriter.events import EventFileError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        w = tbwriter.SummaryWriter({str(tmp_path)!r}, max_queue=1)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000))
        img = np.random.default_rng(0).random((3, 128, 128), dtype=np.float32)  # ~50 kB of PNG each
        try:
            for i in range(100):
                w.add_image("i", img, i)  # the worker writes (max_queue 1) and hits the limit
                w._encoder.wait()
            print("never raised")
        except EventFileError as e:
            print("raised", e.errno, e.filename == w.file_writer.event_writer.path)
        try:
            w.flush()
        except EventFileError as e:
            print("flush", e.errno)
        w.close()
        print("closed")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["raised 27 True", "flush 27", "closed"], out.stdout
    (path,) = event_files(tmp_path)
    records, _ = read_records(path)
    assert 2 <= len(records) and os.path.getsize(path) <= 200000  # intact records, none after the failure


def test_a_url_logdir_gets_the_same_records(tmp_path):
    requires("fsspec", "remote", "a memory:// log dir")
    from tbwriter import reader

    got = {}
    for flag in (True, False):
        url = f"memory://bucket/{uuid.uuid4().hex}/run"
        w = tbwriter.SummaryWriter(url, async_encode=flag)
        for i in range(3):
            w.add_histogram("h", BIG + i, i, walltime=5.0)
            w.add_image("i", IMG, i, walltime=5.0)
            w.add_scalar("s", i, i, walltime=5.0)
            w.flush()
        w.close()
        got[flag] = [e.SerializeToString() for _, e in reader.read_logdir(url) if e.HasField("summary")]
    assert got[True] == got[False] and len(got[True]) == 9


def test_async_encode_false_starts_no_thread(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path, async_encode=False)
    w.add_histogram("h", BIG, 0)
    w.add_image("i", IMG, 0)
    assert w._encoder is None
    w.close()
    assert [e.step for e in accumulator(tmp_path).Histograms("h")] == [0]


def test_close_interrupted_at_every_os_call_with_encoded_values_then_retried(tmp_path):
    from test_interrupted_close import InterruptingOs, interrupted

    from tbwriter import events as events_mod

    def writer(logdir):
        w = tbwriter.SummaryWriter(logdir, max_queue=10**6, flush_secs=10**6)  # the worker never writes
        for i in range(5):
            w.add_image("i", IMG, i)
            w.add_histogram("h", BIG, i)
            w.add_scalar("s", i, i)
        return w

    counted = InterruptingOs()
    w = writer(tmp_path / "count")
    w._encoder.wait()
    events_mod.os = counted
    try:
        w.close()
    finally:
        events_mod.os = os
    for at in range(len(counted.calls)):
        for after in (False, True):
            logdir = tmp_path / f"{at}_{after}"
            w = writer(logdir)
            w._encoder.wait()  # filled: close's os calls are the only ones
            interrupted(w.close, InterruptingOs(at, after))
            w.close()
            (path,) = event_files(logdir)
            got = [(e.summary.value[0].tag, e.step) for e in read_events(path)[1:]]
            assert got == [(t, i) for i in range(5) for t in ("i", "h", "s")], (at, after)


def test_copies_reuse_finished_buffers_never_pending_ones(tmp_path):
    from tbwriter import encoder

    values = RNG.standard_normal(encoder.POOL_MIN_BYTES // 4).astype(np.float32)  # a pooled size
    w = tbwriter.SummaryWriter(tmp_path)
    for i in range(3):
        release = gate(w)
        for k in range(4):  # four copies pending at once: four distinct buffers
            values[0] = 1e6 + 4 * i + k  # each step's maximum
            w.add_histogram("h", values, 4 * i + k)
        release.set()
        w._encoder.wait()
    assert len(w._encoder.spare) == 4  # reused from the second round on, none added
    w.close()
    got = [(e.step, e.histogram_value.max) for e in accumulator(tmp_path).Histograms("h")]
    assert got == [(s, 1e6 + s) for s in range(12)]
