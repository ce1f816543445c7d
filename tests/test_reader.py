"""tbwriter.reader against TensorBoard's own loaders, on files with real content.

The files are written by TensorBoard's own pure-Python EventFileWriter with summaries built by
TensorBoard's plugin `pb` functions (no TensorFlow needed), plus TF1-style values built by hand,
so the reader is judged on files it did not write itself. Helpers here are reused by
test_cli.py and test_reader_fuzz.py.
"""

import os
import struct
import subprocess
import sys
import textwrap
import warnings
import wave
import io
import zlib

import crc32c
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.compat.proto import event_pb2 as tb_event_pb2
from tensorboard.compat.proto import graph_pb2 as tb_graph_pb2
from tensorboard.compat.proto import summary_pb2 as tb_summary_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.pr_curve import metadata as pr_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from tbwriter import reader
from tbwriter.proto import event_pb2, summary_pb2

WALL = 1_700_000_000.0


# --- helpers shared with test_cli.py and test_reader_fuzz.py -----------------------------------


def masked_crc(data: bytes) -> int:
    """TFRecord masked CRC32C, written out here so the tests do not trust the reader's copy."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: length, masked crc of length, data, masked crc of data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def png(pixels: np.ndarray) -> bytes:
    """A minimal RGB PNG (the TensorBoard plugins' own encoders need TensorFlow)."""
    height, width, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def image_value(tag: str, pixels: np.ndarray, v2: bool) -> tb_summary_pb2.Summary:
    """An image the TF1 way (Summary.Image) or the TF2 way (string tensor [w, h, png] + images metadata)."""
    summary = tb_summary_pb2.Summary()
    encoded = png(pixels)
    if v2:
        tensor = tensor_util.make_tensor_proto(
            np.array([str(pixels.shape[1]).encode(), str(pixels.shape[0]).encode(), encoded], dtype=object)
        )
        summary.value.add(tag=tag, tensor=tensor, metadata=image_metadata.create_summary_metadata(tag, ""))
    else:
        summary.value.add(
            tag=tag,
            image=tb_summary_pb2.Summary.Image(
                height=pixels.shape[0], width=pixels.shape[1], colorspace=3, encoded_image_string=encoded
            ),
        )
    return summary


def audio_value(tag: str, samples: np.ndarray, rate: int) -> tb_summary_pb2.Summary:
    """TF1-style audio: a 16-bit mono WAV in Summary.Audio."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    summary = tb_summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        audio=tb_summary_pb2.Summary.Audio(
            sample_rate=rate,
            num_channels=1,
            length_frames=len(samples),
            encoded_audio_string=buf.getvalue(),
            content_type="audio/wav",
        ),
    )
    return summary


def pr_value(tag: str, rng, thresholds: int = 5) -> tb_summary_pb2.Summary:
    """A pr_curves tensor (6 x thresholds float32) with the plugin's metadata."""
    summary = tb_summary_pb2.Summary()
    data = rng.random((6, thresholds)).astype(np.float32)
    summary.value.add(
        tag=tag,
        tensor=tensor_util.make_tensor_proto(data),
        metadata=pr_metadata.create_summary_metadata(tag, "", thresholds),
    )
    return summary


def _event(step, summary=None, **fields) -> tb_event_pb2.Event:
    event = tb_event_pb2.Event(wall_time=WALL + step, step=step, **fields)
    if summary is not None:
        event.summary.CopyFrom(summary)
    return event


def rich_events(steps: int = 5) -> list:
    """TensorBoard Events of every kind the CLI knows: scalars (tensor and simple_value), histograms,
    images, audio, text, pr curves, hparams, a graph, run metadata, session log."""
    rng = np.random.default_rng(0)
    graph = tb_graph_pb2.GraphDef()
    node = graph.node.add(name="Layer1/MatMul", op="MatMul")
    node.input.extend(["x", "Layer1/w"])
    events = [
        _event(0, graph_def=graph.SerializeToString()),
        _event(0, summary=hparams_summary.hparams_pb({"lr": 0.1, "opt": "adam", "bn": True}, trial_id="t1")),
        _event(0, session_log=tb_event_pb2.SessionLog(status=tb_event_pb2.SessionLog.START)),
        _event(0, tagged_run_metadata=tb_event_pb2.TaggedRunMetadata(tag="step0", run_metadata=b"\x01\x02")),
    ]
    for step in range(steps):
        tf1 = tb_summary_pb2.Summary()
        tf1.value.add(tag="tf1/loss", simple_value=1.0 / (step + 1))
        histo = tf1.value.add(tag="tf1/weights").histo
        histo.min, histo.max, histo.num, histo.sum = -1.0, 1.0, 3, 0.5
        histo.bucket_limit.extend([-1.0, 0.0, 1.0])
        histo.bucket.extend([1, 1, 1])
        events += [
            _event(step, summary=tf1),
            _event(step, summary=scalar_summary.scalar_pb("loss", np.float32(0.5**step))),
            _event(step, summary=scalar_summary.scalar_pb("acc", np.float64(step / 10))),
            _event(step, summary=histogram_summary.histogram_pb("weights", rng.normal(size=100))),
            _event(step, summary=image_value("tf1/sample", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), False)),
            _event(step, summary=image_value("sample", rng.integers(0, 255, (4, 6, 3), dtype=np.uint8), True)),
            _event(step, summary=text_summary.text_pb("note", f"step **{step}**")),
            _event(step, summary=audio_value("beep", rng.uniform(-1, 1, 64), 8000)),
            _event(step, summary=pr_value("pr", rng)),
        ]
    events.append(_event(steps, session_log=tb_event_pb2.SessionLog(status=tb_event_pb2.SessionLog.STOP)))
    return events


