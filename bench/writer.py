"""tbwriter vs tensorboardX, side by side in one run: add_scalar, small and big add_histogram.

Prints per-call medians over several interleaved repeats and the three ratios. Also measures
the buffering design choice: inline buffered writes (what tbwriter does) against handing each
record to a background writer thread through a queue.

    python bench/writer.py [--repeats 5]
"""
import argparse
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tbwriter  # noqa: E402
from tbwriter import events  # noqa: E402

try:
    import tensorboardX
except ImportError:  # the bench extra: pip install -e .[bench]
    tensorboardX = None

SMALL = np.array([0.1, -0.5, 2.0, 3.0], dtype=np.float32)  # the XOR lab's case: 4 weights
BIG = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)


def per_call(make_writer, call, n: int) -> float:
    """Seconds per call of call(writer, i) over n calls, flush included (data in the OS)."""
    d = tempfile.mkdtemp(prefix="bench-writer-")
    w = make_writer(d)
    try:
        call(w, 0)  # first call: tag prefix, metadata, lazy imports
        t = time.perf_counter()
        for i in range(1, n + 1):
            call(w, i)
        w.flush()
        return (time.perf_counter() - t) / n
    finally:
        w.close()
        shutil.rmtree(d, ignore_errors=True)


CASES = [
    # name, call, calls per repeat for tbwriter, for tensorboardX
    ("add_scalar", lambda w, i: w.add_scalar("loss", 0.5 / (i + 1), i), 200_000, 10_000),
    ("add_histogram 4 values", lambda w, i: w.add_histogram("w", SMALL, i), 10_000, 1_000),
    ("add_histogram 512x512 f32", lambda w, i: w.add_histogram("w", BIG, i), 15, 15),
]


class _HandOffState(events._FileState):
    """tbwriter's file state, except that full batches go to a writer thread instead of os.write."""

    __slots__ = ()

    def append(self, record: bytes):
        buf = self.buf
        buf.append(record)
        if len(buf) >= self.max_queue:
            with self.lock:
                n = len(buf)
                data = b"".join(buf[:n])
                del buf[:n]
            _HANDOFF[id(self)].put(data)


_HANDOFF = {}


class ThreadedSummaryWriter(tbwriter.SummaryWriter):
    """The alternative design for the buffering check: a writer thread does the writes."""

    def __init__(self, logdir):
        super().__init__(logdir)
        s = self.file_writer._state
        self.q = _HANDOFF[id(s)] = queue.SimpleQueue()
        s.__class__ = _HandOffState
        self.t = threading.Thread(target=self._run, args=(s.fd,), daemon=True)
        self.t.start()

    def _run(self, fd):
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, bytes):
                os.write(fd, item)
            else:
                item.set()

    def flush(self):
        s = self.file_writer._state
        with s.lock:
            data = b"".join(s.buf)
            s.buf.clear()
        self.q.put(data)
        done = threading.Event()
        self.q.put(done)
        done.wait()

    def close(self):
        self.flush()
        self.q.put(None)
        self.t.join()
        super().close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the call counts (e.g. 0.1 for a quick look)")
    args = ap.parse_args()
    if tensorboardX is None:
        sys.exit("tensorboardX is not installed: pip install -e .[bench]")
    print(f"tbwriter vs tensorboardX {tensorboardX.__version__}, medians of {args.repeats} interleaved repeats, "
          f"{os.cpu_count()} cores")
    ratios = []
    for name, call, n_ours, n_peer in CASES:
        ours, peer = [], []
        for _ in range(args.repeats):
            ours.append(per_call(tbwriter.SummaryWriter, call, max(1, int(n_ours * args.scale))))
            peer.append(per_call(lambda d: tensorboardX.SummaryWriter(d), call, max(1, int(n_peer * args.scale))))
        o, p = statistics.median(ours), statistics.median(peer)
        ratios.append((name, p / o))
        print(f"{name:28s} tbwriter {1 / o:12,.0f}/s ({o * 1e6:9.2f} us)   "
              f"tensorboardX {1 / p:10,.0f}/s ({p * 1e6:9.2f} us)   ratio {p / o:6.1f}x")

    # Design check: add_scalar with inline writes (tbwriter) vs batches handed to a writer thread.
    n = max(1, int(100_000 * args.scale))
    scalar = CASES[0][1]
    inline, threaded = [], []
    for _ in range(args.repeats):
        inline.append(per_call(tbwriter.SummaryWriter, scalar, n))
        threaded.append(per_call(ThreadedSummaryWriter, scalar, n))
    inline, threaded = statistics.median(inline), statistics.median(threaded)
    print(f"{'buffering design':28s} add_scalar with inline writes {inline * 1e6:.2f} us, with a writer thread "
          f"{threaded * 1e6:.2f} us: inline is {threaded / inline:.2f}x the speed")
    print("ratios: " + ", ".join(f"{name} {r:.1f}x" for name, r in ratios))


if __name__ == "__main__":
    main()
