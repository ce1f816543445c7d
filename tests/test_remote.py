"""Remote logdirs: runs written to object storage and read back by tbwriter and TensorBoard.

`memory://` (and a failing variant of it) for the fast unit tests; a real S3 server (moto's
server mode on loopback, one per module) for the rest, read by tbwriter's reader and by a
real `tensorboard --logdir s3://...` (boto3, S3_ENDPOINT) through its HTTP API.
"""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import boto3
import fsspec
import numpy as np
import pytest
import s3fs
from fsspec.implementations.memory import MemoryFileSystem
from moto.server import ThreadedMotoServer
from conftest import requires
from tbserver import free_port, tensorboard

import tbwriter
from tbwriter import remote
from tbwriter.__main__ import main as cli
from tbwriter.events import EventFileError, WriterStateError
from tbwriter.reader import event_files, read_logdir, read_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scalars(logdir, tag="loss", **kw) -> dict:
    """{step: value} of one tag in every run under logdir, read by tbwriter's reader."""
    out = {}
    for _run, event in read_logdir(logdir, **kw):
        for v in event.summary.value:
            if v.tag == tag:
                assert event.step not in out, f"step {event.step} stored twice"
                out[event.step] = v.simple_value
    return out


def record_bytes(logdir, **kw) -> int:
    """Bytes of every record of every event object under logdir, framing included."""
    return sum(
        16 + len(r.data)
        for paths in event_files(logdir, **kw).values()
        for p in paths
        for r in read_records(p, storage_options=kw.get("storage_options"))
    )


# --- memory:// ------------------------------------------------------------------------------


def test_each_flush_stores_only_new_records_as_one_object_in_write_order():
    url = f"memory://bucket/{uuid.uuid4().hex}/run"
    w = tbwriter.SummaryWriter(url)
    state = w.file_writer.event_writer._state
    for step in range(300):
        w.add_scalar("loss", step / 10, step)
        if step % 50 == 49:
            w.add_histogram("weights", np.arange(step, step + 20.0), step)
            w.flush()
    w.close()
    (objects,) = event_files(url).values()
    assert len(objects) == 1 + 6  # the file_version object, then one per flush
    assert objects == sorted(objects)
    got = scalars(url)
    assert got == {s: np.float32(s / 10) for s in range(300)}
    # every object holds only its own records: the bytes stored are the records' bytes
    assert state.uploaded == record_bytes(url) == sum(MemoryFileSystem().size(p) for p in objects)


def test_sub_runs_and_reader_and_cli_take_the_url(tmp_path, capsys):
    url = f"memory://bucket/{uuid.uuid4().hex}"
    with tbwriter.SummaryWriter(url + "/exp") as w:
        w.add_scalars("acc", {"train": 0.5, "test": 0.25}, 3)
    assert sorted(event_files(url)) == ["exp", "exp/acc_test", "exp/acc_train"]
    assert cli(["inspect", url]) == 0
    assert "run exp/acc_test  (2 files, 2 events)" in capsys.readouterr().out
    out = tmp_path / "s.csv"
    assert cli(["export", url, "--csv", str(out)]) == 0
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("exp/acc_test", "acc", "3", "0.25"),
        ("exp/acc_train", "acc", "3", "0.5"),
    ]
    assert cli(["export", url, "--csv", "s3://b/out.csv"]) == 2
    assert "outputs are local files" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["nosuchscheme://bucket/run", "s3:/bucket//x://y"])
