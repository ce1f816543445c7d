"""tbwriter.wire: TFRecord framing against TensorBoard's CRC, RecordWriter and reader; the hand-built
Event bytes against protobuf's own parsing and serialization."""

import io
import struct

import numpy as np
import pytest
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_stub
from tensorboard.summary.writer.record_writer import RecordWriter

from tbwriter import wire
from tbwriter.proto import event_pb2, histogram_pb2, summary_pb2
from tbwriter.wire import frame, masked_crc32c

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
