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
import re
import shutil
import stat
import subprocess
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from tbserver import tensorboard
from test_hostile_cli import run_cli, run_main

from conftest import requires

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


# --- the projector: hostile tags and labels, read back by the real projector ---------------------


def projector_parse_metadata():
    """The projector front end's metadata parser, cut from TensorBoard's bundle, as a function of the served text.

    Its stream reader and status calls are replaced by one synchronous split on newlines, as the
    bundle's reader splits the whole text; everything else runs as the browser runs it.
    """
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed to run the projector's own metadata parser")
    import tensorboard.plugins.projector as projector_plugin

    bundle = Path(projector_plugin.__file__).parent / "tf_projector_plugin" / "projector_binary.js"
    src = bundle.read_text(encoding="utf-8")
    start = src.rindex("function ", 0, src.index('"Parsing metadata..."'))
    depth, opening = 0, src.index("{", start)
    for end in range(opening, len(src)):
        depth += {"{": 1, "}": -1}.get(src[end], 0)
        if depth == 0:
            break
    fn = src[start : end + 1]
    name = re.match(r"function (\w+)\(", fn).group(1)
    status, token = re.search(r'return (\w+)\("Parsing metadata\.\.\.",(\w+)\)', fn).groups()
    stream = re.search(r"(\w+)\(n,a=>", fn).group(1)
    stats = re.search(r"stats:(\w+)\(", fn).group(1)
    harness = (
        f"const {status} = () => {{}}; const {token} = 0; const {stats} = () => null;\n"
        f"function {stream}(buf, line) {{ new TextDecoder().decode(buf).split('\\n').forEach(line); "
        "return Promise.resolve(); }\n"
        f"{fn}\n"
        "const chunks = []; process.stdin.on('data', c => chunks.push(c));\n"
        f"process.stdin.on('end', () => {name}(new Uint8Array(Buffer.concat(chunks)).buffer)"
        ".then(r => process.stdout.write(JSON.stringify(r.pointsInfo))));\n"
    )

    def parse(served: bytes) -> list:
        out = subprocess.run([node, "-e", harness], input=served, capture_output=True, timeout=60, check=True)
        return json.loads(out.stdout)

    return parse


POINTS = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
LABELS = [" lead", "trail ", 'q"uote', "back\\slash", "ü 0"]  # kept as they are, spaces included
ROWS = [["a", ""], ["", "b"], ["c", "d"], ["#", "1"], ["\\", '"']]  # one empty cell is not a blank line
TAGS = ["good", 'q"uote', "back\\slash", "new\nline", "tab\tin", "before/after"]


@pytest.fixture(scope="module")
def projector_run(tmp_path_factory):
    """A run holding a good embedding, then ones with hostile tags, then one after the refused calls."""
    run = tmp_path_factory.mktemp("projector") / "run"
    with tbwriter.SummaryWriter(run) as w:
        w.add_scalar("s", 1.0, 0)  # TensorBoard lists a run by its event file
        for step, tag in enumerate(TAGS):
            w.add_embedding(POINTS * (step + 1), metadata=LABELS, global_step=step, tag=tag)
        w.add_embedding(POINTS, metadata=ROWS, metadata_header=["name", "other"], global_step=9, tag="two")
    return run


@pytest.fixture(scope="module")
def tb(projector_run):
    with tensorboard(projector_run.parent, load_fast=False) as server:
        server.wait_for(lambda: server.json("/data/plugin/projector/runs"), lambda r: "run" in r)
        yield server


def test_hostile_tags_and_labels_read_back_through_the_projector(tb):
    parse = projector_parse_metadata()
    info = tb.json("/data/plugin/projector/info", run="run")
    names = [e["tensorName"] for e in info["embeddings"]]
    assert names == [f"{tag}:{step:05d}" for step, tag in enumerate(TAGS)] + ["two:00009"]
    for step, name in enumerate(names[:-1]):
        got = np.frombuffer(tb.get("/data/plugin/projector/tensor", run="run", name=name), "<f4")
        np.testing.assert_array_equal(got.reshape(5, 3), POINTS * (step + 1), err_msg=name)
        served = tb.get("/data/plugin/projector/metadata", run="run", name=name)
        assert parse(served) == [{"label": label} for label in LABELS], name  # label i on point i
    served = tb.get("/data/plugin/projector/metadata", run="run", name="two:00009")
    assert parse(served) == [{"name": a or None, "other": b or None} for a, b in ROWS]  # the parser's "" -> null


