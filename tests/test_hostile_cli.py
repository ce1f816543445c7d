"""The CLI's files and the writer's extreme values, tried as an attacker would.

Planted symlinks at the export's temp name, one output named twice, FIFOs and devices where
event files are expected, tags built to flood or forge `inspect`'s output, numbers and tags that
do not fit the wire format, and `~` in a log_dir. Each test builds its input and checks that
nothing is overwritten, nothing hangs, and the error names the file or argument.
"""

import io
import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest
from test_writer import REPO, accumulator, event_files

import tbwriter
from tbwriter.__main__ import main

MiB = 1 << 20


def run_main(*argv):
    """main(argv) in process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(map(str, argv)), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run_cli(*argv):
    """`python -m tbwriter ...` in a child, so that a hang fails the test instead of stopping it."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "tbwriter", *map(str, argv)], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture()
def run_dir(tmp_path):
    """A logdir with one good run: scalar 'loss' at steps 0..4."""
    logdir = tmp_path / "logs"
    with tbwriter.SummaryWriter(logdir / "good") as w:
        for i in range(5):
            w.add_scalar("loss", i / 2, i)
    return logdir


# --- export's output files --------------------------------------------------------------------


def test_export_never_follows_a_planted_symlink(run_dir, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out.csv"
    planted = [tmp_path / f".out.csv.{os.getpid()}.tmp"]  # the name the old export used
    planted += [tmp_path / f".out.csv.{c}.tmp" for c in ("tmp", "0", "1")]
    for link in planted:
        link.symlink_to(victim)
    code, _, err = run_main("export", run_dir, "--csv", out)
    assert code == 0, err
    assert victim.read_text() == "precious"
    assert all(link.is_symlink() for link in planted)
    rows = [r.split(",") for r in out.read_text().splitlines()[1:]]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [("good", "loss", str(i), str(i / 2)) for i in range(5)]
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would have made it
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()] == []


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink"])
def test_export_refuses_one_file_named_twice_before_writing(run_dir, tmp_path, alias):
    target = tmp_path / "out.txt"
    target.write_text("old")
    other = {"same": target, "symlink": tmp_path / "link.txt", "hardlink": tmp_path / "hard.txt"}[alias]
    if alias == "symlink":
        other.symlink_to(target)
    elif alias == "hardlink":
        os.link(target, other)
    code, _, err = run_main("export", run_dir, "--csv", target, "--json", other)
    assert code == 2 and "--csv and --json name the same file" in err, err
    assert target.read_text() == "old"


def test_export_refuses_to_overwrite_an_event_file_it_reads(run_dir):
    (path,) = event_files(run_dir / "good")
    before = open(path, "rb").read()
    code, _, err = run_main("export", run_dir, "--json", path)
    assert code == 2 and f"--json {path} is one of the event files being read" in err, err
    assert open(path, "rb").read() == before


# --- FIFOs and devices --------------------------------------------------------------------------


def test_fifo_in_a_logdir_is_skipped_with_a_warning(run_dir, tmp_path):
    fifo = run_dir / "bad" / "events.out.tfevents.1.fifo"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    (run_dir / "good" / "events.out.tfevents.2.link").symlink_to(fifo)
    out = run_cli("inspect", run_dir)
    assert out.returncode == 0, out.stderr
    assert f"warning: {fifo}: skipped: a FIFO, not a regular file" in out.stderr
    assert f"{run_dir / 'good' / 'events.out.tfevents.2.link'}: skipped: a FIFO" in out.stderr
    assert "run good  (1 file, 6 events)" in out.stdout and "loss" in out.stdout
    csv_out = tmp_path / "o.csv"
    out = run_cli("export", run_dir, "--csv", csv_out)
    assert out.returncode == 0 and len(csv_out.read_text().splitlines()) == 6, out.stderr


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_a_fifo_or_device_given_directly_is_named_as_such(tmp_path, kind):
    path = "/dev/zero"
    if kind == "FIFO":
        path = tmp_path / "events.out.tfevents.fifo"
        os.mkfifo(path)
    out = run_cli("inspect", path)
    assert out.returncode == 2
    assert out.stderr == f"tbwriter: error: cannot read {path}: a {kind}, not an event file or a directory\n"


