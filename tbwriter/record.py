"""TFRecord framing, the container format of TensorBoard event files."""
import struct

from crc32c import crc32c

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def masked_crc32c(data: bytes) -> int:
    """CRC32C of data, rotated right by 15 bits and offset, as TFRecord stores it."""
    return mask(crc32c(data))


def mask(crc: int) -> int:
    """A CRC32C (e.g. one computed in chunks) masked as TFRecord stores it."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# Format of a single record:
#  uint64    length
#  uint32    masked crc of length
#  byte      data[length]
#  uint32    masked crc of data
def frame(data: bytes) -> bytes:
    """Return data framed as one TFRecord (length, its CRC, data, data CRC)."""
    header = _U64.pack(len(data))
    return b"".join((header, _U32.pack(masked_crc32c(header)), data, _U32.pack(masked_crc32c(data))))