@pytest.mark.parametrize(
    "metadata, header, message",
    [
        (["a", "b\tc", "d"], None, r"metadata\[1\] holds a tab"),
        (["a\tb", "c", "d"], None, r"metadata\[0\] holds a tab"),  # would have been read as a header
        (["a", "b\rc", "d"], None, r"metadata\[1\] holds a carriage return"),
        (["a", "b\nc", "d"], None, r"metadata\[1\] holds a newline"),
        (["a", "", "d"], None, r"metadata\[1\] is blank"),
        (["a", " \u3000\ufeff", "d"], None, r"metadata\[1\] is blank"),  # JavaScript's trim() removes all three
        ([["a"], ["b"], ["c"]], ["label"], r"metadata_header: the projector reads a header only with two or more"),
        ([["a", "x"], [" ", ""], ["c", "y"]], ["n", "m"], r"metadata\[1\] is blank"),
        ([["a", "x"], ["b", "y\tz"], ["c", "y"]], ["n", "m"], r"metadata\[1\]\[1\] holds a tab"),
        ([["a", "x"], ["b", "y"], ["c", "y"]], ["n", "n"], r"metadata_header: column names repeat"),
        ([["a", "x"], ["b", "y"], ["c", "y"]], ["", " "], r"metadata_header is blank"),
    ],
)
def test_labels_the_projector_cannot_map_are_refused_before_anything_is_written(tmp_path, metadata, header, message):
    with tbwriter.SummaryWriter(tmp_path) as w:
        w.add_embedding(np.eye(3), metadata=["x", "y", "z"], tag="kept")
        w.flush()  # the files are written on the encoding thread
        config = (tmp_path / "projector_config.pbtxt").read_bytes()
        before = sorted(p for p in tmp_path.rglob("*") if "tfevents" not in p.name)
        with pytest.raises(ValueError, match=message) as e:
            w.add_embedding(np.eye(3), metadata=metadata, metadata_header=header, global_step=1)
    assert "\n" not in str(e.value)
    assert (tmp_path / "projector_config.pbtxt").read_bytes() == config
    assert sorted(p for p in tmp_path.rglob("*") if "tfevents" not in p.name) == before


# --- the projector: nothing planted in the run is followed ----------------------------------------