def write_tb_file(logdir, events, suffix: str = "") -> str:
    """Write events with TensorBoard's own EventFileWriter; return the file's path."""
    before = set(os.listdir(logdir))
    writer = EventFileWriter(str(logdir), filename_suffix=suffix)
    for event in events:
        writer.add_event(event)
    writer.close()
    (name,) = set(os.listdir(logdir)) - before
    return os.path.join(str(logdir), name)


def tb_records(path) -> list:
    """The records TensorBoard's own raw loader reads from a file."""
    return list(event_file_loader.RawEventFileLoader(str(path)).Load())


@pytest.fixture(scope="module")
def rich_file(tmp_path_factory):
    """A real event file with content of every kind, written by TensorBoard's writer."""
    logdir = tmp_path_factory.mktemp("rich")
    return write_tb_file(logdir, rich_events())


# --- records and events ------------------------------------------------------------------------


def test_records_equal_tensorboard_raw_loader(rich_file):
    records = list(reader.read_records(rich_file))
    expected = tb_records(rich_file)
    assert len(records) == len(expected) == 1 + 4 + 9 * 5 + 1
    assert [r.data for r in records] == expected
    # offsets walk the file record by record: each next offset = previous + 12 + len + 4
    offsets = [r.offset for r in records]
    assert offsets[0] == 0
    assert offsets[1:] == [r.offset + len(r.data) + 16 for r in records[:-1]]
    assert offsets[-1] + len(records[-1].data) + 16 == os.path.getsize(rich_file)
    assert all(r.path == rich_file for r in records)


def test_events_equal_tensorboard_event_loader(rich_file):
    ours = list(reader.read_events(rich_file))
    theirs = list(event_file_loader.LegacyEventFileLoader(rich_file).Load())
    assert len(ours) == len(theirs)
    assert ours[0].file_version == theirs[0].file_version == "brain.Event:2"
    for a, b in zip(ours, theirs):
        assert isinstance(a, event_pb2.Event)
        assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
        assert (a.step, a.wall_time, a.WhichOneof("what")) == (b.step, b.wall_time, b.WhichOneof("what"))


def test_record_event_parses_like_read_events(rich_file):
    records = list(reader.read_records(rich_file))
    events = list(reader.read_events(rich_file))
    assert [r.event() for r in records] == events


def test_reads_file_written_by_own_framing(tmp_path):
    payloads = [event_pb2.Event(step=i, file_version="x" * i).SerializeToString() for i in range(50)]
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(b"".join(frame(p) for p in payloads))
    assert [r.data for r in reader.read_records(path)] == payloads == tb_records(path)
    assert [e.step for e in reader.read_events(path)] == list(range(50))


def test_empty_file_has_no_records(tmp_path):
    path = tmp_path / "events.out.tfevents.0.empty"
    path.write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(reader.read_records(path)) == []


# --- truncation: a writer killed mid-write ---------------------------------------------------


def test_truncated_last_record_is_warned_and_skipped_like_tensorboard(rich_file, tmp_path):
    data = open(rich_file, "rb").read()
    records = list(reader.read_records(rich_file))
    last = records[-1]
    cut_points = list(range(last.offset + 1, len(data)))  # every cut inside the last record
    cut_points += [records[10].offset + 5, records[20].offset + 12 + 3]  # and in the header/data of others
    for cut in cut_points:
        path = tmp_path / f"events.out.tfevents.cut{cut}"
        path.write_bytes(data[:cut])
        kept = [r for r in records if r.offset + len(r.data) + 16 <= cut]
        with pytest.warns(reader.TruncatedRecordWarning) as caught:
            got = list(reader.read_records(path))
        assert [r.data for r in got] == [r.data for r in kept] == tb_records(path)
        message = str(caught[0].message)
        assert str(path) in message and f"byte offset {kept[-1].offset + len(kept[-1].data) + 16}:" in message


