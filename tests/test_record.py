"""TFRecord framing against TensorBoard's own CRC, record writer and record reader."""
import io
import struct

import pytest
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tb_stub
from tensorboard.summary.writer.record_writer import RecordWriter

from tbwriter.record import frame, masked_crc32c

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
