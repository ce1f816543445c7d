"""`python -m tbwriter inspect|export`, in process through main() and as a real subprocess.

Expected values come from TensorBoard's EventAccumulator on the same files.
"""

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.util import tensor_util

import tbwriter
from tbwriter.__main__ import main
from tbwriter.proto import event_pb2
from test_reader import frame, rich_events, write_tb_file


def run_main(*argv):
    """main(argv) in process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(map(str, argv)), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run_cli(*argv, **kwargs):
    """`python -m tbwriter ...` as a subprocess."""
    return subprocess.run([sys.executable, "-m", "tbwriter", *map(str, argv)], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for run, steps in [("train", 5), ("eval", 3), ("sweep/lr=0.1", 2)]:
        os.makedirs(root / run)
        write_tb_file(root / run, rich_events(steps))
    return root


def parse_inspect(stdout: str) -> dict:
    """{run: {tag: (kind, steps, count)}} from inspect's output."""
    runs, run = {}, None
    for line in stdout.splitlines():
        if line.startswith("run "):
            run = line.split()[1]
            runs[run] = {}
        elif line.startswith("  ") and not line.split()[0] == "TAG":
            tag, kind, steps, count = line.split()
            runs[run][tag] = (kind, steps, int(count))
    return runs


def tb_tensors(run_dir):
    acc = plugin_event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


# --- inspect -----------------------------------------------------------------------------------


def test_inspect_lists_every_tag_like_event_accumulator(logdir):
    code, out, err = run_main("inspect", logdir)
    assert (code, err) == (0, "")
    runs = parse_inspect(out)
    assert list(runs) == ["eval", "sweep/lr=0.1", "train"]
    for run, tags in runs.items():
        acc = tb_tensors(logdir / run)
        steps = [e.step for e in acc.Tensors("loss")]
        assert tags["loss"] == ("scalar", f"{min(steps)}..{max(steps)}", len(steps))
        for tag in ["tf1/loss", "acc", "weights", "tf1/weights", "sample", "tf1/sample", "note", "pr", "beep"]:
            assert tags[tag][2] == len(acc.Tensors(tag)), (run, tag)
        assert {tags[t][0] for t in tags} == {
            "scalar",
            "histogram",
            "image",
            "audio",
            "text",
            "pr_curve",
            "hparams",
            "graph",
            "run_metadata",
            "session_log",
        }
        assert tags["<graph>"] == ("graph", "0", 1)
        assert tags["_hparams_/session_start_info"][0] == "hparams"
    assert f"run train  (1 file, {1 + 4 + 9 * 5 + 1} events)" in out


def test_inspect_single_file_and_subprocess(logdir):
    (path,) = [os.path.join(logdir, "eval", f) for f in os.listdir(logdir / "eval")]
    code, out, err = run_main("inspect", path)
    assert code == 0 and out.startswith("run .  (1 file, 33 events)")
    proc = run_cli("inspect", path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, out, "")


def test_inspect_corrupt_record_exits_1_naming_file_and_offset_and_prints_the_rest(logdir, tmp_path):
    src = [os.path.join(logdir, "train", f) for f in os.listdir(logdir / "train")][0]
    data = bytearray(open(src, "rb").read())
    offsets, offset = [], 0
    while offset < len(data):
        offsets.append(offset)
        offset += int.from_bytes(data[offset : offset + 8], "little") + 16
    bad = offsets[10]
    data[bad + 20] ^= 0xFF
    os.makedirs(tmp_path / "a")
    os.makedirs(tmp_path / "b")
    bad_path = tmp_path / "a" / os.path.basename(src)
    bad_path.write_bytes(bytes(data))
    write_tb_file(tmp_path / "b", rich_events(2))
    code, out, err = run_main("inspect", tmp_path)
    assert code == 1
    assert (
        err.strip() == f"error: {bad_path}: corrupt record at byte offset {bad}: data checksum mismatch "
        f"({int.from_bytes(data[bad : bad + 8], 'little')} data bytes)"
    )
    runs = parse_inspect(out)
    assert list(runs) == ["a", "b"]
    assert "run a  (1 file, 10 events)" in out  # the 10 records before the bad one
    assert runs["b"]["loss"] == ("scalar", "0..1", 2)
    proc = run_cli("inspect", tmp_path)
    assert proc.returncode == 1 and f"{bad_path}: corrupt record at byte offset {bad}" in proc.stderr


