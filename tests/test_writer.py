"""SummaryWriter / FileWriter: files, buffering, the hand-encoded scalar path, TF1 API.

Everything is read back with TensorBoard's own EventAccumulator and a minimal CRC-checking
record reader written here (so these tests do not trust tbwriter.reader).
"""

import glob
import math
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import time

import crc32c
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import event_pb2 as tb_event_pb2

import tbwriter
from tbwriter import events as events_mod
from tbwriter.events import WriterStateError
from tbwriter.proto import event_pb2, graph_pb2, summary_pb2

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- helpers shared with the other writer tests --------------------------------------------


def _masked(data: bytes) -> int:
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: str) -> tuple:
    """(records, clean): every CRC-valid record; clean is False if the tail is torn."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos < len(data):
        if pos + 12 > len(data):
            return out, False
        length = struct.unpack_from("<Q", data, pos)[0]
        if _masked(data[pos : pos + 8]) != struct.unpack_from("<I", data, pos + 8)[0]:
            raise AssertionError(f"{path}: bad length crc at {pos}")
        end = pos + 12 + length
        if end + 4 > len(data):
            return out, False
        body = data[pos + 12 : end]
        if _masked(body) != struct.unpack_from("<I", data, end)[0]:
            raise AssertionError(f"{path}: bad data crc at {pos}")
        out.append(body)
        pos = end + 4
    return out, True


def read_events(path: str) -> list:
    """Every event of a complete file, parsed with TensorBoard's own Event class."""
    records, clean = read_records(path)
    assert clean, f"{path} ends in a torn record"
    return [tb_event_pb2.Event.FromString(r) for r in records]


def event_files(logdir) -> list:
    return sorted(glob.glob(os.path.join(str(logdir), "events.out.tfevents.*")))


def accumulator(logdir) -> event_accumulator.EventAccumulator:
    """TensorBoard's Python loader over a run directory, keeping every sample."""
    acc = event_accumulator.EventAccumulator(
        str(logdir),
        size_guidance={
            event_accumulator.SCALARS: 0,
            event_accumulator.HISTOGRAMS: 0,
            event_accumulator.IMAGES: 0,
            event_accumulator.TENSORS: 0,
            event_accumulator.GRAPH: 0,
            event_accumulator.COMPRESSED_HISTOGRAMS: 0,
        },
    )
    acc.Reload()
    return acc


def scalars(logdir, tag) -> list:
    return [(e.step, e.value) for e in accumulator(logdir).Scalars(tag)]


def f32(x: float) -> float:
    return float(np.float32(x))


# --- files ---------------------------------------------------------------------------------


def test_file_name_and_first_record(tmp_path):
    with tbwriter.SummaryWriter(tmp_path, filename_suffix=".v2") as w:
        w.add_scalar("x", 1.0, 0)
    (path,) = event_files(tmp_path)
    name = os.path.basename(path)
    m = re.fullmatch(r"events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+)\.(\d+)\.v2", name)
    assert m, name
    assert abs(int(m.group(1)) - time.time()) < 3600
    assert m.group(2) == socket.gethostname() and int(m.group(3)) == os.getpid()
    evs = read_events(path)
    assert evs[0].file_version == "brain.Event:2" and evs[0].wall_time > 0
    assert evs[1].summary.value[0].tag == "x"


def test_file_names_sort_in_creation_order(tmp_path):
    """TensorBoard reads a run's files in name order: writer 10 of a second must sort after writer 9."""
    made = []
    for i in range(12):
        with tbwriter.SummaryWriter(tmp_path) as w:
            w.add_scalar("x", float(i), i)
        made += [p for p in event_files(tmp_path) if p not in made]
    assert sorted(made) == made and len(made) == 12
    # read as one series in name order: a file out of place would be a step going back, purged
    assert [e.step for e in accumulator(tmp_path).Scalars("x")] == list(range(12))


def test_many_writers_in_one_second_get_distinct_files(tmp_path):
    writers = [tbwriter.FileWriter(tmp_path) for _ in range(30)]
    for i, w in enumerate(writers):
        w.add_scalar_value("i", i, 0)
        w.close()
    files = event_files(tmp_path)
    assert len(files) == 30
    got = sorted(read_events(f)[1].summary.value[0].simple_value for f in files)
    assert got == list(range(30))


