"""read_scalars against its references on event files hypothesis generates.

Each example is a run of 1-3 event files, written by tbwriter's SummaryWriter or as raw records
(other writers: with or without a file_version, tensor scalars in float32 and float64), with
unicode tags of 0 to 10,000 characters, histograms, images and text mixed in, SessionLog
STARTs (purge_step restarts), steps that go backwards, and at times a torn tail or a flipped
byte. read_scalars, at tiny chunk sizes too, must equal:
- as_written=True: the record reader + protobuf + TagKinds + scalar_value (test_scalars.reference);
- by default: TensorBoard's EventAccumulator (what it keeps after purging orphaned steps);
- on a flipped byte: the record reader's CorruptRecordError (same file, same byte offset).
The last test runs the same property against deliberately broken variants and asserts each is
caught. NPNN_HYPOTHESIS_EXAMPLES sets the example count (default 25; raise it for a long run).
"""

import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from hypothesis_settings import examples

import tbwriter
from tbwriter import reader, scalars
from tbwriter.proto import event_pb2, summary_pb2, types_pb2
from test_reader import frame
from test_scalars import assert_same, reference, shown

EXAMPLES = examples(25)
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Short tags from a small alphabet collide often in their first bytes (what tag grouping must
# tell apart); long ones reach 10,000 characters; any unicode text too.
short_tags = st.text(alphabet="ab/_é€😀", max_size=12)
long_tags = st.builds(
    lambda c, n, t: c * n + t, st.characters(exclude_categories=["Cs"]), st.integers(20, 10_000), short_tags
)
tags = st.one_of(st.text(alphabet="ab", max_size=3), short_tags, long_tags, st.text(max_size=40))
steps = st.one_of(st.integers(0, 12), st.integers(-2, 40), st.just(2**40))
values = st.floats(width=32)

# kind of a tag's values: float32 simple_value, float32 / float64 scalar tensors, or no scalar
KINDS = ("simple", "simple", "simple", "tensor32", "tensor64", "histogram", "image", "text")


@st.composite
def runs(draw):
    """(tag pool [(tag, kind)], files [(writer, file_version, [items])], damage)."""
    pool = draw(st.lists(st.tuples(tags, st.sampled_from(KINDS)), min_size=1, max_size=6, unique_by=lambda t: t[0]))
    if draw(st.booleans()):  # two scalar tags of one length that differ only in their last byte
        stem = draw(tags)
        pool = [t for t in pool if t[0] not in (stem + "a", stem + "b")] + [
            (stem + "a", "simple"),
            (stem + "b", "simple"),
        ]
    summary = st.tuples(
        st.just("values"), steps, st.lists(st.tuples(st.sampled_from(range(len(pool))), values), min_size=1, max_size=3)
    )
    item = st.one_of(
        summary,
        summary,
        summary,
        st.tuples(st.just("start"), steps, st.just(())),
        st.tuples(st.just("graph"), steps, st.just(())),
    )
    files = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["writer", "raw"]),
                st.sampled_from([None, "brain.Event:2", "brain.Event:1"]),
                st.lists(item, min_size=1, max_size=40),
                st.one_of(st.none(), steps),  # purge_step
            ),
            min_size=1,
            max_size=3,
        )
    )
    damage = draw(st.one_of(st.just(None), st.tuples(st.sampled_from(["torn", "flip"]), st.integers(0, 2**31))))
    return pool, files, damage


def _value(tag: str, kind: str, number: float) -> summary_pb2.Summary.Value:
    """A Summary.Value of the kind, as other writers send it."""
    v = summary_pb2.Summary.Value(tag=tag)
    if kind == "simple":
        v.simple_value = number
    elif kind in ("tensor32", "tensor64"):
        v.metadata.plugin_data.plugin_name = "scalars"
        v.tensor.dtype = types_pb2.DT_FLOAT if kind == "tensor32" else types_pb2.DT_DOUBLE
        (v.tensor.float_val if kind == "tensor32" else v.tensor.double_val).append(number)
    elif kind == "histogram":
        v.histo.CopyFrom(tbwriter.summary.histogram_proto(np.array([number if np.isfinite(number) else 0.0])))
    elif kind == "image":
        v.image.encoded_image_string = b"\x89PNG" + tag.encode()[:20]
    else:
        v.metadata.plugin_data.plugin_name = "text"
        v.tensor.dtype = types_pb2.DT_STRING
        v.tensor.string_val.append(tag.encode()[:30])
    return v