def test_inspect_truncated_last_record_warns_and_exits_0(logdir, tmp_path):
    src = [os.path.join(logdir, "eval", f) for f in os.listdir(logdir / "eval")][0]
    data = open(src, "rb").read()
    path = tmp_path / os.path.basename(src)
    path.write_bytes(data[:-10])
    code, out, err = run_main("inspect", path)
    assert code == 0
    assert f"warning: {path}: truncated last record at byte offset" in err
    assert "run .  (1 file, 32 events)" in out


# --- export ------------------------------------------------------------------------------------


def expected_scalar_rows(logdir) -> list:
    """(run, tag, step, wall_time, value) of every scalar, as TensorBoard's accumulator loads them."""
    rows = []
    for run in ["eval", "sweep/lr=0.1", "train"]:
        acc = tb_tensors(logdir / run)
        for tag in acc.Tags()["tensors"]:
            if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars":
                rows += [
                    (run, tag, e.step, e.wall_time, float(tensor_util.make_ndarray(e.tensor_proto)))
                    for e in acc.Tensors(tag)
                ]
    return sorted(rows)


def test_export_csv_and_json_lines_equal_event_accumulator(logdir, tmp_path):
    code, out, err = run_main("export", logdir, "--csv", tmp_path / "s.csv", "--json", tmp_path / "s.jsonl")
    assert (code, err) == (0, "")
    expected = expected_scalar_rows(logdir)
    assert (
        out.strip() == f"{len(expected)} scalars from 3 runs written to {tmp_path / 's.csv'} and {tmp_path / 's.jsonl'}"
    )
    with open(tmp_path / "s.csv", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["run", "tag", "step", "wall_time", "value"]
    # all these scalars are float32: written in their shortest form, they read back exactly as float32
    got = sorted((r, t, int(s), float(w), float(np.float32(v))) for r, t, s, w, v in lines[1:])
    assert got == expected
    # float32 values are written in their shortest form that still reads back exactly
    assert ["eval", "tf1/loss", "2", "1700000002.0", "0.33333334"] in lines
    json_rows = [json.loads(line) for line in open(tmp_path / "s.jsonl")]
    assert (
        sorted((j["run"], j["tag"], j["step"], j["wall_time"], float(np.float32(j["value"]))) for j in json_rows)
        == expected
    )
    assert sorted(os.listdir(tmp_path)) == ["s.csv", "s.jsonl"]  # no temp files left


def test_export_tag_filter_and_subprocess(logdir, tmp_path):
    proc = run_cli("export", logdir / "train", "--csv", tmp_path / "f.csv", "--tag", "^tf1/")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "f.csv", newline="")))
    assert {r["tag"] for r in rows} == {"tf1/loss"} and len(rows) == 5
    assert all(r["run"] == "." for r in rows)
    assert [r["value"] for r in rows] == ["1.0", "0.5", "0.33333334", "0.25", "0.2"]


def test_export_non_finite_values_and_double_tensors(tmp_path):
    events = [event_pb2.Event(file_version="brain.Event:2")]
    for step, v in enumerate([math.nan, math.inf, -math.inf, 1e-45, 3.0]):
        e = event_pb2.Event(step=step, wall_time=1.5 + step)
        e.summary.value.add(tag="x", simple_value=v)
        events.append(e)
    d = event_pb2.Event(step=9, wall_time=2.0)
    value = d.summary.value.add(tag="d")
    value.metadata.plugin_data.plugin_name = "scalars"
    value.tensor.dtype = 2  # DT_DOUBLE
    value.tensor.double_val.append(0.1)
    events.append(d)
    path = tmp_path / "events.out.tfevents.1.nan"
    path.write_bytes(b"".join(frame(e.SerializeToString()) for e in events))
    code, _, err = run_main("export", path, "--csv", tmp_path / "o.csv", "--json", tmp_path / "o.jsonl")
    assert (code, err) == (0, "")
    # rows grouped by tag (sorted), each tag's in file order
    assert [r["value"] for r in csv.DictReader(open(tmp_path / "o.csv"))] == [
        "0.1",
        "nan",
        "inf",
        "-inf",
        "1e-45",
        "3.0",
    ]

    def strict(token):
        raise AssertionError(f"not strict JSON: {token}")

    rows = [json.loads(line, parse_constant=strict) for line in open(tmp_path / "o.jsonl")]
    assert [r["value"] for r in rows] == [0.1, "NaN", "Infinity", "-Infinity", 1e-45, 3.0]
    assert [r["wall_time"] for r in rows] == [2.0, 1.5, 2.5, 3.5, 4.5, 5.5]