def test_truncation_callback_and_ignore(rich_file, tmp_path):
    data = open(rich_file, "rb").read()
    path = tmp_path / "events.out.tfevents.cut"
    path.write_bytes(data[:-3])
    seen = []
    got = list(reader.read_events(path, on_truncated=seen.append))
    assert len(got) == len(tb_records(rich_file)) - 1
    (t,) = seen
    assert isinstance(t, reader.Truncation)
    assert t.path == str(path)
    assert t.offset == list(reader.read_records(rich_file))[-1].offset
    assert "needs" in t.reason and "file has" in t.reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(reader.read_events(path, on_truncated="ignore"))) == len(got)
    path.write_bytes(data[:7])  # inside the first header
    seen.clear()
    assert list(reader.read_records(path, on_truncated=seen.append)) == []
    assert seen[0].offset == 0 and "7 bytes into the 12-byte record header" in seen[0].reason


def test_on_truncated_must_be_known(rich_file):
    with pytest.raises(ValueError, match="on_truncated"):
        list(reader.read_records(rich_file, on_truncated="explode"))


def test_huge_length_with_valid_checksum_is_truncation_not_allocation(tmp_path):
    # A header that promises 2**40 bytes: the file cannot hold it, so it is a truncated record,
    # found out before reading (a MemoryError would mean it tried to allocate).
    length = struct.pack("<Q", 2**40)
    path = tmp_path / "events.out.tfevents.huge"
    good = frame(event_pb2.Event(step=1).SerializeToString())
    path.write_bytes(good + length + struct.pack("<I", masked_crc(length)) + b"abc")
    seen = []
    assert [e.step for e in reader.read_events(path, on_truncated=seen.append)] == [1]
    assert seen[0].offset == len(good)


# --- corruption --------------------------------------------------------------------------------


