"""Video: a batch of clips tiled into one animated GIF Summary.Image, as the peers lay it out (Pillow encodes)."""

import io

import numpy as np

from tbwriter import image as _image
from tbwriter._convert import as_array
from tbwriter.proto import summary_pb2


def tile_clips(ntchw: np.ndarray) -> np.ndarray:
    """(N, T, C, H, W) -> (T, rows*H, cols*W, C): N padded to a power of two, rows = 2**(log2(N)//2)."""
    n, t, c, h, w = ntchw.shape
    padded = 1 << (n - 1).bit_length()
    if padded != n:
        ntchw = np.concatenate((ntchw, np.zeros((padded - n, t, c, h, w), dtype=ntchw.dtype)))
    rows = 2 ** ((n.bit_length() - 1) // 2)  # the peers' choice, from N before padding
    cols = padded // rows
    return ntchw.reshape(rows, cols, t, c, h, w).transpose(2, 0, 4, 1, 5, 3).reshape(t, rows * h, cols * w, c)


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """Animated GIF (looping) of (T, H, W, C) uint8 frames, C in 1, 3, 4 (alpha dropped)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("add_video needs Pillow: pip install 'npnn-tbwriter[media]'") from None
    if frames.shape[-1] == 1:
        images = [Image.fromarray(f[:, :, 0], "L") for f in frames]
    else:
        images = [Image.fromarray(np.ascontiguousarray(f[:, :, :3]), "RGB") for f in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return out.getvalue()


def video(tag: str, vid_tensor, fps=4, dataformats: str = "NTCHW") -> summary_pb2.Summary:
    """Summary.Image holding an animated GIF of the (N, T, C, H, W) batch (uint8 as is, floats as [0, 1])."""
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not fps > 0:
        raise ValueError(f"video {tag!r}: fps must be a positive number, got {fps!r}")
    arr = as_array(vid_tensor, "vid_tensor")
    fmt = _image._check_format(dataformats, ("NTCHW", "NTHWC", "TNCHW", "NCTHW"), "dataformats")
    if arr.ndim != 5 or sorted(fmt) != sorted("NTCHW"):
        raise ValueError(f"video {tag!r}: vid_tensor must have 5 dimensions {fmt}, got shape {arr.shape}")
    arr = arr.transpose([fmt.index(c) for c in "NTCHW"])
    if arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"video {tag!r}: C must be 1, 3 or 4, got shape {arr.shape} as NTCHW")
    frames = _image.to_uint8(tile_clips(arr))
    _, h, w, c = frames.shape
    img = summary_pb2.Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=gif_bytes(frames, fps))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=img)])