def test_export_with_corrupt_input_writes_readable_rows_and_exits_1(logdir, tmp_path):
    src = [os.path.join(logdir, "eval", f) for f in os.listdir(logdir / "eval")][0]
    data = bytearray(open(src, "rb").read())
    data[-5] ^= 1  # inside the last record's data: the last record (session STOP) fails its CRC
    path = tmp_path / "events.out.tfevents.bad"
    path.write_bytes(bytes(data))
    code, out, err = run_main("export", path, "--csv", tmp_path / "o.csv")
    assert code == 1 and f"{path}: corrupt record at byte offset" in err
    assert len(list(csv.DictReader(open(tmp_path / "o.csv")))) == 3 * 3  # tf1/loss, loss, acc x 3 steps


def test_export_interrupted_leaves_no_output_and_no_temp(tmp_path):
    # A file big enough that writing the CSV takes seconds (read_scalars reads it in well under
    # one); SIGINT export while its temp file exists.
    event = event_pb2.Event(step=1, wall_time=1.0)
    event.summary.value.add(tag="loss", simple_value=0.5)
    (tmp_path / "logs").mkdir()
    path = tmp_path / "logs" / "events.out.tfevents.1.big"
    path.write_bytes(frame(event.SerializeToString()) * 2_000_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tbwriter", "export", str(path), "--csv", str(out_dir / "o.csv")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not os.listdir(out_dir) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "export finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0
    assert os.listdir(out_dir) == []


def test_export_overwrites_existing_output_atomically(logdir, tmp_path):
    target = tmp_path / "o.csv"
    target.write_text("old contents\n")
    code, _, _ = run_main("export", logdir / "eval", "--csv", target)
    assert code == 0 and target.read_text().startswith("run,tag,step,wall_time,value\n")
    assert os.listdir(tmp_path) == ["o.csv"]


# --- arguments and paths -----------------------------------------------------------------------


def test_bad_paths_exit_2_with_one_line_naming_the_path(tmp_path, logdir):
    missing = tmp_path / "missing"
    for argv in (["inspect", missing], ["export", missing, "--csv", tmp_path / "o.csv"]):
        code, out, err = run_main(*argv)
        assert (code, out) == (2, "")
        assert err == f"tbwriter: error: no such file or directory: {missing}\n"
    (tmp_path / "empty").mkdir()
    code, _, err = run_main("inspect", tmp_path / "empty")
    assert code == 2 and str(tmp_path / "empty") in err and err.count("\n") == 1
    code, _, err = run_main("export", logdir, "--csv", tmp_path / "nodir" / "o.csv")
    assert code == 2 and str(tmp_path / "nodir" / "o.csv") in err and err.count("\n") == 1
    proc = run_cli("inspect", missing)
    assert proc.returncode == 2 and proc.stderr == f"tbwriter: error: no such file or directory: {missing}\n"


def test_bad_arguments_exit_2(logdir, tmp_path, capsys):
    code, _, err = run_main("export", logdir)
    assert code == 2 and "--csv" in err
    code, _, err = run_main("export", logdir, "--csv", tmp_path / "o.csv", "--tag", "(")
    assert code == 2 and "--tag" in err and "'('" in err
    assert not (tmp_path / "o.csv").exists()
    assert run_main("frobnicate")[0] == 2 and "invalid choice" in capsys.readouterr().err
    assert run_main()[0] == 2 and "required" in capsys.readouterr().err


def test_help(capsys):
    proc = run_cli("--help")
    assert proc.returncode == 0 and "inspect" in proc.stdout and "export" in proc.stdout
    assert run_main("export", "--help")[0] == 0
    out = capsys.readouterr().out
    assert "--tag REGEX" in out and "JSON Lines" in out


def test_export_of_tbwriter_summary_writer_runs_equals_event_accumulator(tmp_path):
    """Files from tbwriter's own SummaryWriter (hand-encoded scalar path, add_scalars sub-runs)."""
    from tbwriter import SummaryWriter
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    with SummaryWriter(tmp_path / "logs" / "run1") as w:
        for step in range(300):
            w.add_scalar("loss", 1.0 / (step + 1), step)
            w.add_scalars("acc", {"train": step / 300, "val": step / 600}, step)
    code, out, err = run_main("export", tmp_path / "logs", "--json", tmp_path / "s.jsonl")
    assert (code, err) == (0, "")
    rows = sorted(
        (j["run"], j["tag"], j["step"], j["wall_time"], float(np.float32(j["value"])))
        for j in map(json.loads, open(tmp_path / "s.jsonl"))
    )
    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"scalars": 0})
    mux.AddRunsFromDirectory(str(tmp_path / "logs"))
    mux.Reload()
    expected = sorted(
        (run, tag, e.step, e.wall_time, float(tensor_util.make_ndarray(e.tensor_proto)))
        for run in mux.Runs()
        for tag in mux.GetAccumulator(run).Tags()["tensors"]
        for e in mux.Tensors(run, tag)
    )
    assert len(rows) == 900 and rows == expected
    code, out, _ = run_main("inspect", tmp_path / "logs")
    runs = parse_inspect(out)
    assert sorted(runs) == sorted(mux.Runs())
    assert runs["run1"]["loss"] == ("scalar", "0..299", 300)


