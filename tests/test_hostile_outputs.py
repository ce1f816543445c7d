"""Where the writers put files, tried as an attacker would (issue 21).

The projector's files (hostile tags and labels read back through the projector plugin's HTTP
API and the projector front end's own metadata parser, run in node; symlinks, a FIFO and a hard
link planted in the run), sub-run names that climb out of the log dir, model files that are
FIFOs or devices, and user-named outputs (export, Module.save, checkpoints,
export_scalars_to_json) that are FIFOs, devices or symlinks. Each test builds its input and
checks that nothing is lost, doubled, replaced or written outside the run, and that a refusal is
one line naming the file or argument.
"""

import io
import json
import os
import stat
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_hostile_cli import run_cli, run_main

import tbwriter
from npnn import nn
from npnn.datasets import mnist as mnist_data


def char_device(path: Path, minor: int) -> Path:
    """A memory character device node (1, minor: 3 null, 5 zero) made in the test's own folder."""
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    return path


def refused_in_a_thread(call) -> BaseException:
    """Run call() in a daemon thread (a hang fails the test, never blocks the suite); return what it raised."""
    outcome = []

    def run():
        try:
            call()
        except BaseException as e:  # noqa: BLE001 (MemoryError included)
            outcome.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert outcome, "still reading"
    return outcome[0]


# --- user-named outputs: streamed into FIFOs and devices, never replacing them ------------------


def read_fifo(path: Path, got: list) -> threading.Thread:
    """Start a daemon thread reading the FIFO at path to its end into got."""

    def run():
        with open(path, "rb") as f:
            got.append(f.read())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.fixture()
def run_dir(tmp_path):
    """A logdir with one good run: scalar 'loss' at steps 0..2."""
    with tbwriter.SummaryWriter(tmp_path / "logs" / "good") as w:
        for i in range(3):
            w.add_scalar("loss", i / 2, i)
    return tmp_path / "logs"


CSV = "run,tag,step,wall_time,value\n"
ROWS_CSV = [("good", "loss", str(i), str(i / 2)) for i in range(3)]


def csv_rows(text: str) -> list:
    lines = text.splitlines()
    assert lines[0] + "\n" == CSV
    return [tuple(r.split(",")[i] for i in (0, 1, 2, 4)) for r in lines[1:]]


def test_export_into_a_fifo_streams_and_keeps_the_fifo(run_dir, tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got = []
    reader = read_fifo(fifo, got)
    code, out, err = run_main("export", run_dir, "--csv", fifo)
    reader.join(30)
    assert code == 0, err
    assert csv_rows(got[0].decode()) == ROWS_CSV
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert out == "" and f"3 scalars from 1 run written to {fifo}" in err  # the summary never joins a stream
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "out.fifo"]


def test_export_to_dash_writes_stdout(run_dir):
    code, out, err = run_main("export", run_dir, "--csv", "-")
    assert code == 0, err
    assert csv_rows(out) == ROWS_CSV and "3 scalars from 1 run written to -" in err
    child = run_cli("export", run_dir, "--json", "-")  # a real pipe as stdout
    assert child.returncode == 0, child.stderr
    assert [json.loads(line)["value"] for line in child.stdout.splitlines()] == [0.0, 0.5, 1.0]


def test_export_into_a_character_device_keeps_the_node(run_dir, tmp_path):
    null = char_device(tmp_path / "null", 3)
    code, _, err = run_main("export", run_dir, "--csv", null, "--json", tmp_path / "o.jsonl")
    assert code == 0, err
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("kind", ["block device", "directory"])
def test_export_refuses_other_nodes_in_one_line(run_dir, tmp_path, kind):
    out = tmp_path / "out"
    if kind == "block device":
        os.mknod(out, stat.S_IFBLK | 0o600, os.makedev(7, 200))  # a loop device number nothing uses
    else:
        out.mkdir()
    code, _, err = run_main("export", run_dir, "--csv", out)
    assert code == 2
    why = f"a {kind}, not a regular file, a FIFO or a character device"
    assert err == f"tbwriter export: error: cannot write {out}: {why}\n"
    assert (stat.S_ISBLK if kind == "block device" else stat.S_ISDIR)(os.lstat(out).st_mode)


