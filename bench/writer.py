"""tbwriter vs tensorboardX, side by side in one run: add_scalar, small and big add_histogram;
then add_image, add_embedding and add_figure against both peers (tensorboardX and torch.utils.tensorboard).

Prints per-call medians over several interleaved repeats and the three ratios, in wall-clock
time and in process CPU time (all threads; steadier when other jobs share the machine).
Also measures the buffering design choice: add_scalar with inline writes (what tbwriter
does) against handing each full batch to a writer thread.

--loop (issue 23): a training loop of ~20 ms of one-threaded NumPy per step that logs a
1,000,000-value histogram and a 3x512x512 image every step, 30 steps, each writer in its own
process (tbwriter, tbwriter with async_encode=False, tensorboardX, torch.utils.tensorboard),
taking turns; then, in the same processes, the blocking time of add_figure and of
add_images(64x3x32x32). Blocking time = time inside the add_* calls; the loop's time ends when
close() has returned (every value written).

    python bench/writer.py [--repeats 7] [--scale 1.0] [--case "add_histogram 512x512 f32"]
    python bench/writer.py --loop [--repeats 3] [--steps 30]
"""

import argparse
import json
import os
import queue
import shutil
import statistics
import subprocess
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
    ap.add_argument("--loop", action="store_true", help="only the training loop with heavy summaries (issue 23)")
    ap.add_argument("--steps", type=int, default=30, help="--loop: steps per run")
    ap.add_argument("--writers", nargs="+", choices=list(LOOP_WRITERS), default=list(LOOP_WRITERS), help="--loop")
    ap.add_argument("--loop-child", nargs=2, metavar=("WRITER", "LOGDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loop_child:
        return print(json.dumps(loop_child(*args.loop_child, args.steps)))
    if args.loop:
        return loop(args.repeats, args.steps, args.writers)
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


# -- issue 23: heavy summaries in a training loop, each writer in its own process -----------------

LOOP_WRITERS = {
    "tbwriter": "tbwriter (async_encode, the default)",
    "tbwriter-sync": "tbwriter async_encode=False",
    "tensorboardX": "tensorboardX",
    "torch": "torch.utils.tensorboard",
}
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _loop_writer(name: str, logdir: str):
    if name == "tbwriter":
        return tbwriter.SummaryWriter(logdir)
    if name == "tbwriter-sync":
        return tbwriter.SummaryWriter(logdir, async_encode=False)
    if name == "tensorboardX":
        return tensorboardX.SummaryWriter(logdir)
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(logdir)


def loop_child(name: str, logdir: str, steps: int) -> dict:
    """One writer's run in this process: the loop, then add_figure and add_images per-call blocking times."""
    if name == "torch":
        import torch

        torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 512)).astype(np.float32)
    m = rng.standard_normal((512, 512)).astype(np.float32) / 23
    weights = rng.standard_normal(1_000_000).astype(np.float32)  # changed in place every step
    image = rng.random((3, 512, 512), dtype=np.float32)

    def work():  # ~20 ms on one core of the project's machine: matmuls, then in-place updates
        h = x
        for _ in range(5):
            h = np.tanh(h @ m)
        weights[:] = weights * np.float32(0.999) + np.float32(1e-3) * h.ravel()[:1].item()
        image[0, :2] = h[:2, :512]

    for _ in range(2):
        work()  # warm up BLAS and the caches
    alone = []
    for _ in range(5):
        t = time.perf_counter()
        work()
        alone.append(time.perf_counter() - t)
    w = _loop_writer(name, os.path.join(logdir, "loop"))
    w.add_scalar("warm", 0.0, 0)  # lazy imports happen before the clock starts
    blocking = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        work()
        t = time.perf_counter()
        w.add_histogram("weights", weights, i)
        w.add_image("image", image, i)
        blocking.append(time.perf_counter() - t)
    w.close()
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "work": statistics.median(alone),
        "blocking": sum(blocking),
        "step_blocking": statistics.median(blocking),
        "loop": total,
        "cpu": cpu,
    }
    fig = _figure()
    batch = rng.random((64, 3, 32, 32), dtype=np.float32)
    cases = {
        "add_figure": lambda w, i: w.add_figure("fig", fig, i, close=False),
        "add_images": lambda w, i: w.add_images("imgs", batch, i),
    }
    for case, call in cases.items():
        w = _loop_writer(name, os.path.join(logdir, case))
        call(w, 0)  # lazy imports
        times = []
        for i in range(1, 11):
            work()  # the calls come from a training loop, not back to back
            t = time.perf_counter()
            call(w, i)
            times.append(time.perf_counter() - t)
        w.close()
        out[case] = statistics.median(times)
    return out


def loop(repeats: int, steps: int, writers: list) -> None:
    """Run loop_child for each writer in its own process, taking turns; print medians and ratios."""
    if tensorboardX is None:
        sys.exit("tensorboardX is not installed: pip install -e .[bench]")
    print(
        f"training loop, {steps} steps, a 1,000,000-value histogram and a 3x512x512 image per step; "
        f"medians of {repeats} runs per writer, each in its own process, taking turns; load {os.getloadavg()[0]:.1f}"
    )
    runs = {k: [] for k in writers}
    env = dict(os.environ, **ONE_THREAD)
    for r in range(repeats):
        order = writers[r % len(writers) :] + writers[: r % len(writers)]
        for name in order:
            d = tempfile.mkdtemp(prefix="bench-loop-")
            try:
                proc = subprocess.run(
                    [sys.executable, __file__, "--loop-child", name, d, "--steps", str(steps)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if proc.returncode:
                    sys.exit(f"{name} failed:\n{proc.stderr[-2000:]}")
                runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            finally:
                shutil.rmtree(d, ignore_errors=True)
    med = {k: {f: statistics.median(run[f] for run in v) for f in v[0]} for k, v in runs.items()}
    ours = med["tbwriter"]
    print(
        f"{'writer':42s} {'work/step':>9s} {'blocking':>9s} {'(per step)':>10s} {'loop+close':>10s} {'(cpu)':>7s}"
        f" {'add_figure':>10s} {'add_images':>10s}"
    )
    for k in writers:
        m = med[k]
        print(
            f"{LOOP_WRITERS[k]:42s} {m['work'] * 1e3:7.1f}ms {m['blocking']:8.3f}s {m['step_blocking'] * 1e3:8.2f}ms "
            f"{m['loop']:9.3f}s {m['cpu']:6.2f}s {m['add_figure'] * 1e3:8.2f}ms {m['add_images'] * 1e3:8.2f}ms"
        )
    for k in [k for k in ("tensorboardX", "torch", "tbwriter-sync") if k in writers]:
        m = med[k]
        print(
            f"tbwriter vs {LOOP_WRITERS[k]}: blocking {m['blocking'] / ours['blocking']:.1f}x less, loop "
            f"{m['loop'] / ours['loop']:.2f}x faster, add_figure {m['add_figure'] / ours['add_figure']:.1f}x, "
            f"add_images {m['add_images'] / ours['add_images']:.1f}x less blocking"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