def test_console_script_is_installed_and_runs(logdir):
    """pyproject's `tbwriter` entry point (present wherever the project is pip-installed)."""
    script = os.path.join(os.path.dirname(sys.executable), "tbwriter")
    if not os.path.exists(script):
        pytest.skip(f"no {script}: the project is not pip-installed into this interpreter's environment")
    proc = subprocess.run([script, "inspect", str(logdir / "eval")], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == run_main("inspect", logdir / "eval")[1]


def test_inspect_of_every_summary_writer_kind_equals_event_accumulator(tmp_path):
    """tbwriter's SummaryWriter writes each kind once per step; inspect agrees with TensorBoard."""
    from tbwriter import SummaryWriter
    from tbwriter.proto import graph_pb2

    rng = np.random.default_rng(0)
    with SummaryWriter(tmp_path / "run") as w:
        graph = graph_pb2.GraphDef()
        graph.node.add(name="x", op="Placeholder")
        w.add_graph(graph)
        for step in range(4):
            w.add_scalar("loss", 1 / (step + 1), step)
            w.add_histogram("weights", rng.normal(size=100), step)
            w.add_image("sample", rng.random((3, 8, 8)), step)
            w.add_text("note", f"step {step}", step)
            w.add_pr_curve("pr", rng.random(20) > 0.5, rng.random(20), step)
        w.add_custom_scalars({"losses": {"loss": ["Multiline", ["loss"]]}})
        w.add_hparams({"lr": 0.1, "bn": True}, {"metric": 1.0})
    code, out, err = run_main("inspect", tmp_path)
    assert (code, err) == (0, "")
    tags = parse_inspect(out)["run"]
    acc = tb_tensors(tmp_path / "run")
    kinds = {
        "scalars": "scalar",
        "histograms": "histogram",
        "images": "image",
        "text": "text",
        "pr_curves": "pr_curve",
        "custom_scalars": "custom_scalars",
        "hparams": "hparams",
    }
    theirs = {}
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        if plugin != "graphs":  # TensorBoard's own tensor for the graph; ours is <graph>
            steps = [e.step for e in acc.Tensors(tag)]
            theirs[tag] = (
                kinds[plugin],
                f"{min(steps)}..{max(steps)}" if len(steps) > 1 else str(steps[0]),
                len(steps),
            )
    assert {t: v for t, v in tags.items() if t != "<graph>"} == theirs
    assert tags["<graph>"] == ("graph", "0", 1) and acc.Tags()["graph"] is True
    assert {v[0] for v in theirs.values()} == set(kinds.values())


def test_export_output_has_normal_permissions_and_unwritable_target_exits_2(logdir, tmp_path):
    code, _, _ = run_main("export", logdir / "eval", "--csv", tmp_path / "o.csv")
    umask = os.umask(0)
    os.umask(umask)
    assert code == 0 and os.stat(tmp_path / "o.csv").st_mode & 0o777 == 0o666 & ~umask
    (tmp_path / "taken").mkdir()  # a directory where the output file should go: refused before any temp file
    code, out, err = run_main("export", logdir / "eval", "--csv", tmp_path / "taken")
    why = "a directory, not a regular file, a FIFO or a character device"
    assert err == f"tbwriter export: error: cannot write {tmp_path / 'taken'}: {why}\n" and code == 2
    assert sorted(os.listdir(tmp_path)) == ["o.csv", "taken"]  # temp file removed


def test_inspect_piped_into_head_ends_quietly(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:  # ~150 kB of inspect output: more than a pipe holds
        for i in range(3000):
            w.add_scalar(f"tag_{i:04d}", 1.0, 0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tbwriter", "inspect", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # what head -1 does after its line
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert first.startswith("run ") and err == "" and proc.returncode == 141