def test_flipped_data_byte_raises_named_error_after_good_records(rich_file, tmp_path):
    data = bytearray(open(rich_file, "rb").read())
    records = list(reader.read_records(rich_file))
    bad = records[7]
    data[bad.offset + 12 + len(bad.data) // 2] ^= 0x40
    path = tmp_path / "events.out.tfevents.flip"
    path.write_bytes(bytes(data))
    got = []
    with pytest.raises(reader.CorruptRecordError) as err:
        for r in reader.read_records(path):
            got.append(r.data)
    assert got == [r.data for r in records[:7]]
    e = err.value
    assert isinstance(e, ValueError)
    assert (e.path, e.offset) == (str(path), bad.offset)
    assert "data checksum mismatch" in e.reason
    assert str(path) in str(e) and f"byte offset {bad.offset}" in str(e)


def test_flipped_length_byte_raises_at_that_record(rich_file, tmp_path):
    data = bytearray(open(rich_file, "rb").read())
    bad = list(reader.read_records(rich_file))[3]
    data[bad.offset + 1] ^= 0x01
    path = tmp_path / "events.out.tfevents.len"
    path.write_bytes(bytes(data))
    with pytest.raises(reader.CorruptRecordError, match=f"byte offset {bad.offset}: length checksum") as err:
        list(reader.read_events(path))
    assert err.value.offset == bad.offset


def test_garbage_after_last_record_is_corrupt_not_truncated(rich_file, tmp_path):
    # 12+ bytes that are not a header: a length whose checksum fails cannot be trusted.
    data = open(rich_file, "rb").read()
    path = tmp_path / "events.out.tfevents.tail"
    path.write_bytes(data + b"\x00" * 64)
    with pytest.raises(reader.CorruptRecordError) as err:
        list(reader.read_records(path))
    assert err.value.offset == len(data)


def test_valid_checksums_around_non_event_bytes_are_corrupt(tmp_path):
    path = tmp_path / "events.out.tfevents.notevent"
    path.write_bytes(frame(event_pb2.Event(step=3).SerializeToString()) + frame(b"\xff\xff\xff"))
    records = list(reader.read_records(path))
    assert len(records) == 2  # framing is fine
    with pytest.raises(reader.CorruptRecordError, match="not an Event") as err:
        list(reader.read_events(path))
    assert err.value.offset == records[1].offset


# --- logdirs and runs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Runs at the root, one level down and two levels down; one run with two files."""
    root = tmp_path_factory.mktemp("logdir")
    events = rich_events(3)
    write_tb_file(root, events)
    for run in ["train", "eval", os.path.join("sweep", "lr=0.1")]:
        os.makedirs(root / run)
        write_tb_file(root / run, events)
    write_tb_file(root / "train", [_event(100, summary=scalar_summary.scalar_pb("loss", 0.25))], suffix=".2")
    os.makedirs(root / "empty_dir")
    (root / "train" / "notes.txt").write_text("not an event file")
    return root


def test_runs_match_tensorboard_multiplexer(logdir):
    runs = reader.event_files(logdir)
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    assert sorted(runs) == sorted(mux.Runs()) == [".", "eval", "sweep/lr=0.1", "train"]
    assert len(runs["train"]) == 2 and all("tfevents" in os.path.basename(p) for p in runs["train"])
    assert reader.event_files(runs["eval"][0]) == {".": runs["eval"]}


def test_missing_logdir_raises_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        reader.event_files(tmp_path / "nope")


def _tb_accumulator(path):
    acc = plugin_event_accumulator.EventAccumulator(
        str(path), size_guidance={"tensors": 0, "graph": 0, "run_metadata": 0}
    )
    acc.Reload()
    return acc


_TB_PLUGIN_TO_KIND = {
    "scalars": "scalar",
    "histograms": "histogram",
    "images": "image",
    "audio": "audio",
    "text": "text",
    "pr_curves": "pr_curve",
    "hparams": "hparams",
}


def test_tag_kinds_and_scalars_match_event_accumulator(logdir):
    """Per run: each tag's kind and every scalar (step, wall_time, value) as TensorBoard loads them."""
    for paths in reader.event_files(logdir).values():
        acc = _tb_accumulator(os.path.dirname(paths[0]))
        kinds = reader.TagKinds()
        ours_kind, ours_scalars, ours_steps = {}, {}, {}
        for path in paths:
            for event in reader.read_events(path):
                for value in event.summary.value:
                    kind = ours_kind.setdefault(value.tag, kinds.kind(value))
                    ours_steps.setdefault(value.tag, []).append(event.step)
                    if kind == "scalar":
                        ours_scalars.setdefault(value.tag, []).append(
                            (event.step, event.wall_time, reader.scalar_value(value))
                        )
        theirs_kind, graph_tags = {}, []
        for tag in acc.Tags()["tensors"]:
            plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
            if plugin.startswith("graph"):  # TensorBoard turns graph and run-metadata events into tensors too
                graph_tags.append(tag)
                continue
            theirs_kind[tag] = _TB_PLUGIN_TO_KIND[plugin]
        assert ours_kind == theirs_kind
        assert {"tf1/loss", "loss", "acc"} <= set(ours_scalars)
        for tag, rows in ours_scalars.items():
            theirs = [(t.step, t.wall_time, float(tensor_util.make_ndarray(t.tensor_proto))) for t in acc.Tensors(tag)]
            assert rows == theirs, tag
        for tag, steps in ours_steps.items():
            assert steps == [t.step for t in acc.Tensors(tag)], tag
        assert acc.Tags()["graph"] is True
        # TensorBoard keeps the graph and our run_metadata tag as graph-plugin tensors
        assert sorted(graph_tags) == ["__run_graph__", "step0"]


def test_read_logdir_yields_every_event_with_its_run(logdir):
    pairs = list(reader.read_logdir(logdir))
    runs = reader.event_files(logdir)
    expected = sum(len(tb_records(p)) for paths in runs.values() for p in paths)
    assert len(pairs) == expected
    assert [run for run, _ in pairs] == sorted([run for run, _ in pairs], key=list(runs).index)
    # File names carry TensorBoard's per-process counter ("...10.2" sorts before "...9"), so
    # the last pair is the last record of whichever file sorts last in the last run.
    last_run = list(runs)[-1]
    assert pairs[-1][0] == last_run
    assert pairs[-1][1].SerializeToString() == tb_records(runs[last_run][-1])[-1]
    assert any(run == "train" and e.summary.value and e.summary.value[0].tag == "loss" for run, e in pairs)


def test_tag_kinds_use_first_metadata_only():
    kinds = reader.TagKinds()
    first = summary_pb2.Summary.Value(tag="t")
    first.metadata.plugin_data.plugin_name = "text"
    first.tensor.dtype = 7
    later = summary_pb2.Summary.Value(tag="t")
    later.tensor.dtype = 7
    stranger = summary_pb2.Summary.Value(tag="u")
    stranger.tensor.dtype = 1
    assert [kinds.kind(first), kinds.kind(later), kinds.kind(stranger)] == ["text", "text", "tensor"]
    assert kinds.kind(summary_pb2.Summary.Value(tag="v", simple_value=1.0)) == "scalar"


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [
        np.float32(1.5),
        np.float64(-2.25),
        np.int32(-7),
        np.int64(2**40),
        np.array(True),
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.arange(4, dtype=np.uint8),
        np.array([1.5, -0.5], dtype=np.float16),
        np.array([[1, 2], [3, 4]], dtype=np.int16),
        np.array([b"a", b"bc"], dtype=object),
        np.zeros((0, 3), dtype=np.float64),
    ],
)
def test_tensor_to_array_equals_tensorboard_make_ndarray(array):
    tb_proto = tensor_util.make_tensor_proto(array)
    ours = reader.tensor_to_array(
        summary_pb2.Summary.Value.FromString(
            tb_summary_pb2.Summary.Value(tag="x", tensor=tb_proto).SerializeToString()
        ).tensor
    )
    theirs = tensor_util.make_ndarray(tb_proto)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert ours.tolist() == theirs.tolist()


