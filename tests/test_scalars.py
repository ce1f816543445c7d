"""tbwriter.read_scalars (the columnar reader) against TensorBoard's EventAccumulator and the record reader."""

import io
import os
import struct

import numpy as np
import pytest
from conftest import requires
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tbwriter
from tbwriter import reader, scalars
from tbwriter.__main__ import main
from tbwriter.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from test_reader import frame, masked_crc, rich_events, write_tb_file


def reference(path) -> dict:
    """{run: {tag: (steps, walls, values)}} by the record reader, TagKinds and scalar_value, event by event."""
    out = {}
    for run, paths in reader.event_files(path).items():
        kinds, tags = reader.TagKinds(), {}
        for p in paths:
            for event in reader.read_events(p):
                for value in event.summary.value:
                    if kinds.kind(value) == "scalar":
                        s = tags.setdefault(value.tag, ([], [], []))
                        s[0].append(event.step)
                        s[1].append(event.wall_time)
                        s[2].append(reader.scalar_value(value))
        out[run] = tags
    return out


def assert_same(got: scalars.Scalars, want: dict) -> None:
    assert list(got) == sorted(want)
    for run, tags in want.items():
        assert list(got[run]) == sorted(tags)
        for tag, (steps, walls, values) in tags.items():
            s = got[run][tag]
            assert s.steps.dtype == np.int64 and s.steps.tolist() == steps, (run, tag)
            assert s.wall_times.tolist() == walls, (run, tag)
            np.testing.assert_array_equal(s.values.astype(np.float64), values)  # NaN == NaN here


@pytest.fixture(scope="module")
def mixed_logdir(tmp_path_factory):
    """Two runs by tbwriter: 3 scalar tags, a histogram every 10 steps, TF1 merged summaries."""
    root = tmp_path_factory.mktemp("scalars")
    rng = np.random.default_rng(1)
    for run, steps in (("train", 1500), ("eval/lr=0.1", 200)):
        with tbwriter.SummaryWriter(root / run) as w:
            for step in range(steps):
                w.add_scalar("loss", float(rng.random()), step)
                w.add_scalar("acc", float(rng.random()), step)
                if step % 10 == 0:
                    w.add_histogram("weights", rng.standard_normal(50), step)
                    merged = summary_pb2.Summary()
                    merged.value.add(tag="Cost/Cost", simple_value=float(rng.random()))
                    merged.value.add(tag="Layer1/W").histo.CopyFrom(tbwriter.summary.histogram_proto(rng.random(4)))
                    merged.value.add(tag="accuracy", simple_value=np.nan if step == 20 else 1.0)
                    w.file_writer.add_summary(merged, step)
            w.add_scalar("loss", 0.5, 2**40)  # a 6-byte step varint
    return root


def test_equals_event_accumulator_with_histograms_mixed_in(mixed_logdir):
    got = tbwriter.read_scalars(mixed_logdir)
    assert list(got) == ["eval/lr=0.1", "train"]
    for run in got:
        acc = EventAccumulator(str(mixed_logdir / run), size_guidance={"scalars": 0})
        acc.Reload()
        assert sorted(acc.Tags()["scalars"]) == list(got[run]) == ["Cost/Cost", "acc", "accuracy", "loss"]
        for tag, s in got[run].items():
            events = acc.Scalars(tag)
            assert s.steps.tolist() == [e.step for e in events]
            assert s.wall_times.tolist() == [e.wall_time for e in events]
            np.testing.assert_array_equal(s.values.astype(np.float64), [e.value for e in events])
            assert s.values.dtype == np.float32
    assert got["train"]["loss"].steps[-1] == 2**40
    assert_same(got, reference(mixed_logdir))


def test_rich_files_equal_the_record_reader(tmp_path):
    """TensorBoard-written files: tensor scalars with metadata (float32 and float64), images, audio, text, ..."""
    write_tb_file(tmp_path, rich_events(4))
    os.makedirs(tmp_path / "b")
    write_tb_file(tmp_path / "b", rich_events(2))
    got = tbwriter.read_scalars(tmp_path)
    assert_same(got, reference(tmp_path))
    assert set(got["."]) == {"tf1/loss", "loss", "acc"}
    assert got["."]["loss"].values.dtype == np.float32  # DT_FLOAT tensors stay float32 (DT_DOUBLE: test_cli)


