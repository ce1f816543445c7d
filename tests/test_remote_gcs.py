"""gs:// logdirs against a GCS emulator on loopback (gcp-storage-emulator), tested like s3://.

Written by tbwriter through gcsfs, read back by tbwriter's reader, the CLI (in a child
process) and a real `tensorboard --logdir gs://... --load_fast=false` over HTTP; the store
stopped and restarted mid-run; a missing bucket. The Rust data server is not tested here: its
GCS client talks to storage.googleapis.com only (no emulator setting), see docs/remote.md.
"""

import asyncio
import os
import subprocess
import sys
import types
import uuid

import numpy as np
import pytest
from conftest import requires
from tbserver import free_port, tensorboard
from test_remote import scalars

import tbwriter
from tbwriter import remote
from tbwriter.events import EventFileError
from tbwriter.reader import event_files

emulator = requires("gcp_storage_emulator.server", "test", "a GCS emulator on loopback")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANON = {"token": "anon"}  # the emulator takes no credentials; never ask Google's metadata server


class GCS:
    """A gcp-storage-emulator server on loopback, on disk so that it can stop and start again with its data."""

    def __init__(self, data_dir):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data_dir = str(data_dir)
        self.server = None

    def start(self):
        self.server = emulator.create_server("127.0.0.1", self.port, data_dir=self.data_dir, default_bucket="runs")
        self.server.start()

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    # gcsfs's default filesystem first asks a gRPC control API for the bucket's layout, which an
    # emulator does not serve (60 s per call); NO_GCE_CHECK keeps google-auth off the metadata server.
    env = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true"}
    saved = {k: os.environ.get(k) for k in [*env, "STORAGE_EMULATOR_HOST"]}
    server = GCS(tmp_path_factory.mktemp("gcs"))
    os.environ.update(env, STORAGE_EMULATOR_HOST=server.endpoint)
    import fsspec
    import gcsfs.core

    saved_gs = fsspec.registry.get("gs") or "gcsfs.GCSFileSystem"
    fsspec.register_implementation("gs", gcsfs.core.GCSFileSystem, clobber=True)  # as the flag above, if imported
    server.start()
    try:
        yield server
    finally:
        server.stop()
        fsspec.register_implementation("gs", saved_gs, clobber=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(*args) -> subprocess.CompletedProcess:
    """`python -m tbwriter ARGS` in a child process, with the emulator's environment."""
    return subprocess.run(
        [sys.executable, "-m", "tbwriter", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([REPO, *sys.path])},
        timeout=120,
    )


def test_gs_run_read_by_tbwriter_the_cli_and_tensorboard(gcs, tmp_path):
    logdir = f"gs://runs/{uuid.uuid4().hex}"
    rng = np.random.default_rng(0)
    with tbwriter.SummaryWriter(logdir + "/main", storage_options=ANON) as w:
        for step in range(300):
            w.add_scalar("loss", 1 / (step + 1), step)
            if step % 100 == 99:
                w.add_histogram("weights", rng.normal(size=50), step)
                w.flush()
    (objects,) = event_files(logdir, storage_options=ANON).values()
    assert len(objects) == 1 + 3 and objects == sorted(objects)
    assert scalars(logdir, storage_options=ANON) == {s: np.float32(1 / (s + 1)) for s in range(300)}
    done = cli("inspect", logdir)
    assert done.returncode == 0, done.stderr
    assert "run main  (4 files, 304 events)" in done.stdout and "loss     scalar     0..299   300" in done.stdout
    done = cli("export", logdir, "--csv", str(tmp_path / "s.csv"))
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 300
    with tensorboard(logdir, load_fast=False) as tb:  # the Python loader reads gs:// through fsspec
        loss = tb.wait_for(
            lambda: tb.json("/data/plugin/scalars/scalars", run="main", tag="loss"), lambda r: len(r) == 300
        )
        assert [p[1] for p in loss] == list(range(300))
        assert [p[2] for p in loss] == pytest.approx([1 / (s + 1) for s in range(300)], rel=1e-6)
        hist = tb.wait_for(
            lambda: tb.json("/data/plugin/histograms/histograms", run="main", tag="weights"), lambda r: len(r) == 3
        )
        assert [h[1] for h in hist] == [99, 199, 299]


def test_gs_store_stopped_then_back_loses_nothing_and_close_is_retried(gcs, monkeypatch):
    # gcsfs retries every request 6 times over ~16 s itself (not configurable): shorten its sleeps.
    import gcsfs.retry

    async def quick(delay, *args):
        await asyncio.sleep(0.01)

    monkeypatch.setattr(gcsfs.retry, "asyncio", types.SimpleNamespace(**{**vars(asyncio), "sleep": quick}))
    monkeypatch.setattr(remote, "FIRST_DELAY", 0.01)
    logdir = f"gs://runs/{uuid.uuid4().hex}"
    w = tbwriter.SummaryWriter(logdir, storage_options=ANON)
    for step in range(100):
        w.add_scalar("loss", step, step)
    w.flush()
    gcs.stop()
    try:
        for step in range(100, 200):
            w.add_scalar("loss", step, step)
        with pytest.raises(EventFileError, match=f"could not store.*Cannot connect.*{logdir}/events") as e:
            w.flush()
        assert "\n" not in str(e.value)
        with pytest.raises(EventFileError):
            w.close()  # still down: raises, keeps the records
    finally:
        gcs.start()
    w.close()  # retried: uploads them
    assert scalars(logdir, storage_options=ANON) == {s: s for s in range(200)}


def test_gs_a_missing_bucket_is_an_error_naming_the_url_and_never_created(gcs):
    with pytest.raises(EventFileError, match="gs://no-such-bucket/run/events"):
        tbwriter.SummaryWriter("gs://no-such-bucket/run", storage_options=ANON)
    import gcsfs.core

    assert not gcsfs.core.GCSFileSystem(**ANON).exists("no-such-bucket")