def test_read_events_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "events.out.tfevents.fifo"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            list(tbwriter.reader.read_events(fifo))
        except OSError as e:
            outcome.append(e)

    reader = threading.Thread(target=read, daemon=True)  # a daemon: a hang fails, never blocks the suite
    reader.start()
    reader.join(30)
    assert outcome, "read_events is still waiting on the FIFO"
    assert "a FIFO, not a regular file" in str(outcome[0]) and outcome[0].filename == str(fifo)


# --- inspect's output ---------------------------------------------------------------------------


def test_inspect_caps_the_tag_column_and_escapes_control_characters(tmp_path):
    logdir = tmp_path / "logs"
    long_tag = "x" * MiB
    with tbwriter.SummaryWriter(logdir) as w:
        w.add_scalar(long_tag, 1.0, 0)
        for i in range(200):
            w.add_scalar(f"t{i:03d}", 1.0, 0)
        w.add_scalar("a\nrun forged  (1 file, 1 events)", 1.0, 0)
        w.add_scalar("\x1b[2Jclear", 1.0, 0)
        w.add_scalar("zero\u200bwidth", 1.0, 0)
    code, out, err = run_main("inspect", logdir)
    assert code == 0, err
    assert len(out) < MiB + 202 * 100  # the long tag once, the other rows at most ~90 characters
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("run ")] == ["run .  (1 file, 205 events)"]
    assert r"  a\nrun forged  (1 file, 1 events)" in out
    assert "\x1b" not in out and r"\x1b[2Jclear" in out
    assert r"zero\u200bwidth" in out
    assert max(len(line) for line in lines if "t000" in line or "t199" in line) < 100


# --- extreme values ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**1024, -(2**1100)], ids=["2**1024", "-2**1100"])
def test_an_int_beyond_float_range_names_the_argument(tmp_path, value):
    with tbwriter.SummaryWriter(tmp_path) as w:
        with pytest.raises(OverflowError, match=r"^scalar_value: an int of \d+ bits is beyond the float range"):
            w.add_scalar("x", value, 0)
        with pytest.raises(OverflowError, match=r"^metric_dict\['m'\]: an int of"):
            w.add_hparams({"lr": 0.1}, {"m": value})
        w.add_scalar("x", 2**1000, 1)  # finite as a double, beyond float32: stored as inf
    assert [e.value for e in accumulator(tmp_path).Scalars("x")] == [float("inf")]


def test_a_lone_surrogate_tag_names_the_argument(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        with pytest.raises(
            ValueError, match=r"^tag: 'a\\ud800' is not valid Unicode text: surrogates not allowed at index 1"
        ):
            w.add_scalar("a\ud800", 1.0, 0)
        with pytest.raises(ValueError, match=r"is not valid Unicode text"):
            w.add_histogram("h\udfff", np.arange(3.0), 0)
        w.add_scalar("fine", 1.0, 0)
    assert [e.value for e in accumulator(tmp_path).Scalars("fine")] == [1.0]


def test_an_image_beyond_protobufs_limit_is_refused_before_encoding(tmp_path):
    huge = np.broadcast_to(np.float32(0.5), (3, 27000, 27000))  # 2.2 G pixels values, no memory
    with tbwriter.SummaryWriter(tmp_path) as w:
        tracemalloc.start()
        try:
            with pytest.raises(
                ValueError,
                match=r"^image 'big': 27000x27000x3 pixels may encode to \d+ bytes, "
                r"beyond protobuf's 2 GiB message limit",
            ):
                w.add_image("big", huge, 0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        w.add_image("small", np.ones((3, 4, 4), np.float32), 0)
    assert peak < MiB
    assert len(accumulator(tmp_path).Images("small")) == 1


# --- ~ in log_dir -----------------------------------------------------------------------------


def test_tilde_in_log_dir_is_the_home_directory(tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    with tbwriter.SummaryWriter("~/runs/a") as w:
        w.add_scalar("x", 1.0, 0)
        assert w.get_logdir() == str(home / "runs" / "a")
    fw = tbwriter.FileWriter("~/runs/b")
    fw.add_scalar_value("y", 2.0, 0)
    fw.close()
    assert list(cwd.iterdir()) == []  # no literal ./~
    assert [e.value for e in accumulator(home / "runs" / "a").Scalars("x")] == [1.0]
    assert [e.value for e in accumulator(home / "runs" / "b").Scalars("y")] == [2.0]