def test_small_chunks_give_the_same_columns(mixed_logdir, tmp_path, monkeypatch):
    write_tb_file(tmp_path, rich_events(3))
    want_mixed, want_rich = tbwriter.read_scalars(mixed_logdir / "eval/lr=0.1"), tbwriter.read_scalars(tmp_path)
    monkeypatch.setattr(scalars, "_CHUNK", 97)  # records cross chunk ends; some are longer than a chunk
    for path, want in ((mixed_logdir / "eval/lr=0.1", want_mixed), (tmp_path, want_rich)):
        got = tbwriter.read_scalars(path)
        for tag, s in want["."].items():
            for a, b in zip(got["."][tag], s):
                np.testing.assert_array_equal(a, b)


def test_header_like_bytes_inside_a_record_do_not_break_the_chain(tmp_path):
    fake = struct.pack("<Q", 30)
    fake += struct.pack("<I", masked_crc(fake)) + b"x" * 40  # a valid header for 30 bytes, inside data
    events = []
    for step in range(40):
        e = event_pb2.Event(step=step, wall_time=1.0 + step)
        e.summary.value.add(tag="loss", simple_value=step / 7)
        events.append(e)
        img = event_pb2.Event(step=step, wall_time=1.0 + step)
        img.summary.value.add(tag="img").image.encoded_image_string = fake
        events.append(img)
    path = tmp_path / "events.out.tfevents.fake"
    path.write_bytes(b"".join(frame(e.SerializeToString()) for e in events))
    got = tbwriter.read_scalars(path)
    assert_same(got, reference(path))
    assert got["."]["loss"].steps.tolist() == list(range(40))


def test_corruption_and_truncation_are_reported_like_the_record_reader(mixed_logdir, tmp_path):
    src = mixed_logdir / "eval/lr=0.1"
    (name,) = os.listdir(src)
    data = open(src / name, "rb").read()
    records = list(reader.read_records(src / name))
    bad = records[150]
    for where, reason in (
        (bad.offset + 12 + len(bad.data) // 2, "data checksum mismatch"),
        (bad.offset + 1, "length checksum mismatch"),
    ):
        flipped = bytearray(data)
        flipped[where] ^= 0x10
        path = tmp_path / f"events.out.tfevents.{where}"
        path.write_bytes(bytes(flipped))
        with pytest.raises(reader.CorruptRecordError, match=reason) as err:
            tbwriter.read_scalars(path)
        assert (err.value.path, err.value.offset) == (str(path), bad.offset)
        columns = scalars.RunColumns(".")
        with pytest.raises(reader.CorruptRecordError):
            columns.read_file(path)
        loss = columns.series()["loss"]  # what came before the bad record is kept
        assert loss.steps.tolist() == [
            e.step
            for e in map(reader.Record.event, records[:150])
            if e.summary.value and e.summary.value[0].tag == "loss"
        ]
    path = tmp_path / "events.out.tfevents.cut"
    path.write_bytes(data[:-7])
    seen, want = [], []
    list(reader.read_records(path, on_truncated=want.append))
    got = tbwriter.read_scalars(path, on_truncated=seen.append)
    assert seen == want and seen[0].offset == records[-1].offset
    assert got["."]["loss"].steps.tolist() == [
        e.step for e in map(reader.Record.event, records[:-1]) for v in e.summary.value if v.tag == "loss"
    ]


def test_huge_trusted_length_is_truncation_not_allocation(tmp_path):
    length = struct.pack("<Q", 2**40)
    good = frame(
        event_pb2.Event(
            step=1, summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=2.0)])
        ).SerializeToString()
    )
    path = tmp_path / "events.out.tfevents.huge"
    path.write_bytes(good + length + struct.pack("<I", masked_crc(length)) + b"abc")
    seen = []
    got = tbwriter.read_scalars(path, on_truncated=seen.append)
    assert got["."]["a"].values.tolist() == [2.0]
    assert seen[0].offset == len(good) and "needs" in seen[0].reason


