"""Images: any dataformats to HWC uint8 (float in [0, 1] scaled, clipped, rounded), grids, PNG with zlib."""

import struct
import zlib

import numpy as np

# Colorspace by channel count, as Summary.Image and PNG's colour types know them.
_PNG_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # gray, gray+alpha, RGB, RGBA


def to_uint8(tensor: np.ndarray) -> np.ndarray:
    """uint8 stays; other numbers are [0, 1] intensities: *255, clipped, rounded (no wrap-around), NaN -> 0."""
    if tensor.dtype == np.uint8:
        return tensor
    with np.errstate(over="ignore", invalid="ignore"):  # huge values saturate, NaN becomes 0 below
        x = tensor.astype(np.float32) * np.float32(255.0)
    np.clip(x, 0.0, 255.0, out=x)
    np.rint(x, out=x)
    np.nan_to_num(x, copy=False, nan=0.0)
    return x.astype(np.uint8)


def _check_format(dataformats, allowed: tuple, arg: str = "dataformats") -> str:
    if not isinstance(dataformats, str):
        raise TypeError(f"{arg} must be a string like {allowed[0]!r}, got {dataformats!r}")
    fmt = dataformats.upper()
    if fmt not in allowed:
        raise ValueError(f"{arg} must be one of {', '.join(allowed)}, got {dataformats!r}")
    return fmt


def _channels_last(tensor: np.ndarray, dataformats, allowed: tuple, target: str) -> np.ndarray:
    """`tensor` in one of the `allowed` layouts transposed to `target` (a missing C becomes 1 channel)."""
    fmt = _check_format(dataformats, allowed)
    if tensor.ndim != len(fmt):
        raise ValueError(
            f"tensor must have {len(fmt)} dimensions for dataformats={dataformats!r}, got shape {tensor.shape}"
        )
    out = tensor.transpose([fmt.index(c) for c in target]) if "C" in fmt else tensor[..., None]
    if out.shape[-1] not in (1, 3, 4):
        raise ValueError(f"tensor must have 1, 3 or 4 channels (dataformats={dataformats!r}), got shape {tensor.shape}")
    return out


def to_hwc(tensor: np.ndarray, dataformats: str = "CHW") -> np.ndarray:
    """One image in CHW, HWC or HW layout to HWC with 1, 3 or 4 channels (values untouched)."""
    return _channels_last(tensor, dataformats, ("CHW", "HWC", "HW"), "HWC")


def to_nhwc(tensor: np.ndarray, dataformats: str = "NCHW") -> np.ndarray:
    """N images in NCHW, NHWC or NHW layout to NHWC with 1, 3 or 4 channels (values untouched)."""
    return _channels_last(tensor, dataformats, ("NCHW", "NHWC", "NHW"), "NHWC")


def grid(tensor: np.ndarray, dataformats: str = "NCHW", ncols: int = 8) -> np.ndarray:
    """N images (NCHW, NHWC or NHW) tiled row by row, `ncols` per row, into one HWC image like tensorboardX."""
    nhwc = to_nhwc(tensor, dataformats)
    n, h, w, c = nhwc.shape
    cols = min(n, ncols)
    rows = -(-n // cols)
    canvas = np.zeros((rows * cols, h, w, c), dtype=nhwc.dtype)
    canvas[:n] = nhwc
    # (rows, cols, h, w, c) -> (rows, h, cols, w, c): each row of tiles side by side.
    return canvas.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def _chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: length, type, data, CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(hwc: np.ndarray, level: int = 6) -> bytes:
    """Encode an HWC uint8 image (1-4 channels) as PNG: signature, IHDR, one IDAT (filter 0 rows), IEND."""
    h, w, c = hwc.shape
    raw = np.zeros((h, 1 + w * c), dtype=np.uint8)  # each scanline starts with filter type 0 (none)
    raw[:, 1:] = np.ascontiguousarray(hwc, dtype=np.uint8).reshape(h, w * c)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOR_TYPE[c], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
        + _chunk(b"IEND", b"")
    )


def decode_png(data: bytes) -> np.ndarray:
    """Decode a PNG written by encode_png (8-bit, non-interlaced, any filter) back to HWC uint8; for tests."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, color, _, _, interlace = header
    assert depth == 8 and interlace == 0, "only 8-bit non-interlaced PNGs"
    c = {v: k for k, v in _PNG_COLOR_TYPE.items()}[color]
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * c)
    out = np.zeros((h, w * c), dtype=np.int32)
    prev = np.zeros(w * c, dtype=np.int32)
    for y in range(h):  # undo per-row filters (test helper: speed does not matter)
        f, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        cur = line.copy() if f == 0 else np.zeros(w * c, dtype=np.int32)
        for x in range(w * c if f else 0):
            a = cur[x - c] if x >= c else 0
            b = prev[x]
            cc = prev[x - c] if x >= c else 0
            if f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - cc), abs(a - cc), abs(a + b - 2 * cc)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    return out.astype(np.uint8).reshape(h, w, c)
