"""tbwriter.wire: TFRecord framing against TensorBoard's CRC, RecordWriter and reader; the hand-built
Event bytes against protobuf's own parsing and serialization."""

import io
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_stub
from tensorboard.summary.writer.record_writer import RecordWriter

from tbwriter import wire
from tbwriter.proto import event_pb2, histogram_pb2, summary_pb2
from tbwriter.wire import frame, masked_crc32c

from hypothesis_settings import assert_caught, examples

PAYLOADS = [b"", b"a", b"\x00" * 7, bytes(range(256)), b"event" * 1000, bytes(100_003)]


@pytest.mark.parametrize("data", PAYLOADS, ids=lambda d: f"len{len(d)}")
def test_masked_crc_matches_tensorboards_pure_python_crc(data):
    assert masked_crc32c(data) == tb_stub.masked_crc32c(data)


def test_masked_crc_known_value():
    # crc32c(b"123456789") = 0xE3069283 (the CRC-32C check value); then rotate and offset.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.mark.parametrize("data", PAYLOADS, ids=lambda d: f"len{len(d)}")
def test_frame_is_byte_identical_to_tensorboards_record_writer(data):
    out = io.BytesIO()
    RecordWriter(out).write(data)
    assert frame(data) == out.getvalue()
    assert struct.unpack("<Q", frame(data)[:8])[0] == len(data)


def test_tensorboards_record_reader_reads_our_frames_back(tmp_path):
    path = tmp_path / "records"
    path.write_bytes(b"".join(frame(d) for d in PAYLOADS))
    reader = tb_stub.PyRecordReader_New(str(path))
    got = []
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            break
        got.append(reader.record())
    assert got == PAYLOADS


def test_tensorboards_reader_rejects_a_flipped_byte(tmp_path):
    rec = bytearray(frame(b"hello world"))
    rec[14] ^= 0x01
    path = tmp_path / "records"
    path.write_bytes(bytes(rec))
    reader = tb_stub.PyRecordReader_New(str(path))
    with pytest.raises(errors.DataLossError):
        reader.GetNext()


STEPS = [0, 1, 127, 128, 16383, 16384, 2**31, 2**63 - 1, -1, -(2**63)]


@pytest.mark.parametrize("step", STEPS)
def test_event_bytes_serialize_as_protobuf_does(step):
    payload = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="a/b", simple_value=0.25)])
    data = payload.SerializeToString()
    ours = wire.event(1234.5, step, wire.EVENT_SUMMARY, data)
    want = event_pb2.Event(wall_time=1234.5, step=step, summary=payload).SerializeToString()
    assert ours == want
    assert event_pb2.Event.FromString(ours).step == step


@pytest.mark.parametrize("step", [2**63, -(2**63) - 1])
def test_event_header_rejects_steps_beyond_int64(step):
    with pytest.raises(ValueError, match="global_step: expected an int64"):
        wire.event_header(1.0, step)


@pytest.mark.parametrize("n", [1, 127, 128, 300, 4095, 4096, 2**32, 2**63 - 1])
def test_varint_matches_protobufs_encoding(n):
    # Event.step is an int64 varint (field 2): its bytes after the key are protobuf's varint of n.
    assert event_pb2.Event(step=n).SerializeToString() == b"\x10" + wire.varint(n)


@pytest.mark.parametrize("tag", ["loss", "a" * 200, "Ünïcode/標籤"])
@pytest.mark.parametrize("value", [0.5, -3.0, float("inf"), 1e39, -1e39])
@pytest.mark.parametrize("step", [0, 7, 300, 1 << 40])
def test_scalar_record_parses_to_the_protobuf_event(tag, value, step):
    record = wire.scalar_record(99.0, step, wire.scalar_event_prefix(tag), value)
    data = record[12:-4]
    out = io.BytesIO()
    RecordWriter(out).write(data)
    assert record == out.getvalue()  # framed exactly as TensorBoard frames it
    event = event_pb2.Event.FromString(data)
    (v,) = event.summary.value
    assert (event.wall_time, event.step, v.tag) == (99.0, step, tag)
    assert v.simple_value == np.float32(value)  # beyond float32: +-inf, as numpy rounds
    assert data == event.SerializeToString()


