"""The bytes of an event file: protobuf varints, Event fields and TFRecord framing, in one place.

Hot paths (scalars, histograms) build Event bytes here directly instead of through protobuf
objects, whose Python setters cost more (docs/performance.md); the bytes parse to exactly the message protobuf
would build (tests/test_wire.py checks that against protobuf and TensorBoard's RecordWriter).
"""

import struct

from crc32c import crc32c

__all__ = [
    "EVENT_GRAPH_DEF",
    "EVENT_SUMMARY",
    "SUMMARY_VALUE",
    "VALUE_HISTO",
    "event",
    "event_header",
    "float32",
    "frame",
    "mask",
    "masked_crc32c",
    "scalar_event_prefix",
    "scalar_record",
    "scalar_value_prefix",
    "value_tag",
    "varint",
]

# Keys (field number << 3 | wire type 2) of the length-delimited fields written by hand.
EVENT_GRAPH_DEF = b"\x22"  # Event.graph_def (4)
EVENT_SUMMARY = b"\x2a"  # Event.summary (5)
SUMMARY_VALUE = b"\x0a"  # Summary.value (1), repeated
VALUE_HISTO = b"\x2a"  # Summary.Value.histo (5)

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q").pack
_U32 = struct.Struct("<I").pack
_F32 = struct.Struct("<f").pack
_WALL_TIME = struct.Struct("<Bd").pack  # Event.wall_time: key 0x09, little-endian double
_WALL_TIME_STEP1 = struct.Struct("<BdBB").pack  # wall_time, then a 1-byte step varint
_WALL_TIME_STEP2 = struct.Struct("<BdBBB").pack  # wall_time, then a 2-byte step varint


def mask(crc: int) -> int:
    """A CRC32C (e.g. one computed in chunks) rotated right by 15 bits and offset, as TFRecord stores it."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """CRC32C of data, masked as TFRecord stores it."""
    return mask(crc32c(data))


def _encode_varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negative int64: two's complement)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_encode_varint(n) for n in range(1 << 12)]  # lengths of small messages: a lookup


def varint(n: int) -> bytes:
    """Protobuf varint of an int64 (a length, a step)."""
    return _VARINTS[n] if 0 <= n < 4096 else _encode_varint(n)


_HEADERS = {}  # record length -> its 12-byte header (length, masked CRC of length)


def _header(n: int) -> bytes:
    """Length and masked length CRC of a record of n bytes, computed once per length."""
    length = _U64(n)
    header = _HEADERS[n] = length + _U32(masked_crc32c(length))
    return header


# Format of a single record (TensorBoard's RecordWriter.write):
#  uint64    length
#  uint32    masked crc of length
#  byte      data[length]
#  uint32    masked crc of data
def frame(data: bytes) -> bytes:
    """Return data framed as one TFRecord (length, its CRC, data, data CRC)."""
    n = len(data)
    return b"".join((_HEADERS.get(n) or _header(n), data, _U32(mask(crc32c(data)))))


def event_header(wall_time: float, step: int) -> bytes:
    """Event.wall_time and Event.step (omitted when 0, as proto3 does), the start of every Event."""
    if 0 < step < 128:
        return _WALL_TIME_STEP1(0x09, wall_time, 0x10, step)
    if 128 <= step < 16384:
        return _WALL_TIME_STEP2(0x09, wall_time, 0x10, (step & 0x7F) | 0x80, step >> 7)
    if step == 0:
        return _WALL_TIME(0x09, wall_time)
    if not -(1 << 63) <= step < (1 << 63):
        raise ValueError(f"global_step: expected an int64, got {step}")
    return _WALL_TIME(0x09, wall_time) + b"\x10" + _encode_varint(step)


def event(wall_time: float, step: int, field: bytes, payload: bytes) -> bytes:
    """Serialized Event{wall_time, step, field=payload} for a length-delimited field (EVENT_*)."""
    return b"".join((event_header(wall_time, step), field, varint(len(payload)), payload))


def value_tag(tag: str) -> bytes:
    """Summary.Value.tag (field 1) holding tag."""
    tagb = tag.encode("utf-8")
    return b"\x0a" + varint(len(tagb)) + tagb


def scalar_value_prefix(tag: str) -> bytes:
    """Bytes of one Summary.value entry {tag, simple_value} up to its 4 float bytes."""
    tag_field = value_tag(tag)
    return SUMMARY_VALUE + varint(len(tag_field) + 5) + tag_field + b"\x15"  # simple_value: field 2, fixed32


def scalar_event_prefix(tag: str) -> bytes:
    """Bytes of Event.summary holding one simple_value of tag, up to its 4 float bytes."""
    value = scalar_value_prefix(tag)
    return EVENT_SUMMARY + varint(len(value) + 4) + value


def float32(value: float) -> bytes:
    """A float32 field's 4 bytes; finite values beyond float32 round to +-inf, as numpy does."""
    try:
        return _F32(value)
    except OverflowError:
        return _F32(float("inf") if value > 0 else float("-inf"))


def scalar_record(wall_time: float, step: int, prefix: bytes, value: float) -> bytes:
    """One framed record of Event{wall_time, step, summary} from its scalar_event_prefix and the value."""
    if 0 < step < 128:  # the common case in one pack
        head = _WALL_TIME_STEP1(0x09, wall_time, 0x10, step)
    else:
        head = event_header(wall_time, step)
    try:
        data = head + prefix + _F32(value)
    except OverflowError:
        data = head + prefix + float32(value)
    # frame() and mask() inlined: calls are most of a scalar's cost (docs/performance.md)
    n = len(data)
    crc = crc32c(data)
    return (_HEADERS.get(n) or _header(n)) + data + _U32((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF)