def test_export_through_a_symlink_keeps_the_link_and_replaces_its_file(run_dir, tmp_path):
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    target.write_text("old")
    os.chmod(target, 0o600)
    link.symlink_to(target)
    code, _, err = run_main("export", run_dir, "--csv", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert csv_rows(target.read_text()) == ROWS_CSV
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # a replaced file keeps its permissions


def small_model():
    model = nn.Sequential(nn.Linear(3, 2))
    return model, {k: v.copy() for k, v in model.state_dict().items()}


def test_module_save_into_a_fifo_streams_a_loadable_npz(tmp_path):
    model, expected = small_model()
    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    got = []
    reader = read_fifo(fifo, got)
    model.save(fifo)
    reader.join(30)
    with np.load(io.BytesIO(got[0])) as z:
        assert sorted(z.files) == sorted(expected)
        for k, v in expected.items():
            np.testing.assert_array_equal(z[k], v)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fifo"]


@pytest.mark.parametrize(
    "save",
    [
        lambda path: small_model()[0].save(path),
        lambda path: _json_export(path),
    ],
    ids=["Module.save", "export_scalars_to_json"],
)
def test_writers_of_user_files_leave_a_device_in_place(tmp_path, save):
    null = char_device(tmp_path / "null", 3)
    save(null)
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "run") == ["null"]
    block = tmp_path / "block"
    os.mknod(block, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    with pytest.raises(OSError) as e:
        save(block)
    assert e.value.filename == str(block) and "a block device, not a regular file" in str(e.value)


def _json_export(path):
    with tbwriter.SummaryWriter(Path(path).parent / "run", keep_scalars_for_json=True) as w:
        w.add_scalars("m", {"a": 1.0}, 0)
        w.export_scalars_to_json(path)


def test_a_download_never_replaces_a_non_regular_file(tmp_path):
    name = "train-labels-idx1-ubyte"
    os.mkfifo(tmp_path / f"{name}.gz")
    path, failures = mnist_data.download_file(name, tmp_path, mirrors=["http://127.0.0.1:9/"], progress=False)
    assert path is None
    assert failures == [f"{tmp_path / name}.gz: exists but is not a regular file; not replaced (remove it to download)"]
    assert stat.S_ISFIFO(os.lstat(tmp_path / f"{name}.gz").st_mode)


# --- export_scalars_to_json: opt-in ---------------------------------------------------------------


def test_add_scalars_keeps_nothing_unless_asked(tmp_path):
    def held_after(calls: int, keep: bool) -> tuple:
        tracemalloc.start()
        try:
            w = tbwriter.SummaryWriter(tmp_path / f"keep{keep}", keep_scalars_for_json=keep)
            w.add_scalars("m", {"a": 0.0, "b": 0.0}, 0)  # the sub-runs' writers exist before measuring
            base = tracemalloc.get_traced_memory()[0]
            for i in range(calls):
                w.add_scalars("m", {"a": i, "b": -i}, i)
            w.close()
            return tracemalloc.get_traced_memory()[0] - base, w
        finally:
            tracemalloc.stop()

    held, w = held_after(5000, keep=False)
    assert held < 64 << 10
    with pytest.raises(tbwriter.WriterStateError, match=r"keep_scalars_for_json=True\)$"):
        w.export_scalars_to_json(tmp_path / "all.json")
    assert not (tmp_path / "all.json").exists()
    held, w = held_after(5000, keep=True)
    assert held > 1 << 20  # 10,000 [walltime, step, value] kept for the export
    w.export_scalars_to_json(tmp_path / "all.json")
    data = json.loads((tmp_path / "all.json").read_text())
    assert [v for _, _, v in data[f"{tmp_path / 'keepTrue'}/m_a"]] == [0.0] + [float(i) for i in range(5000)]
