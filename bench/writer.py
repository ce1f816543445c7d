"""tbwriter vs tensorboardX, side by side in one run: add_scalar, small and big add_histogram;
then add_image, add_embedding and add_figure against both peers (tensorboardX and torch.utils.tensorboard).

Prints per-call medians over several interleaved repeats and the three ratios, in wall-clock
time and in process CPU time (all threads; steadier when other jobs share the machine).
Also measures the buffering design choice: add_scalar with inline writes (what tbwriter
does) against handing each full batch to a writer thread.

    python bench/writer.py [--repeats 7] [--scale 1.0] [--case "add_histogram 512x512 f32"]
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


def per_call(make_writer, call, n: int) -> tuple:
    """(wall, cpu) seconds per call of call(writer, i) over n calls, flush included (data in the OS)."""
    d = tempfile.mkdtemp(prefix="bench-writer-")
    w = make_writer(d)
    try:
        call(w, 0)  # first call: tag prefix, metadata, lazy imports
        t, c = time.perf_counter(), time.process_time()
        for i in range(1, n + 1):
            call(w, i)
        w.flush()
        return (time.perf_counter() - t) / n, (time.process_time() - c) / n
    finally:
        w.close()
        shutil.rmtree(d, ignore_errors=True)


def medians(samples: list) -> tuple:
    """Median wall and median CPU seconds of (wall, cpu) samples."""
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


CASES = [
    # name, call, calls per repeat for tbwriter, for tensorboardX
    ("add_scalar", lambda w, i: w.add_scalar("loss", 0.5 / (i + 1), i), 60_000, 4_000),
    ("add_histogram 4 values", lambda w, i: w.add_histogram("w", SMALL, i), 5_000, 500),
    ("add_histogram 512x512 f32", lambda w, i: w.add_histogram("w", BIG, i), 8, 8),
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
        s = self.file_writer.event_writer._state
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
        s = self.file_writer.event_writer._state
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
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the call counts (e.g. 0.1 for a quick look)")
    ap.add_argument("--case", choices=[c[0] for c in CASES], help="run only this case (and skip the design check)")
    ap.add_argument("--media-only", action="store_true", help="only add_image, add_embedding, add_figure")
    args = ap.parse_args()
    if args.media_only:
        return media(args.repeats, args.scale)
    if tensorboardX is None:
        sys.exit("tensorboardX is not installed: pip install -e .[bench]")
    print(
        f"tbwriter vs tensorboardX {tensorboardX.__version__}, medians of {args.repeats} interleaved repeats, "
        f"{os.cpu_count()} cores"
    )
    ratios = []
    for name, call, n_ours, n_peer in CASES:
        if args.case and name != args.case:
            continue
        ours, peer = [], []
        for _ in range(args.repeats):
            ours.append(per_call(tbwriter.SummaryWriter, call, max(1, int(n_ours * args.scale))))
            peer.append(per_call(lambda d: tensorboardX.SummaryWriter(d), call, max(1, int(n_peer * args.scale))))
        (o, oc), (p, pc) = medians(ours), medians(peer)
        ratios.append((name, p / o, pc / oc))
        print(
            f"{name:26s} tbwriter {1 / o:9,.0f}/s ({o * 1e6:8.2f} us, cpu {oc * 1e6:8.2f} us)   "
            f"tensorboardX {1 / p:7,.0f}/s ({p * 1e6:8.2f} us, cpu {pc * 1e6:8.2f} us)   "
            f"ratio {p / o:5.1f}x (cpu {pc / oc:5.1f}x)"
        )

    if args.case:
        print("ratios (wall, cpu): " + ", ".join(f"{name} {r:.1f}x, {rc:.1f}x" for name, r, rc in ratios))
        return
    # Design check: add_scalar with inline writes (tbwriter) vs full batches handed to a writer thread.
    n = max(1, int(60_000 * args.scale))
    scalar = CASES[0][1]
    inline, threaded = [], []
    for _ in range(args.repeats):
        inline.append(per_call(tbwriter.SummaryWriter, scalar, n))
        threaded.append(per_call(ThreadedSummaryWriter, scalar, n))
    (i, ic), (t, tc) = medians(inline), medians(threaded)
    print(
        f"{'buffering design':26s} add_scalar inline writes {i * 1e6:.2f} us (cpu {ic * 1e6:.2f}), writer thread "
        f"{t * 1e6:.2f} us (cpu {tc * 1e6:.2f}): inline is {t / i:.2f}x the speed (cpu {tc / ic:.2f}x)"
    )
    print("ratios (wall, cpu): " + ", ".join(f"{name} {r:.1f}x, {rc:.1f}x" for name, r, rc in ratios))

    media(args.repeats, args.scale)


IMAGE = np.random.default_rng(1).random((3, 256, 256), dtype=np.float32)
EMBEDDING = np.random.default_rng(2).standard_normal((1000, 64)).astype(np.float32)
LABELS = [f"point {i}" for i in range(1000)]
SPRITES = np.random.default_rng(3).random((1000, 3, 16, 16), dtype=np.float32)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(4, 3), dpi=80)
    plt.plot(np.sin(np.linspace(0, 10, 200)))
    return fig


def media(repeats: int, scale: float) -> None:
    """add_image, add_embedding, add_figure: tbwriter vs each installed peer, medians of interleaved repeats."""
    import torch

    writers = {"tbwriter": tbwriter.SummaryWriter}
    if tensorboardX is not None:
        writers["tensorboardX"] = tensorboardX.SummaryWriter
    try:
        from torch.utils.tensorboard import SummaryWriter as TorchWriter

        writers["torch"] = TorchWriter
    except ImportError as e:
        print(f"torch.utils.tensorboard not measured: {e}")
    fig = _figure()
    sprites = torch.from_numpy(SPRITES)  # torch's add_embedding needs a torch label_img
    cases = [
        ("add_image 3x256x256 f32", lambda w, i: w.add_image("img", IMAGE, i), 40),
        ("add_embedding 1000x64+sprite", lambda w, i: w.add_embedding(EMBEDDING, LABELS, sprites, i), 3),
        ("add_figure 320x240", lambda w, i: w.add_figure("fig", fig, i, close=False), 20),
    ]
    for name, call, n in cases:
        samples = {k: [] for k in writers}
        for _ in range(repeats):
            for k, cls in writers.items():
                samples[k].append(per_call(cls, call, max(1, int(n * scale))))
        (o, oc) = medians(samples["tbwriter"])
        line = f"{name:30s} tbwriter {o * 1e3:8.2f} ms (cpu {oc * 1e3:8.2f})"
        for k in list(writers)[1:]:
            p, pc = medians(samples[k])
            line += f"   {k} {p * 1e3:8.2f} ms (cpu {pc * 1e3:8.2f}) ratio {p / o:4.1f}x (cpu {pc / oc:4.1f}x)"
        print(line)


if __name__ == "__main__":
    main()