def test_many_tags_tags_filter_and_bad_arguments(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        for step in range(30):
            for k in range(40):  # more distinct tags per chunk than are split off one by one
                w.add_scalar(f"group/metric_{k:02d}_with_a_long_name", k + step / 100, step)
    got = tbwriter.read_scalars(tmp_path)
    assert len(got["."]) == 40
    assert_same(got, reference(tmp_path))
    only = tbwriter.read_scalars(tmp_path, tags=["group/metric_07_with_a_long_name", "absent"])
    assert list(only["."]) == ["group/metric_07_with_a_long_name"]
    with pytest.raises(TypeError, match="tags"):
        tbwriter.read_scalars(tmp_path, tags="loss")
    with pytest.raises(FileNotFoundError, match="logdir"):
        tbwriter.read_scalars(tmp_path / "missing")


def test_to_dataframe_has_tbparse_columns_and_values(mixed_logdir):
    tbparse = requires("tbparse", "peers", "the DataFrame is compared with tbparse's")
    want = tbparse.SummaryReader(str(mixed_logdir), extra_columns={"dir_name", "wall_time"}).scalars
    got = tbwriter.read_scalars(mixed_logdir).to_dataframe()
    assert sorted(got.columns) == sorted(want.columns)
    key = ["dir_name", "tag", "step", "wall_time"]
    a = got[list(want.columns)].sort_values(key, kind="stable").reset_index(drop=True)
    b = want.sort_values(key, kind="stable").reset_index(drop=True)
    assert a[key].equals(b[key].astype(a[key].dtypes.to_dict()))
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())


def _tensor_number(proto) -> float:
    """The number in TensorBoard's copy of a one-element TensorProto."""
    return float(reader.tensor_to_array(tensor_pb2.TensorProto.FromString(proto.SerializeToString())).reshape(()))


def shown(run_dir, tags) -> dict:
    """{tag: (steps, walls, values)} as TensorBoard's EventAccumulator keeps them (simple_values and tensors)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    known = acc.Tags()
    out = {}
    for tag in tags:
        if tag in known["scalars"]:
            events = [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]
        else:
            tensors = acc.Tensors(tag) if tag in known["tensors"] else []
            events = [(e.step, e.wall_time, _tensor_number(e.tensor_proto)) for e in tensors]
        out[tag] = tuple(map(list, zip(*events))) if events else ([], [], [])
    return out


def test_a_long_tag_beside_a_short_one_is_read(tmp_path):
    """The issue's file: 'train/accuracy_top5_epoch' and 'loss' for 100 steps crashed the tag decoding."""
    with tbwriter.SummaryWriter(tmp_path) as w:
        for step in range(100):
            w.add_scalar("train/accuracy_top5_epoch", step / 100, step)
            w.add_scalar("loss", 1 - step / 100, step)
    for chunk_size in (None, 200, 1000):  # the long tag near many chunk ends
        got = tbwriter.read_scalars(tmp_path, chunk_size=chunk_size)
        assert_same(got, reference(tmp_path))
        assert got["."]["loss"].steps.tolist() == list(range(100))


def test_memory_stays_within_the_tags_bytes(tmp_path):
    """60,000 scalars and one 64 KiB tag: was (longest tag) x (rows) words, a MemoryError under 2 GiB."""
    from test_declared_sizes import MiB, peak_bytes

    with tbwriter.SummaryWriter(tmp_path) as w:
        for step in range(60_000):
            w.add_scalar("loss", step, step)
        w.add_scalar("x" * 65536, 1.5, 7)
    got, peak = peak_bytes(lambda: tbwriter.read_scalars(tmp_path))
    assert got["."]["loss"].steps.size == 60_000 and got["."]["x" * 65536].values.tolist() == [1.5]
    assert peak < 32 * MiB, peak  # the 4 MiB chunk's working set (measured 20 MB for this 2.7 MB file)


def session(run, k: int, steps: range, purge_step=None) -> None:
    """One SummaryWriter session of 'loss' over steps, its file renamed to sort as session k.

    (Two files of one process in one second can sort out of order by their counter: 9 > 10.)"""
    with tbwriter.SummaryWriter(run, purge_step=purge_step) as w:
        for step in steps:
            w.add_scalar("loss", step / 10, step)
            if step % 7 == 0:
                w.add_histogram("w", np.arange(5.0), step)
    (new,) = [n for n in os.listdir(run) if ".session" not in n]
    os.rename(os.path.join(run, new), os.path.join(run, f"events.out.tfevents.session{k}"))