def test_tensor_to_array_repeats_last_typed_value():
    value = summary_pb2.Summary.Value(tag="x")
    value.tensor.dtype = 1
    value.tensor.tensor_shape.dim.add(size=4)
    value.tensor.float_val.extend([1.0, 2.0])
    assert reader.tensor_to_array(value.tensor).tolist() == [1.0, 2.0, 2.0, 2.0]


def test_scalar_value_of_simple_value_and_tensors():
    assert reader.scalar_value(summary_pb2.Summary.Value(tag="a", simple_value=0.1)) == float(np.float32(0.1))
    for number in [np.float32(0.1), np.float64(0.1), np.int64(5), np.array([[3.5]], dtype=np.float32)]:
        tensor = tensor_util.make_tensor_proto(number)
        value = summary_pb2.Summary.Value.FromString(
            tb_summary_pb2.Summary.Value(tag="s", tensor=tensor).SerializeToString()
        )
        assert reader.scalar_value(value) == float(tensor_util.make_ndarray(tensor).reshape(()))
    assert reader.scalar_value(value) == 3.5
    from_pb = scalar_summary.scalar_pb("s", 0.25).value[0].SerializeToString()
    assert reader.scalar_value(summary_pb2.Summary.Value.FromString(from_pb)) == 0.25
    bad = summary_pb2.Summary.Value.FromString(
        histogram_summary.histogram_pb("h", np.arange(3.0)).value[0].SerializeToString()
    )
    with pytest.raises(ValueError, match="'h'.*one-element"):
        reader.scalar_value(bad)
    with pytest.raises(ValueError, match="'i'.*simple_value or a tensor"):
        reader.scalar_value(summary_pb2.Summary.Value(tag="i"))


# --- streaming: memory stays flat --------------------------------------------------------------


def test_streaming_200mb_keeps_memory_flat(tmp_path):
    """A child process reads a 200 MB file (and exports its scalars); its peak RSS grows by far less."""
    image = _event(
        1,
        summary=image_value(
            "big", np.random.default_rng(1).integers(0, 255, size=(256, 256, 3), dtype=np.uint8), v2=True
        ),
    )
    big_record = frame(image.SerializeToString())
    scalars = b"".join(
        frame(_event(s, summary=scalar_summary.scalar_pb("loss", s / 7)).SerializeToString()) for s in range(100)
    )
    chunk = big_record * 20 + scalars
    path = tmp_path / "events.out.tfevents.big"
    with open(path, "wb") as f:
        while f.tell() < 200 * 2**20:
            f.write(chunk)
    size = os.path.getsize(path)
    script = textwrap.dedent(f"""
        import io, resource
        from tbwriter import reader
        from tbwriter.__main__ import main
        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # warm up on a small prefix so imports and first allocations are in the baseline
        n = 0
        for r in reader.read_records({str(path)!r}):
            n += 1
            if n == 50: break
        before = peak_mb()
        records = sum(1 for _ in reader.read_records({str(path)!r}))
        code = main(["export", {str(path)!r}, "--csv", {str(tmp_path / "out.csv")!r}], stdout=io.StringIO())
        print(records, code, before, peak_mb())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    records, code, before, after = out.split()
    assert int(records) == size // len(chunk) * (20 + 100)
    assert int(code) == 0
    print(f"streamed {size / 2**20:.0f} MB: peak RSS {float(before):.1f} MB -> {float(after):.1f} MB")
    assert float(after) - float(before) < 20, (before, after)