@pytest.fixture()
def run_and_outside(tmp_path):
    """A run with an event file, and a folder beside it with a file the attacker wants written."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    tbwriter.SummaryWriter(run).close()
    return run, outside


def unchanged(outside: Path) -> bool:
    return sorted(p.name for p in outside.iterdir()) == ["victim"] and (outside / "victim").read_text() == "precious"


@pytest.mark.parametrize("plant", ["symlink", "fifo", "hardlink"])
@pytest.mark.parametrize("async_encode", [False, True])
def test_a_planted_config_is_refused_and_nothing_is_created(run_and_outside, plant, async_encode):
    run, outside = run_and_outside
    config = run / "projector_config.pbtxt"
    kind = {"symlink": "a symlink", "fifo": "a FIFO", "hardlink": "a file with 2 hard links"}[plant]
    if plant == "symlink":
        config.symlink_to(outside / "victim")
    elif plant == "fifo":
        os.mkfifo(config)
    else:
        os.link(outside / "victim", config)
    with tbwriter.SummaryWriter(run, async_encode=async_encode) as w:
        # a FIFO: never waited on; on the encoding thread, the refusal is raised by the next call
        e = refused_in_a_thread(lambda: (w.add_embedding(np.eye(2), global_step=7), w.flush()))
    assert isinstance(e, OSError) and e.filename == str(config) and kind in str(e)
    assert unchanged(outside)
    assert not (run / "00007").exists()


@pytest.mark.parametrize("async_encode", [False, True])
def test_a_planted_step_folder_link_is_refused(run_and_outside, async_encode):
    run, outside = run_and_outside
    (run / "00007").symlink_to(outside, target_is_directory=True)
    with tbwriter.SummaryWriter(run, async_encode=async_encode) as w, pytest.raises(NotADirectoryError) as e:
        w.add_embedding(np.eye(2), global_step=7)
        w.flush()  # on the encoding thread, the refusal is raised by the next call
    assert f"a symlink, not a directory; not followed: '{run / '00007'}'" in str(e.value)
    assert unchanged(outside)
    assert (run / "projector_config.pbtxt").read_text() == ""


def test_a_planted_tag_folder_link_only_takes_its_name(run_and_outside):
    run, outside = run_and_outside
    (run / "00007").mkdir()
    (run / "00007" / "default").symlink_to(outside, target_is_directory=True)
    with tbwriter.SummaryWriter(run) as w:
        w.add_embedding(np.eye(2), global_step=7)
    assert unchanged(outside)
    assert (run / "00007" / "default_1" / "tensors.tsv").read_text() == "1.0\t0.0\n0.0\t1.0\n"
    assert 'tensor_path: "00007/default_1/tensors.tsv"' in (run / "projector_config.pbtxt").read_text()


# --- sub-runs stay inside the log dir -------------------------------------------------------------


@pytest.mark.parametrize("key", ["/../../../x", "a/../../b", "/.."])
def test_add_scalars_keys_cannot_leave_the_log_dir(tmp_path, key):
    logdir = tmp_path / "logs" / "run"
    with tbwriter.SummaryWriter(logdir) as w:
        with pytest.raises(ValueError, match=re.escape(f"tag_scalar_dict key {key!r}: a sub-run must stay inside")):
            w.add_scalars("m", {"ok": 1.0, key: 2.0}, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["run"]
    assert [p.name for p in logdir.iterdir() if p.is_dir()] == []  # not even the good key's sub-run


def test_a_dotdot_inside_a_key_name_is_fine(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        w.add_scalars("m", {"..": 1.0, "a..b": 2.0}, 0)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["m_..", "m_a..b"]


@pytest.mark.parametrize("name", ["ABSOLUTE", "../escaped", "a/../../escaped"])
def test_add_hparams_run_name_cannot_leave_the_log_dir(tmp_path, name):
    name = str(tmp_path / "escaped") if name == "ABSOLUTE" else name
    logdir = tmp_path / "logs"
    with tbwriter.SummaryWriter(logdir) as w:
        with pytest.raises(ValueError, match=re.escape(f"run_name {name!r}: a sub-run must stay inside")):
            w.add_hparams({"lr": 0.1}, {"m": 1.0}, run_name=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


# --- model files: regular files only, size first ----------------------------------------------------


@pytest.mark.parametrize("method", ["add_onnx_graph", "add_openvino_graph"])
@pytest.mark.parametrize("kind", ["FIFO", "zero"])
def test_model_files_that_are_fifos_or_devices_are_refused(tmp_path, method, kind):
    if method == "add_onnx_graph":
        requires("onnx", "peers", "add_onnx_graph reads the file with onnx")
    if kind == "FIFO":
        path = tmp_path / "model.fifo"
        os.mkfifo(path)
    else:
        path = tmp_path / "model.link"
        path.symlink_to(char_device(tmp_path / "zero", 5))
    with tbwriter.SummaryWriter(tmp_path / "run") as w:
        e = refused_in_a_thread(lambda: getattr(w, method)(str(path)))
    expected = "a FIFO" if kind == "FIFO" else "a character device"
    assert isinstance(e, OSError) and f"{expected}, not a regular file" in str(e) and e.filename == str(path)


def test_a_model_file_over_protobufs_limit_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.xml"
    with open(big, "wb") as f:
        f.truncate(2**31)  # sparse: no disk used
    tracemalloc.start()
    try:
        with tbwriter.SummaryWriter(tmp_path / "run") as w, pytest.raises(ValueError) as e:
            w.add_openvino_graph(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value) == f"xmlname: {big} holds 2147483648 bytes, more than protobuf's 2 GiB limit"
    assert peak < 1 << 20
