"""tbwriter vs tensorboardX writing one run to S3 (a moto server on loopback), side by side.

The run: 20,000 steps, 2 scalars per step, a 1,000-value histogram every 100 steps, flush()
every 100 steps, then close(). Each writer runs in its own fresh process (peak memory is
its own; "growth" is peak RSS minus RSS after step 100, when both are warmed up),
alternating, and the server, in this process, counts the bytes uploaded
(request bodies of PUT/POST). Every run is read back (all scalars and histograms present)
before its figures count. Prints medians and the ratios.

    python bench/remote.py [--repeats 3] [--steps 20000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from tbwriter.reader import event_files, read_logdir  # noqa: E402

CHILD = r"""
import json, os, sys, time
import numpy as np
def status(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])  # kB
writer_kind, logdir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if writer_kind == "tbwriter":
    from tbwriter import SummaryWriter
else:
    from tensorboardX import SummaryWriter
# Each peer's S3 client set up first, as a long run would have it.
if writer_kind == "tbwriter":
    import fsspec
    fsspec.filesystem("s3").ls("bench")  # the instance the writer reuses (fsspec caches it)
else:
    import boto3
    boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT"]).list_objects_v2(Bucket="bench")
rng = np.random.default_rng(0)
hists = [rng.normal(size=1000).astype(np.float32) for _ in range(steps // 100)]
t = time.perf_counter()
w = SummaryWriter(logdir)
for step in range(steps):
    if step == 100:  # warmed up (first histogram, first upload): growth from here is the run's
        rss0 = status("VmRSS")
    w.add_scalar("loss", 1.0 / (step + 1), step)
    w.add_scalar("accuracy", step / steps, step)
    if step % 100 == 0:
        w.add_histogram("weights", hists[step // 100], step)
    if step % 100 == 99:
        w.flush()
w.close()
wall = time.perf_counter() - t
peak = status("VmHWM")  # not ru_maxrss: that keeps the forking parent's size from before exec
print(json.dumps({"wall": wall, "peak_kb": peak, "growth_kb": peak - rss0}))
"""


class Counter:
    """WSGI middleware: bytes of request bodies that upload data (PUT, POST), and request counts."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.bytes = 0
        self.requests = 0

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] in ("PUT", "POST"):
            # aws-chunked bodies carry the payload size in this header; others in Content-Length
            n = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH") or environ.get("CONTENT_LENGTH") or 0
            with self.lock:
                self.bytes += int(n)
                self.requests += 1
        return self.app(environ, start_response)


def serve_s3(middleware, bucket: str) -> tuple:
    """A moto S3 server on a free loopback port behind middleware(app), this process's AWS
    settings pointed at it and `bucket` created; return (endpoint, the middleware, server)."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = middleware(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        S3_ENDPOINT=endpoint,  # tensorboardX's
    )
    import boto3

    boto3.client("s3").create_bucket(Bucket=bucket)
    return endpoint, app, server


def check(logdir: str, steps: int) -> int:
    """Assert the run holds every scalar and histogram; return the stored event bytes."""
    counts = {}
    for _run, event in read_logdir(logdir):
        for v in event.summary.value:
            counts[v.tag] = counts.get(v.tag, 0) + 1
    want = {"loss": steps, "accuracy": steps, "weights": steps // 100}
    assert counts == want, f"{logdir}: read back {counts}, expected {want}"
    import fsspec

    fs = fsspec.filesystem("s3")
    return sum(fs.size(p) for paths in event_files(logdir).values() for p in paths)


def run(kind: str, logdir: str, steps: int, counter: Counter) -> dict:
    """One writer's run in a fresh process; its figures plus the server's count."""
    before_bytes, before_requests = counter.bytes, counter.requests
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, logdir, str(steps)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        check=False,
        timeout=3600,
    )
    if done.returncode:
        sys.exit(f"{kind} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["uploaded"] = counter.bytes - before_bytes
    out["requests"] = counter.requests - before_requests
    out["stored"] = check(logdir, steps)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20_000)
    args = p.parse_args()
    endpoint, counter, server = serve_s3(Counter, "bench")
    results = {"tbwriter": [], "tensorboardX": []}
    try:
        for r in range(args.repeats):
            for kind in ("tbwriter", "tensorboardX") if r % 2 == 0 else ("tensorboardX", "tbwriter"):
                res = run(kind, f"s3://bench/{kind}-{uuid.uuid4().hex[:8]}", args.steps, counter)
                results[kind].append(res)
                print(
                    f"  {kind:12s} wall {res['wall']:7.2f} s  uploaded {res['uploaded'] / 1e6:9.2f} MB "
                    f"({res['requests']} PUT/POST)  stored {res['stored'] / 1e6:6.2f} MB  "
                    f"peak RSS {res['peak_kb'] / 1024:6.1f} MiB (+{res['growth_kb'] / 1024:.1f} during the run)",
                    flush=True,
                )
    finally:
        server.shutdown()
    med = {k: {f: statistics.median(x[f] for x in v) for f in v[0]} for k, v in results.items()}
    a, b = med["tbwriter"], med["tensorboardX"]
    print(f"\n{args.steps} steps, medians of {args.repeats} alternating runs each")
    print(
        f"{'':14s}{'wall s':>9s}{'uploaded MB':>13s}{'stored MB':>11s}{'upload/stored':>15s}"
        f"{'peak RSS MiB':>14s}{'growth MiB':>12s}"
    )
    for k, m in med.items():
        print(
            f"{k:14s}{m['wall']:9.2f}{m['uploaded'] / 1e6:13.2f}{m['stored'] / 1e6:11.2f}"
            f"{m['uploaded'] / m['stored']:15.2f}{m['peak_kb'] / 1024:14.1f}{m['growth_kb'] / 1024:12.1f}"
        )
    print(
        f"tensorboardX / tbwriter: wall {b['wall'] / a['wall']:.1f}x, bytes uploaded "
        f"{b['uploaded'] / a['uploaded']:.1f}x, peak RSS {b['peak_kb'] / a['peak_kb']:.2f}x, "
        f"growth during the run {b['growth_kb'] / max(a['growth_kb'], 1):.1f}x"
    )


if __name__ == "__main__":
    main()