def test_an_unknown_scheme_is_a_one_line_error_and_nothing_local(tmp_path, monkeypatch, capsys, url):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(remote.UnsupportedURLError, match="nosuchscheme|expected a local path or a URL") as e:
        tbwriter.SummaryWriter(url)
    assert "\n" not in str(e.value)
    assert cli(["inspect", url]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("tbwriter: error: logdir")
    assert os.listdir(tmp_path) == []


def test_a_missing_implementation_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['s3fs'] = None\n"  # as if s3fs were not installed
        "from tbwriter.__main__ import main\n"
        "sys.exit(main(['inspect', 's3://bucket/run']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        timeout=60,
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "s3fs" in line and "npnn-tbwriter[remote]" in line
    assert os.listdir(tmp_path) == []


def test_local_paths_do_not_import_fsspec(tmp_path):
    code = (
        "import sys, tbwriter\n"
        f"w = tbwriter.SummaryWriter({str(tmp_path)!r}); w.add_scalar('a', 1.0, 1); w.close()\n"
        f"from tbwriter.reader import read_logdir; list(read_logdir({str(tmp_path)!r}))\n"
        "print(sorted(m for m in sys.modules if m.startswith(('fsspec', 'tbwriter.remote'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_storage_options_with_a_local_path_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="storage_options"):
        tbwriter.SummaryWriter(str(tmp_path), storage_options={"anon": True})
    assert os.listdir(tmp_path) == []


class FlakyFileSystem(MemoryFileSystem):
    """memory:// whose uploads fail while `down` is set, as a store that does not answer."""

    protocol = "flaky"
    down = False
    puts = 0

    def pipe_file(self, path, value, **kwargs):
        type(self).puts += 1
        if type(self).down:  # quoting the path, as clients do: a login in the URL is in it
            raise ConnectionResetError(104, f"Connection reset by peer while storing {path}")
        return super().pipe_file(path, value, **kwargs)


@pytest.fixture
def flaky(monkeypatch):
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    monkeypatch.setattr(remote, "FIRST_DELAY", 0.01)
    monkeypatch.setattr(FlakyFileSystem, "down", False)
    monkeypatch.setattr(FlakyFileSystem, "puts", 0)
    return FlakyFileSystem


def test_a_failing_store_keeps_records_and_raises_at_the_next_call(flaky):
    url = f"flaky://bucket/{uuid.uuid4().hex}"
    w = tbwriter.SummaryWriter(url)
    for step in range(10):
        w.add_scalar("loss", step, step)
    w.flush()
    flaky.down = True
    flaky.puts = 0
    for step in range(10, 20):
        w.add_scalar("loss", step, step)
    with pytest.raises(EventFileError, match="could not store") as e:
        w.flush()
    assert e.value.filename.startswith(url + "/events.out.tfevents.")
    assert flaky.puts == remote.ATTEMPTS  # bounded retries
    assert not w.file_writer.event_writer.closed
    w.add_scalar("loss", 20, 20)  # the error was raised once: the writer goes on
    with pytest.raises(EventFileError):
        w.flush()  # still down: raised again, nothing dropped
    flaky.down = False
    for step in range(21, 30):
        w.add_scalar("loss", step, step)
    w.flush()
    w.close()
    assert scalars(url) == {s: s for s in range(30)}  # nothing lost, nothing twice, in order


def test_timer_failure_surfaces_from_the_next_add_and_bounded_memory_refuses(flaky, monkeypatch):
    monkeypatch.setattr(remote, "MAX_PENDING", 2000)
    url = f"flaky://bucket/{uuid.uuid4().hex}"
    w = tbwriter.FileWriter(url)
    state = w.event_writer._state
    flaky.down = True
    w.add_scalar_value("loss", 1.0, 1)
    state.timer_flush()  # what the flush thread does every flush_secs
    with pytest.raises(EventFileError, match=f"did not queue this record.*{url}"):
        w.add_scalar_value("loss", 2.0, 2)  # refused, as the error says
    w.add_scalar_value("loss", 3.0, 3)
    with pytest.raises(EventFileError, match="refused a record"):
        for step in range(4, 1000):
            w.add_scalar_value("loss", float(step), step)
    refused_at = step
    assert state.size < 2000 + 100
    with pytest.raises(EventFileError):
        w.close()  # the store is still down: the close raises, the records stay
    flaky.down = False
    w.close()  # a second close retries
    assert sorted(scalars(url)) == [1, 3, *range(4, refused_at)]
    with pytest.raises(WriterStateError):
        w.add_scalar_value("loss", 1.0, 1)


def test_summarywriter_close_is_retried_once_the_store_is_back(flaky):
    url = f"flaky://bucket/{uuid.uuid4().hex}"
    w = tbwriter.SummaryWriter(url)
    w.add_scalars("acc", {"train": 0.5}, 0)  # a sub-run, closed by the same close()
    for step in range(5):
        w.add_scalar("loss", step, step)
    flaky.down = True
    with pytest.raises(EventFileError, match="could not store"):
        w.close()
    flaky.down = False
    w.close()  # the retry docs/remote.md promises: it uploads
    w.close()  # then a no-op
    assert scalars(url) == {s: s for s in range(5)}
    assert scalars(url + "/acc_train", "acc") == {0: 0.5}


def test_a_failed_background_upload_refuses_the_next_record_and_says_so(flaky):
    url = f"flaky://bucket/{uuid.uuid4().hex}"
    w = tbwriter.SummaryWriter(url)
    state = w.file_writer.event_writer._state
    w.add_scalar("loss", 1, 1)
    flaky.down = True
    state.timer_flush()  # what the flush thread does every flush_secs
    flaky.down = False
    with pytest.raises(EventFileError, match="did not queue this record: a background upload failed") as e:
        w.add_scalar("loss", 2, 2)
    assert "records queued before it are kept" in str(e.value) and "\n" not in str(e.value)
    w.add_histogram("h", [1.0, 2.0], 3)  # raised once: the next record is taken
    flaky.down = True
    state.timer_flush()
    flaky.down = False
    w.flush()  # a flush retries at once instead of raising the background error
    w.add_scalar("loss", 4, 4)  # the flush superseded it: nothing to refuse
    w.close()
    assert scalars(url) == {1: 1, 4: 4}  # 2 was refused, as its error said
    assert [e.step for _, e in read_logdir(url) if e.summary.value and e.summary.value[0].tag == "h"] == [3]


def test_a_refused_records_tag_metadata_goes_with_the_next_record(flaky):
    url = f"flaky://bucket/{uuid.uuid4().hex}"
    w = tbwriter.SummaryWriter(url)
    w.add_text("other", "queued", 0)
    flaky.down = True
    w.file_writer.event_writer._state.timer_flush()
    flaky.down = False
    with pytest.raises(EventFileError, match="did not queue this record"):
        w.add_text("notes", "refused", 1)  # the tag's first record, which carries its metadata
    w.add_text("notes", "taken", 2)
    w.add_text("notes", "later", 3)
    w.close()
    values = [(e.step, v) for _, e in read_logdir(url) for v in e.summary.value]
    assert [(step, v.metadata.plugin_data.plugin_name) for step, v in values] == [(0, "text"), (2, "text"), (3, "")]


def test_hparams_store_no_group_name_so_no_logdir_and_no_login(flaky):
    from tensorboard.plugins.hparams import metadata as hp_metadata

    url = f"flaky://bucket/{uuid.uuid4().hex}"
    with tbwriter.SummaryWriter(url) as w:
        w.add_hparams({"lr": 0.1}, {"m": 1.0})
    (start,) = [
        hp_metadata.parse_session_start_info_plugin_data(v.metadata.plugin_data.content)
        for _, e in read_logdir(url)
        for v in e.summary.value
        if v.tag == "_hparams_/session_start_info"
    ]
    assert start.group_name == "" and start.hparams["lr"].number_value == 0.1


def test_redact_removes_logins_secret_parameters_and_option_values():
    options = {"key": "AKIDEXAMPLE", "secret": "wJalr/XUtn", "client_kwargs": {"region_name": "us-east-1"}}
    hidden = remote.secret_strings("ftp://bob:p%40ss%2Fw0rd@host:21/run", options)
    text = (
        "ftp://bob:p%40ss%2Fw0rd@host:21/run failed for bob with p@ss/w0rd; "
        "https://h/o?X-Amz-Signature=abc123&x=1&access_token=t0k AKIDEXAMPLE wJalr/XUtn us-east-1"
    )
    assert remote.redact(text, hidden) == (
        "ftp://***@host:21/run failed for *** with ***; https://h/o?X-Amz-Signature=***&x=1&access_token=*** "
        "*** *** us-east-1"
    )
    assert remote.redact("s3://bucket/a@b/c") == "s3://bucket/a@b/c"  # an @ in the path is no login


def test_a_login_in_the_url_is_in_no_message_and_no_object(flaky, capsys, tmp_path):
    url = f"flaky://ann:pa55-w0rd@bucket/{uuid.uuid4().hex}"
    with tbwriter.SummaryWriter(url, keep_scalars_for_json=True) as w:
        writer_path = w.file_writer.event_writer.path
        w.add_hparams({"lr": 0.1}, {"m": 1.0})
        w.add_scalars("acc", {"train": 0.5}, 1, walltime=2.0)
        w.export_scalars_to_json(tmp_path / "acc.json")
        flaky.down = True
        w.add_scalar("loss", 1.0, 1)
        with pytest.raises(EventFileError) as e:
            w.flush()
        flaky.down = False
    with pytest.raises(ValueError, match=r"log dir flaky://\*\*\*@bucket/") as outside:
        w.add_scalars("acc", {"x/../../y": 1.0})
    shown = [str(e.value), e.value.filename, repr(e.value), writer_path, str(outside.value)]
    assert all("pa55-w0rd" not in text and "ann" not in text for text in shown), shown
    assert re.search(r"Connection reset by peer while storing \S*\*\*\*@bucket/", str(e.value)), str(e.value)
    stored = b"".join(MemoryFileSystem().cat_file(p) for p in MemoryFileSystem().find(""))
    assert b"pa55-w0rd" not in stored and b"ann:" not in stored
    assert json.loads((tmp_path / "acc.json").read_text()) == {
        url.replace("ann:pa55-w0rd", "***") + "/acc_train": [[2.0, 1, 0.5]]
    }
    assert cli(["inspect", url + "/nothing-here"]) == 2
    assert cli(["inspect", url + "?sig=s1gnature&x=1"]) == 2
    err = capsys.readouterr().err
    assert "pa55-w0rd" not in err and "s1gnature" not in err and len(err.splitlines()) == 2, err


# --- a real S3 server -------------------------------------------------------------------------


class S3:
    """A moto S3 server on loopback that tests can stop and start again (its data stays)."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self):
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


# Fail fast when the server is down: botocore's own retries would add ~10 s per upload.
FAST = {"config_kwargs": {"retries": {"max_attempts": 1}}}


@pytest.fixture(scope="module")
def s3():
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_ENDPOINT_URL", "S3_ENDPOINT"]}
    server = S3()
    os.environ.update(env, AWS_ENDPOINT_URL=server.endpoint, S3_ENDPOINT=server.endpoint)
    # fsspec caches a filesystem per set of arguments: one made for another module's server (the
    # endpoint came from the environment) would keep calling that stopped server.
    s3fs.S3FileSystem.clear_instance_cache()
    server.start()
    try:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="runs")
        yield server
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_s3_run_read_by_tbwriter_and_by_tensorboard(s3):
    logdir = f"s3://runs/{uuid.uuid4().hex}"
    w = tbwriter.SummaryWriter(logdir + "/main")
    rng = np.random.default_rng(0)
    for step in range(1000):
        w.add_scalar("loss", 1 / (step + 1), step)
        w.add_scalar("acc", step / 1000, step)
        if step % 100 == 0:
            w.add_histogram("weights", rng.normal(size=200) + step / 100, step)
            w.flush()
    w.close()
    assert scalars(logdir) == {s: np.float32(1 / (s + 1)) for s in range(1000)}
    assert cli(["inspect", logdir]) == 0
    with tensorboard(logdir, load_fast=False) as tb:
        loss = tb.wait_for(
            lambda: tb.json("/data/plugin/scalars/scalars", run="main", tag="loss"), lambda r: len(r) == 1000
        )
        assert [p[1] for p in loss] == list(range(1000))
        assert [p[2] for p in loss] == pytest.approx([1 / (s + 1) for s in range(1000)], rel=1e-6)
        acc = tb.json("/data/plugin/scalars/scalars", run="main", tag="acc")
        assert [p[1] for p in acc] == list(range(1000))
        hist = tb.wait_for(
            lambda: tb.json("/data/plugin/histograms/histograms", run="main", tag="weights"), lambda r: len(r) == 10
        )
        assert [h[1] for h in hist] == list(range(0, 1000, 100))
        assert [sum(b[2] for b in h[2]) for h in hist] == pytest.approx([200] * 10)


def test_s3_a_missing_bucket_is_an_error_naming_the_url_and_never_created(s3):
    with pytest.raises(EventFileError, match="bucket does not exist.*s3://no-such-bucket/run/events"):
        tbwriter.SummaryWriter("s3://no-such-bucket/run")
    buckets = boto3.client("s3", endpoint_url=s3.endpoint).list_buckets()["Buckets"]
    assert [b["Name"] for b in buckets] == ["runs"]


def test_s3_ten_thousand_steps_with_frequent_flushes(s3):
    logdir = f"s3://runs/{uuid.uuid4().hex}"
    w = tbwriter.FileWriter(logdir)
    for step in range(10_000):
        w.add_scalar_value("loss", step * 0.5, step)
        if step % 50 == 49:
            w.flush()
    w.close()
    (objects,) = event_files(logdir).values()
    assert len(objects) == 1 + 200
    assert scalars(logdir) == {s: s * 0.5 for s in range(10_000)}
    assert w.event_writer._state.uploaded == record_bytes(logdir)


def test_s3_server_stopped_and_restarted_mid_run(s3, monkeypatch):
    monkeypatch.setattr(remote, "FIRST_DELAY", 0.05)
    logdir = f"s3://runs/{uuid.uuid4().hex}"
    w = tbwriter.FileWriter(logdir, storage_options=FAST)
    for step in range(100):
        w.add_scalar_value("loss", step, step)
    w.flush()
    s3.stop()
    try:
        for step in range(100, 200):
            w.add_scalar_value("loss", step, step)
        with pytest.raises(EventFileError, match=f"could not store.*{logdir}/events") as e:
            w.flush()
        assert "Could not connect" in str(e.value)
    finally:
        s3.start()
    for step in range(200, 300):
        w.add_scalar_value("loss", step, step)
    w.flush()
    w.close()
    assert scalars(logdir) == {s: s for s in range(300)}


KILL_CHILD = """
import sys, tbwriter
w = tbwriter.FileWriter(sys.argv[1])
for step in range(2000):
    w.add_scalar_value("loss", step, step)
    if step == 1499:
        w.flush()
        print("flushed", flush=True)
sys.stdin.read()  # wait to be killed
"""


def test_s3_kill_9_after_flush_loses_nothing_flushed(s3):
    logdir = f"s3://runs/{uuid.uuid4().hex}"
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, logdir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    try:
        assert child.stdout.readline().strip() == b"flushed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert scalars(logdir) == {s: s for s in range(1500)}  # the unflushed 500 are gone, as documented


UPLOAD_LOOP = """
import sys, tbwriter
w = tbwriter.FileWriter(sys.argv[1])
step = 0
while True:
    for _ in range(20_000):  # ~0.9 MB per object: the kill lands mid-upload often
        w.add_scalar_value("loss", step, step)
        step += 1
    w.flush()
    print(step, flush=True)
"""


def test_s3_kill_9_mid_upload_leaves_no_partial_object(s3):
    logdir = f"s3://runs/{uuid.uuid4().hex}"
    child = subprocess.Popen(
        [sys.executable, "-c", UPLOAD_LOOP, logdir], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO}
    )
    try:
        flushed = int(child.stdout.readline())
        time.sleep(0.15)  # the next object is being built or uploaded
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    truncated = []
    got = scalars(logdir, on_truncated=truncated.append)
    assert truncated == []  # every visible object is whole
    assert len(got) >= flushed
    assert got == {s: s for s in range(len(got))}  # whole objects, in order, no gap


def test_s3_a_login_or_a_secret_option_is_in_no_message(s3, capsys, monkeypatch):
    monkeypatch.setattr(remote, "FIRST_DELAY", 0.01)
    login = "s3://AKIDEXAMPLE:wJalrXUtnFEMI@runs/run"
    with pytest.raises(EventFileError) as e:
        tbwriter.SummaryWriter(login, storage_options=FAST)
    assert "s3://***@runs/run/events" in str(e.value) and "\n" not in str(e.value)
    options = {"key": "AKIDEXAMPLE", "secret": "wJalrXUtnFEMI", **FAST}
    with pytest.raises(EventFileError) as missing:
        tbwriter.SummaryWriter("s3://no-such-bucket/run", storage_options=options)
    assert cli(["inspect", login]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tbwriter: error: cannot read s3://***@runs/run: ") and len(err.splitlines()) == 1
    for text in (str(e.value), repr(e.value), str(missing.value), err):
        assert "wJalrXUtnFEMI" not in text and "AKIDEXAMPLE" not in text, text


FTP_PASSWORD = "s3cret-PW"


@pytest.fixture(scope="module")
def ftp(tmp_path_factory):
    """A pyftpdlib FTP server on loopback, user alice: ftp:// takes the login in the URL (always stopped)."""
    requires("pyftpdlib", "test", "an FTP server on loopback")
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    root = tmp_path_factory.mktemp("ftp")
    users = DummyAuthorizer()
    users.add_user("alice", FTP_PASSWORD, str(root), perm="elradfmwMT")
    handler = type("Handler", (FTPHandler,), {"authorizer": users, "auth_failed_timeout": 0})  # no 3 s delay
    server = ThreadedFTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.1}, daemon=True)
    thread.start()
    try:
        yield root, server.address[1]
    finally:
        server.close_all()
        thread.join(10)