def test_restarts_are_purged_as_tensorboard_shows_them(tmp_path):
    """Two restarts with purge_step (SessionLog START): EventAccumulator's steps; as_written keeps every record."""
    session(tmp_path, 0, range(50))
    session(tmp_path, 1, range(40, 80), purge_step=40)
    session(tmp_path, 2, range(30, 60), purge_step=30)
    got = tbwriter.read_scalars(tmp_path)["."]["loss"]
    assert got.steps.tolist() == list(range(60))
    assert (got.steps.tolist(), got.wall_times.tolist(), got.values.tolist()) == shown(tmp_path, ["loss"])["loss"]
    written = tbwriter.read_scalars(tmp_path, as_written=True)["."]["loss"]
    assert written.steps.size == 50 + 40 + 30
    assert_same(tbwriter.read_scalars(tmp_path, as_written=True), reference(tmp_path))


def test_out_of_order_steps_without_file_version_are_purged_per_tag(tmp_path):
    """A writer that sends no file_version: a step going backwards drops that event's tags' later steps."""
    events = []
    for step in list(range(10)) + list(range(5, 8)) + [3, 3, 9]:
        e = event_pb2.Event(step=step, wall_time=100.0 + len(events))
        e.summary.value.add(tag="a", simple_value=step)
        if step != 3:
            e.summary.value.add(tag="b", simple_value=-step)
        events.append(e)
        if step == 6:
            events.append(event_pb2.Event(step=2, wall_time=1.0, graph_def=b"x"))  # lowers the last step
    path = tmp_path / "events.out.tfevents.noversion"
    path.write_bytes(b"".join(frame(e.SerializeToString()) for e in events))
    for chunk_size in (None, 64):
        got = tbwriter.read_scalars(tmp_path, chunk_size=chunk_size)["."]
        want = shown(tmp_path, ["a", "b"])
        assert [want[t][0] for t in "ab"] == [[0, 1, 2, 3, 9], [0, 1, 2, 4, 5, 6, 7, 9]]
        for tag in "ab":
            assert (got[tag].steps.tolist(), got[tag].wall_times.tolist(), got[tag].values.tolist()) == want[tag]


def test_a_bad_scalar_value_names_the_file_and_offset(tmp_path):
    good = event_pb2.Event(step=1, wall_time=1.0)
    good.summary.value.add(tag="n", simple_value=1.0)
    bad = event_pb2.Event(step=2, wall_time=2.0)
    value = bad.summary.value.add(tag="str")
    value.metadata.plugin_data.plugin_name = "scalars"
    value.tensor.dtype = types_pb2.DT_STRING
    value.tensor.string_val.append(b"x")
    path = tmp_path / "events.out.tfevents.bad"
    path.write_bytes(frame(good.SerializeToString()) + frame(bad.SerializeToString()))
    offset = len(frame(good.SerializeToString()))
    with pytest.raises(ValueError, match=f"^{path}: record at byte offset {offset}: value 'str': expected a one"):
        tbwriter.read_scalars(path)
    err = io.StringIO()
    assert main(["export", str(path), "--csv", str(tmp_path / "o.csv")], io.StringIO(), err) == 1
    assert f"run .: step 2: {path}: record at byte offset {offset}: value 'str'" in err.getvalue()


def test_export_drops_orphaned_steps_unless_as_written(tmp_path):
    session(tmp_path / "run", 0, range(10))
    session(tmp_path / "run", 1, range(5, 10), purge_step=5)
    out = tmp_path / "o.csv"
    for flags, rows in (([], 10), (["--as-written"], 15)):
        assert main(["export", str(tmp_path), "--csv", str(out), *flags], io.StringIO(), io.StringIO()) == 0
        lines = out.read_text().splitlines()[1:]
        assert len(lines) == rows
        assert [int(line.split(",")[2]) for line in lines] == (
            list(range(10)) if rows == 10 else list(range(10)) + list(range(5, 10))
        )


def test_a_summary_after_another_event_field_is_read(tmp_path):
    """Event bytes with graph_def or source_metadata before the summary (concatenated messages): protobuf reads both."""
    summary = event_pb2.Event(summary=summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a", simple_value=2)]))
    records = [
        event_pb2.Event(step=3, wall_time=1.0, graph_def=b"g").SerializeToString() + summary.SerializeToString(),
        event_pb2.Event(step=4, source_metadata=event_pb2.SourceMetadata(writer="w")).SerializeToString()
        + summary.SerializeToString(),
    ]
    path = tmp_path / "events.out.tfevents.fields"
    path.write_bytes(b"".join(frame(r) for r in records))
    got = tbwriter.read_scalars(path)
    assert_same(got, reference(path))
    assert got["."]["a"].steps.tolist() == [3, 4]