def test_histogram_value_entry_parses_to_the_protobuf_value():
    histo = histogram_pb2.HistogramProto(min=1.0, max=2.0, num=2, bucket_limit=[2.0], bucket=[2.0])
    h = histo.SerializeToString()
    prefix = wire.value_tag("w") + wire.VALUE_HISTO + wire.varint(len(h))
    entry = wire.SUMMARY_VALUE + wire.varint(len(prefix) + len(h)) + prefix + h
    want = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="w", histo=histo)])
    assert summary_pb2.Summary.FromString(entry) == want


# --- differential: hand-built bytes against protobuf's serialization, on generated events ---------

# long tags too (multi-byte length varints), built from a repeated piece: generating 10,000 characters is slow
long_tags = st.builds(lambda piece, n: (piece * n)[:10_000], st.text(min_size=1, max_size=8), st.integers(600, 10_000))
tags = st.text(max_size=40) | long_tags
steps = st.integers(-(2**63), 2**63 - 1)
wall_times = st.floats(allow_nan=False)  # NaN is written as is, but a NaN never equals itself in protobuf
values = st.floats(width=32, allow_nan=False) | st.floats(allow_nan=False)  # beyond float32: rounds to inf


def assert_same_event(ours: bytes, want: event_pb2.Event) -> None:
    """Our bytes parse to the protobuf Event, float bits included; byte-identical where no field is a default.

    wire writes wall_time, an empty tag and a zero simple_value, which proto3 leaves out."""
    try:
        got = event_pb2.Event.FromString(ours)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError: the bytes are not an Event
        raise AssertionError(f"not an Event: {e}") from None
    assert got == want
    assert bits(got.wall_time) == bits(want.wall_time)
    got_values, want_values = got.summary.value, want.summary.value
    assert [struct.pack("<f", v.simple_value) for v in got_values] == [
        struct.pack("<f", v.simple_value) for v in want_values
    ]
    if want.wall_time and all(v.tag and v.simple_value for v in want_values):
        assert ours == want.SerializeToString()


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@settings(max_examples=examples(200), deadline=None)
@given(wall_times, steps, tags, values)
def test_property_scalar_record_is_protobufs_event(wall_time, step, tag, value):
    record = wire.scalar_record(wall_time, step, wire.scalar_event_prefix(tag), value)
    with np.errstate(over="ignore"):
        want_value = float(np.float32(value))
    payload = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=want_value)])
    assert_same_event(record[12:-4], event_pb2.Event(wall_time=wall_time, step=step, summary=payload))
    assert record == frame(record[12:-4])


@settings(max_examples=examples(100), deadline=None)
@given(wall_times, steps, tags, st.binary(max_size=20_000))
def test_property_event_of_any_payload_is_protobufs_event(wall_time, step, tag, histo_bytes):
    histo = histogram_pb2.HistogramProto(min=1.0, num=len(histo_bytes), bucket=list(range(len(histo_bytes) % 50)))
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, histo=histo)])
    ours = wire.event(wall_time, step, wire.EVENT_SUMMARY, summary.SerializeToString())
    assert_same_event(ours, event_pb2.Event(wall_time=wall_time, step=step, summary=summary))
    assert frame(histo_bytes)[12:-4] == histo_bytes
    assert struct.unpack("<I", frame(histo_bytes)[-4:])[0] == tb_stub.masked_crc32c(histo_bytes)


def test_property_catches_a_broken_varint(monkeypatch):
    """A varint that keeps only 32 bits (a classic bug for negative steps) fails the property."""
    encode = wire._encode_varint
    monkeypatch.setattr(wire, "_encode_varint", lambda n: encode(n & 0xFFFFFFFF))
    assert_caught(test_property_scalar_record_is_protobufs_event)


def test_property_catches_a_broken_length_prefix(monkeypatch):
    """A length varint one short past the lookup table (lengths >= 4096) fails the property."""
    varint = wire.varint
    monkeypatch.setattr(wire, "varint", lambda n: varint(n - 1 if n >= 4096 else n))
    assert_caught(test_property_scalar_record_is_protobufs_event)