def _events(pool, version, items, purge_step) -> list:
    """The raw Events of one file."""
    out = []
    wall = 1000.0
    if version is not None:
        out.append(event_pb2.Event(wall_time=wall, file_version=version))
    start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
    if purge_step is not None:
        out.append(event_pb2.Event(wall_time=wall, step=purge_step, session_log=start))
    for what, step, vals in items:
        wall += 0.25
        e = event_pb2.Event(wall_time=wall, step=step)
        if what == "start":
            e.session_log.CopyFrom(start)
        elif what == "graph":
            e.graph_def = b"graph"
        else:
            e.summary.value.extend(_value(pool[i][0], pool[i][1], number) for i, number in vals)
        out.append(e)
    return out


def _write_with_summary_writer(path: str, pool, items, purge_step) -> None:
    """One file by tbwriter.SummaryWriter (what it refuses, e.g. an empty tag, is left out)."""
    with tempfile.TemporaryDirectory() as d:
        with tbwriter.SummaryWriter(d, purge_step=purge_step) as w:
            wall = 1000.0
            for what, step, vals in items:
                wall += 0.25
                if what == "start":
                    w.file_writer.add_session_log(event_pb2.SessionLog(status=1), step, wall)
                for i, number in vals:
                    tag, kind = pool[i]
                    try:
                        if kind.startswith("simple") or kind.startswith("tensor"):
                            w.add_scalar(
                                tag, number, step, wall, new_style=kind != "simple", double_precision=kind == "tensor64"
                            )
                        elif kind == "histogram":
                            w.add_histogram(tag, np.array([number if np.isfinite(number) else 0.0]), step, wall)
                        elif kind == "text":
                            w.add_text(tag, tag[:30], step, wall)
                    except ValueError:
                        pass
        (name,) = os.listdir(d)
        os.replace(os.path.join(d, name), path)


def build(root: str, example) -> None:
    """Write the example's run into root, files named to sort in write order."""
    pool, files, damage = example
    paths = []
    for k, (how, version, items, purge_step) in enumerate(files):
        path = os.path.join(root, f"events.out.tfevents.{k:03d}")
        if how == "writer":
            _write_with_summary_writer(path, pool, items, purge_step)
        else:
            with open(path, "wb") as f:
                f.write(b"".join(frame(e.SerializeToString()) for e in _events(pool, version, items, purge_step)))
        paths.append(path)
    if damage is not None:
        kind, at = damage
        path = paths[-1] if kind == "torn" else paths[at % len(paths)]
        data = bytearray(open(path, "rb").read())
        if kind == "torn":
            data = data[: at % (len(data) + 1)]
        else:
            data[at % len(data)] ^= 1 << (at % 8)
        with open(path, "wb") as f:
            f.write(bytes(data))


def check(example, chunk_size) -> None:
    """The property: read_scalars equals the record reader (as written) and EventAccumulator (by default)."""
    with tempfile.TemporaryDirectory() as root, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build(root, example)
        try:
            want = reference(root)
        except reader.CorruptRecordError as e:
            with pytest.raises(reader.CorruptRecordError) as got:
                tbwriter.read_scalars(root, chunk_size=chunk_size)
            assert (got.value.path, got.value.offset) == (e.path, e.offset)
            return
        assert_same(tbwriter.read_scalars(root, as_written=True, chunk_size=chunk_size), want)
        got = tbwriter.read_scalars(root, chunk_size=chunk_size)
        if not want:
            assert got == {}
            return
        assert list(got["."]) == sorted(want["."])
        for tag, s in shown(root, got["."]).items():
            ours = got["."][tag]
            assert ours.steps.tolist() == s[0], tag
            assert ours.wall_times.tolist() == s[1], tag
            np.testing.assert_array_equal(ours.values.astype(np.float64), np.array(s[2], np.float64), err_msg=tag)


CHUNK_SIZES = st.sampled_from([None, None, 40, 97, 256, 1000, 4096])


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(example=runs(), chunk_size=CHUNK_SIZES)
def test_read_scalars_equals_the_record_reader_and_event_accumulator(example, chunk_size):
    check(example, chunk_size)


def _mask_one_byte_short(length: int, w: int) -> np.uint64:
    """Broken: the last partial word of a tag loses its last byte (tags differing there merge)."""
    return scalars._ALL if length - w >= 8 else np.uint64((1 << (8 * max(length - w - 1, 0))) - 1)


BROKEN = {
    "tag grouping off by one byte": ("_word_mask", _mask_one_byte_short),
    "no purge": ("_purge", lambda self, tags, step: None),
    "START ignored": ("_is_start", lambda event: False),
}


@pytest.mark.parametrize("name", BROKEN)
def test_the_differential_test_catches_a_broken_variant(name, monkeypatch):
    attr, broken = BROKEN[name]
    monkeypatch.setattr(scalars.RunColumns if attr == "_purge" else scalars, attr, broken)
    search = settings(max_examples=200, phases=[Phase.generate], database=None, derandomize=True, **SETTINGS)
    with pytest.raises(AssertionError):
        search(given(example=runs(), chunk_size=CHUNK_SIZES)(check))()