def test_an_existing_name_is_never_truncated(tmp_path, monkeypatch):
    import itertools

    monkeypatch.setattr(events_mod, "_uid", itertools.count(1))
    now = int(time.time())
    taken = []
    for secs in (now, now + 1):  # the name the writer would try first, whatever the second
        p = tmp_path / f"events.out.tfevents.{secs:010d}.{socket.gethostname()}.{os.getpid()}.1"
        p.write_bytes(b"precious")
        taken.append(p)
    w = tbwriter.FileWriter(tmp_path)
    w.close()
    assert all(p.read_bytes() == b"precious" for p in taken)
    assert w.event_writer.path not in {str(p) for p in taken}


def test_default_log_dir_is_runs_date_host_comment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = tbwriter.SummaryWriter(comment="_lr0.1")
    w.close()
    logdir = w.get_logdir()
    assert re.fullmatch(
        r"runs/[A-Z][a-z]{2}\d\d_\d\d-\d\d-\d\d_" + re.escape(socket.gethostname()) + "_lr0.1", logdir
    ), logdir
    assert len(event_files(tmp_path / logdir)) == 1


# --- the hand-encoded scalar path ------------------------------------------------------------

STEPS = [0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**40, 2**63 - 1, -1, -(2**63)]
VALUES = [0.0, -0.0, 1.5, -3.25e-8, 1e38, 1e39, -1e39, math.inf, -math.inf, 3.4028235e38]
TAGS = ["loss", "a/b/c", "ünïcødé/λ", "t" * 200]


@pytest.mark.parametrize("tag", TAGS, ids=range(len(TAGS)))
def test_scalar_bytes_equal_protobufs(tmp_path, tag):
    w = tbwriter.FileWriter(tmp_path, max_queue=1000)
    wt = 1_700_000_000.123456
    cases = [(s, v) for s in STEPS for v in VALUES]
    for s, v in cases:
        w.add_scalar_value(tag, v, s, walltime=wt)
    w.add_scalar_value(tag, math.nan, 5, walltime=wt)
    w.close()
    records, clean = read_records(w.event_writer.path)
    assert clean and len(records) == 1 + len(cases) + 1
    for rec, (s, v) in zip(records[1:], cases):
        expect = event_pb2.Event(wall_time=wt, step=s)
        expect.summary.value.add(
            tag=tag, simple_value=v if abs(v) <= 3.4028235e38 or math.isinf(v) else math.copysign(math.inf, v)
        )
        assert rec == expect.SerializeToString(), (s, v)
        assert tb_event_pb2.Event.FromString(rec) == tb_event_pb2.Event.FromString(expect.SerializeToString())
    last = tb_event_pb2.Event.FromString(records[-1])
    assert math.isnan(last.summary.value[0].simple_value) and last.step == 5