def test_ftp_a_login_in_the_url_writes_reads_and_is_never_shown_or_stored(ftp, tmp_path, capsys):
    root, port = ftp
    name = uuid.uuid4().hex
    url = f"ftp://alice:{FTP_PASSWORD}@127.0.0.1:{port}/{name}"
    with tbwriter.SummaryWriter(url + "/exp") as w:
        for step in range(5):
            w.add_scalar("loss", step / 4, step)
        w.add_scalars("acc", {"train": 0.5}, 4)
        w.add_hparams({"lr": 0.1}, {"hp/acc": 0.5})
    assert scalars(url + "/exp") == {s: s / 4 for s in range(5)}
    assert sorted(event_files(url)) == ["exp", "exp/acc_train"]  # object URLs keep host and login
    files = [p for p in (root / name).rglob("*") if p.is_file()]
    assert len(files) == 4 and not any(FTP_PASSWORD.encode() in p.read_bytes() for p in files)
    assert cli(["inspect", url]) == 0
    assert "run exp/acc_train  (2 files, 2 events)" in capsys.readouterr().out
    assert cli(["export", url, "--csv", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "s.csv").read_text().count("\n") == 1 + 5 + 1 + 1  # header, loss, acc, hp/acc
    wrong = f"ftp://alice:Wr0ng-PW@127.0.0.1:{port}/{name}"
    with pytest.raises(OSError) as e:
        tbwriter.SummaryWriter(wrong)
    assert cli(["inspect", wrong]) == 2
    from npnn.cli import url_problem  # the course programs' check before any training

    problem = url_problem(wrong)
    assert problem.startswith(f"cannot write to ftp://***@127.0.0.1:{port}/") and "530" in problem
    assert cli(["inspect", f"ftp://alice:{FTP_PASSWORD}@127.0.0.1:{free_port()}/x"]) == 2  # nothing listens
    err = capsys.readouterr().err
    assert "530" in str(e.value) and "ftp://***@127.0.0.1" in str(e.value)
    assert len(err.splitlines()) == 2 and err.count("ftp://***@127.0.0.1:") == 2, err
    for text in (str(e.value), repr(e.value), err, problem):
        assert "Wr0ng-PW" not in text and FTP_PASSWORD not in text, text