def test_scalars_read_back_by_event_accumulator(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        for i in range(2000):
            w.add_scalar("train/loss", 1.0 / (i + 1), i)
            w.add_scalar("train/acc", i * 0.001, global_step=i, walltime=1000.0 + i)
    assert scalars(tmp_path, "train/loss") == [(i, f32(1.0 / (i + 1))) for i in range(2000)]
    acc = accumulator(tmp_path).Scalars("train/acc")
    assert [(e.step, e.wall_time, e.value) for e in acc] == [(i, 1000.0 + i, f32(i * 0.001)) for i in range(2000)]


class _Scalarish:
    """Duck-typed like a torch/jax scalar: only __float__."""

    def __init__(self, v):
        self.v = v

    def __float__(self):
        return self.v


def test_scalar_value_kinds(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        w.add_scalar("v", np.float32(0.25), np.int64(1))
        w.add_scalar("v", np.float64(0.5), np.int32(2))
        w.add_scalar("v", np.array(0.75), 3)
        w.add_scalar("v", np.array([1.25], dtype=np.float16), 4)
        w.add_scalar("v", 6, 5.0)
        w.add_scalar("v", True, 6)
        w.add_scalar("v", _Scalarish(7.5), 7)
        w.add_scalar("v", np.uint8(200), 8)
    assert scalars(tmp_path, "v") == [
        (1, 0.25),
        (2, 0.5),
        (3, 0.75),
        (4, 1.25),
        (5, 6.0),
        (6, 1.0),
        (7, 7.5),
        (8, 200.0),
    ]


def test_bad_scalars_name_the_argument(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        with pytest.raises(TypeError, match="scalar_value"):
            w.add_scalar("v", "1.0", 0)
        with pytest.raises(ValueError, match=r"scalar_value.*shape \(2,\)"):
            w.add_scalar("v", np.array([1.0, 2.0]), 0)
        with pytest.raises(TypeError, match="scalar_value"):
            w.add_scalar("v", None, 0)
        with pytest.raises(TypeError, match="global_step"):
            w.add_scalar("v", 1.0, 1.5)
        with pytest.raises(TypeError, match="global_step"):
            w.add_scalar("v", 1.0, "3")
        with pytest.raises(ValueError, match="tag"):
            w.add_scalar("", 1.0, 0)
        with pytest.raises(ValueError, match="tag"):
            w.add_scalar(None, 1.0, 0)
        w.add_scalar("v", 2.0, 9)
    assert scalars(tmp_path, "v") == [(9, 2.0)]


def test_add_scalars_writes_one_sub_run_per_key(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        for i in range(5):
            w.add_scalars("run/loss", {"train": i, "val": 10 + i}, i)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run_loss_train", "run_loss_val"]
    assert scalars(tmp_path / "run_loss_train", "run/loss") == [(i, float(i)) for i in range(5)]
    assert scalars(tmp_path / "run_loss_val", "run/loss") == [(i, float(10 + i)) for i in range(5)]


# --- buffering -------------------------------------------------------------------------------


def test_records_reach_the_file_at_max_queue(tmp_path):
    w = tbwriter.FileWriter(tmp_path, max_queue=5, flush_secs=1000)
    path = w.event_writer.path
    for i in range(4):
        w.add_scalar_value("q", i, i)
    assert len(read_records(path)[0]) == 1  # only file_version: 4 pending
    w.add_scalar_value("q", 4, 4)
    assert len(read_records(path)[0]) == 6
    w.add_scalar_value("q", 5, 5)
    w.flush()
    assert len(read_records(path)[0]) == 7
    w.close()


def test_records_reach_the_file_after_flush_secs_without_more_calls(tmp_path):
    w = tbwriter.FileWriter(tmp_path, max_queue=1000, flush_secs=0.2)
    w.add_scalar_value("t", 1.0, 1)
    deadline = time.monotonic() + 30
    while len(read_records(w.event_writer.path)[0]) < 2:
        assert time.monotonic() < deadline, "the timer never flushed"
        time.sleep(0.05)
    w.close()


def test_writer_left_open_is_closed_at_interpreter_exit(tmp_path):
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {REPO!r})
        import tbwriter
        w = tbwriter.SummaryWriter({str(tmp_path)!r}, max_queue=100000, flush_secs=1000)
        for i in range(1234):
            w.add_scalar("exit", i, i)
        g = tbwriter.FileWriter({str(tmp_path / "gc")!r}, max_queue=100000, flush_secs=1000)
        g.add_scalar_value("gc", 1.0, 7)
        del g  # garbage collected: its finalizer flushes and closes
        print("done")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr
    assert scalars(tmp_path, "exit") == [(i, float(i)) for i in range(1234)]
    assert scalars(tmp_path / "gc", "gc") == [(7, 1.0)]


# --- closing ---------------------------------------------------------------------------------


def test_add_after_close_reopens_a_new_file_in_the_same_run(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path)
    w.add_scalar("c", 1.0, 0)
    w.close()
    w.close()  # closing twice is harmless
    assert w.file_writer is None and w.all_writers is None  # as in both peers
    w.flush()  # a no-op after close, as in the peers
    w.add_scalar("c", 2.0, 1)  # reopens, as both peers do
    w.add_scalars("m", {"a": 1.0}, 1)
    w.close()
    w.add_graph(graph_pb2.GraphDef())
    w.close()
    files = event_files(tmp_path)
    assert len(files) == 3 and len(set(files)) == 3  # three files, each created with O_EXCL
    assert scalars(tmp_path, "c") == [(0, 1.0), (1, 2.0)]  # nothing lost across the reopen
    assert scalars(tmp_path / "m_a", "m") == [(1, 1.0)]


def test_context_manager_closes(tmp_path):
    with tbwriter.FileWriter(tmp_path) as w:
        w.add_scalar_value("cm", 3.0, 1)
    assert w.event_writer.closed
    with pytest.raises(WriterStateError):
        w.add_scalar_value("cm", 3.0, 2)
    assert scalars(tmp_path, "cm") == [(1, 3.0)]


# --- TF1 API, graphs, metadata ---------------------------------------------------------------


def _graph_def() -> graph_pb2.GraphDef:
    g = graph_pb2.GraphDef()
    g.node.add(name="x", op="Placeholder")
    g.node.add(name="Layer1/W", op="VariableV2")
    g.node.add(name="Layer1/MatMul", op="MatMul", input=["x", "Layer1/W"])
    g.versions.producer = 22
    return g


class _HasGraph:
    def as_graph_def(self):
        return _graph_def()


@pytest.mark.parametrize("kind", ["graphdef", "object", "bytes"])
def test_add_graph(tmp_path, kind):
    graph = {"graphdef": _graph_def(), "object": _HasGraph(), "bytes": _graph_def().SerializeToString()}[kind]
    with tbwriter.SummaryWriter(tmp_path) as w:
        w.add_graph(graph)
    g = accumulator(tmp_path).Graph()
    assert [(n.name, n.op, list(n.input)) for n in g.node] == [
        ("x", "Placeholder", []),
        ("Layer1/W", "VariableV2", []),
        ("Layer1/MatMul", "MatMul", ["x", "Layer1/W"]),
    ]


def test_add_graph_rejects_other_things(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        with pytest.raises(TypeError, match="graph"):
            w.add_graph(42)


def _summary_with_metadata(tag: str, value: float) -> summary_pb2.Summary:
    s = summary_pb2.Summary()
    v = s.value.add(tag=tag, simple_value=value)
    v.metadata.plugin_data.plugin_name = "scalars"
    v.metadata.display_name = "shown"
    return s


def test_file_writer_tf1_workflow(tmp_path):
    fw = tbwriter.FileWriter(tmp_path, _graph_def())
    mine = _summary_with_metadata("m", 1.0)
    fw.add_summary(mine, global_step=1)
    fw.add_summary(mine.SerializeToString(), global_step=2)
    fw.add_summary(_summary_with_metadata("m", 3.0), 3)
    fw.add_event(event_pb2.Event(step=4, wall_time=5.0, log_message=event_pb2.LogMessage(message="hi")))
    fw.add_summary(_summary_with_metadata("other", 9.0), 4)
    assert fw.get_logdir() == str(tmp_path)
    fw.close()
    evs = read_events(fw.event_writer.path)
    assert evs[1].HasField("graph_def")
    summaries = [e for e in evs if e.HasField("summary")]
    assert [(e.step, e.summary.value[0].tag, e.summary.value[0].HasField("metadata")) for e in summaries] == [
        (1, "m", True),
        (2, "m", False),
        (3, "m", False),
        (4, "other", True),
    ]
    assert mine.value[0].HasField("metadata")  # the caller's message is never modified
    assert evs[-2].log_message.message == "hi" and evs[-2].wall_time == 5.0
    assert scalars(tmp_path, "m") == [(1, 1.0), (2, 1.0), (3, 3.0)]
    assert len(accumulator(tmp_path).Graph().node) == 3


def test_metadata_is_sent_again_in_a_new_file(tmp_path):
    for run in ("a", "b"):
        with tbwriter.FileWriter(tmp_path / run) as fw:
            fw.add_summary(_summary_with_metadata("m", 1.0), 1)
            fw.add_summary(_summary_with_metadata("m", 2.0), 2)
        flags = [e.summary.value[0].HasField("metadata") for e in read_events(fw.event_writer.path)[1:]]
        assert flags == [True, False]


def test_file_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="logdir"):
        tbwriter.FileWriter("")
    with tbwriter.FileWriter(tmp_path) as fw:
        with pytest.raises(TypeError, match="summary"):
            fw.add_summary({"loss": 1.0}, 1)
        with pytest.raises(TypeError, match="event"):
            fw.add_event("event")
        with pytest.raises(ValueError, match="summary"):
            fw.add_summary(b"\xff\xff\xff", 1)
        with pytest.raises(ValueError, match="global_step"):
            fw.add_scalar_value("x", 1.0, 2**64)
    with pytest.raises(TypeError, match="max_queue"):
        tbwriter.FileWriter(tmp_path, max_queue="10")
    with pytest.raises(ValueError, match="flush_secs"):
        tbwriter.FileWriter(tmp_path, flush_secs=0)


# --- purge_step ------------------------------------------------------------------------------


def test_purge_step_drops_orphaned_steps_in_the_python_loader(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        for i in range(10):
            w.add_scalar("p", i, i)
    time.sleep(1.1)  # the restarted run's file sorts after the first one
    with tbwriter.SummaryWriter(tmp_path, purge_step=5) as w:
        for i in range(5, 8):
            w.add_scalar("p", 100 + i, i)
    evs = read_events(event_files(tmp_path)[-1])
    assert evs[1].session_log.status == tb_event_pb2.SessionLog.START and evs[1].step == 5
    assert scalars(tmp_path, "p") == [(i, float(i)) for i in range(5)] + [(i, 100.0 + i) for i in range(5, 8)]


# --- hparams and bad input through the writer -------------------------------------------------


def test_add_hparams_run_name_and_discrete_domains(tmp_path):
    from tensorboard.plugins.hparams import metadata as hp_metadata

    with tbwriter.SummaryWriter(tmp_path) as w:
        w.add_scalar("loss", 1.0, 0)
        w.add_hparams(
            {"opt": "adam", "bn": False, "lr": np.float32(0.5)},
            {"m": 1.5},
            hparam_domain_discrete={"opt": ["adam", "sgd"]},
            run_name="trial1",
        )
        with pytest.raises(ValueError, match="hparam_domain_discrete"):
            w.add_hparams({"a": 1}, {}, hparam_domain_discrete={"b": [1, 2]})
    acc = accumulator(tmp_path / "trial1")
    exp = hp_metadata.parse_experiment_plugin_data(acc.SummaryMetadata("_hparams_/experiment").plugin_data.content)
    infos = {i.name: i for i in exp.hparam_infos}
    assert [v.string_value for v in infos["opt"].domain_discrete.values] == ["adam", "sgd"]
    start = hp_metadata.parse_session_start_info_plugin_data(
        acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    )
    assert start.hparams["bn"].WhichOneof("kind") == "bool_value" and start.hparams["bn"].bool_value is False
    assert start.hparams["lr"].number_value == 0.5
    assert start.group_name == "" and start.start_time_secs > 1e9  # TensorBoard names the row after the run
    assert scalars(tmp_path / "trial1", "m") == [(0, 1.5)]
    assert "_hparams_/session_start_info" not in accumulator(tmp_path).Tags()["tensors"]


def test_filewriter_add_hparams_like_tf1_users_expect(tmp_path):
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import metadata as hp_metadata

    with tbwriter.FileWriter(tmp_path / "run") as w:
        w.add_summary(tbwriter.summary.scalar("cost", 0.25), global_step=3)
        w.add_hparams({"lr": 0.1, "optimizer": "adam"}, {"final/accuracy": 1.0}, global_step=3)
        with pytest.raises(TypeError, match="metric_dict: expected a dict"):
            w.add_hparams({"lr": 0.1}, [("accuracy", 1.0)])
    acc = accumulator(tmp_path / "run")
    start = hp_metadata.parse_session_start_info_plugin_data(
        acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    )
    assert dict(start.hparams)["lr"].number_value == 0.1 and start.hparams["optimizer"].string_value == "adam"
    assert start.group_name == "" and start.start_time_secs > 1e9
    end = hp_metadata.parse_session_end_info_plugin_data(
        acc.SummaryMetadata("_hparams_/session_end_info").plugin_data.content
    )
    assert end.status == api_pb2.STATUS_SUCCESS
    assert scalars(tmp_path / "run", "final/accuracy") == [(3, 1.0)]


def test_bad_values_raise_before_anything_is_written(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="bad"):
            w.add_histogram("bad", [1.0, float("nan")], 0)
        with pytest.raises((ValueError, TypeError)):
            w.add_image("img", np.zeros((2, 3, 4, 5)), 0, dataformats="CHW")
        with pytest.raises((ValueError, TypeError)):
            w.add_text("txt", 42, 0)
    (path,) = event_files(tmp_path)
    assert len(read_events(path)) == 1  # only file_version


@pytest.mark.parametrize("fmt, axes", [("CHW", (0, 1, 2)), ("HWC", (1, 2, 0)), ("HW", None)])
def test_add_images_takes_a_list_of_single_images_in_their_own_format(tmp_path, fmt, axes):
    rng = np.random.default_rng(0)
    batch = rng.random((3, 1 if axes is None else 3, 4, 5), dtype=np.float32)  # NCHW
    items = [x[0] if axes is None else x.transpose(axes) for x in batch]
    with tbwriter.SummaryWriter(tmp_path / "list") as w:
        w.add_images("imgs", items, 1, dataformats=fmt)
    with tbwriter.SummaryWriter(tmp_path / "batch") as w:
        w.add_images("imgs", batch, 1)
    pngs = []
    for run in ("list", "batch"):
        ea = event_accumulator.EventAccumulator(str(tmp_path / run))
        ea.Reload()
        (img,) = ea.Images("imgs")
        pngs.append((img.width, img.height, img.encoded_image_string))
    assert pngs[0] == pngs[1] and pngs[0][:2] == (15, 4)  # 3 tiles of 5 (tensorboardX's grid pads by 0)
