"""Embeddings for TensorBoard's projector: tensors.tsv, metadata.tsv, sprite.png and projector_config.pbtxt.

The files go where the peers put them: <run>/<global_step, 5 digits>/<tag, / and % encoded>/, and
each call appends one `embeddings { ... }` entry to <run>/projector_config.pbtxt.
"""

import math
import os
import posixpath

import numpy as np

from tbwriter import image as _image
from tbwriter._convert import as_array

MAX_SPRITE_SIZE = 8192  # the projector front end's limit (tensorboardX#516)


def encode_tag(tag: str) -> str:
    """The tag as one directory name: %, / and \\ percent-encoded as the peers do."""
    return tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


def _write_new(path: str, data: bytes) -> None:
    """Write data to path through a temporary name, so no reader sees a half-written file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def metadata_tsv(metadata, n: int, metadata_header=None) -> bytes:
    """metadata.tsv: one label per line, or a header line and one tab-separated row per point."""
    if isinstance(metadata, (str, bytes)) or not hasattr(metadata, "__len__"):
        raise TypeError(f"metadata: expected a list of {n} labels, got {type(metadata).__name__}")
    if len(metadata) != n:
        raise ValueError(f"metadata: expected one label per row of mat ({n}), got {len(metadata)}")
    if not metadata_header:
        rows = [str(x) for x in metadata]
    else:
        width = len(metadata_header)
        for i, row in enumerate(metadata):
            if isinstance(row, str) or len(row) != width:
                raise ValueError(f"metadata[{i}]: expected {width} columns like metadata_header, got {row!r}")
        rows = ["\t".join(str(x) for x in row) for row in [metadata_header, *metadata]]
    for i, row in enumerate(rows):
        if "\n" in row:
            raise ValueError(f"metadata: row {i} holds a newline, which would split it: {row!r}")
    return ("\n".join(rows) + "\n").encode("utf-8")


def sprite_png(label_img, n: int) -> tuple:
    """(PNG bytes, (width, height) of one image) of N images tiled row-major into a square sprite."""
    imgs = as_array(label_img, "label_img")
    if imgs.ndim != 4 or imgs.shape[1] not in (1, 3, 4):
        raise ValueError(f"label_img: expected shape (N, C, H, W) with C in 1, 3, 4, got {imgs.shape}")
    if imgs.shape[0] != n:
        raise ValueError(f"label_img: expected one image per row of mat ({n}), got {imgs.shape[0]}")
    _, _, h, w = imgs.shape
    if h != w:
        raise ValueError(f"label_img: the projector needs square images, got H={h}, W={w}")
    per_row = math.ceil(math.sqrt(n * h * w) / w)
    grid = _image.grid(imgs, "NCHW", ncols=per_row)
    side = grid.shape[1]
    if side > MAX_SPRITE_SIZE:
        raise ValueError(
            f"label_img: the sprite would be {side} pixels wide, more than the projector's "
            f"{MAX_SPRITE_SIZE}; use fewer or smaller images"
        )
    square = np.zeros((side, side, grid.shape[2]), dtype=np.uint8)
    square[: grid.shape[0]] = _image.to_uint8(grid)
    return _image.encode_png(square), (w, h)


def _config_entry(subdir: str, tensor_name: str, has_metadata: bool, sprite_dim) -> str:
    lines = ["embeddings {", f'tensor_name: "{tensor_name}"', f'tensor_path: "{posixpath.join(subdir, "tensors.tsv")}"']
    if has_metadata:
        lines.append(f'metadata_path: "{posixpath.join(subdir, "metadata.tsv")}"')
    if sprite_dim is not None:
        lines += [
            "sprite {",
            f'image_path: "{posixpath.join(subdir, "sprite.png")}"',
            f"single_image_dim: {sprite_dim[0]}",
            f"single_image_dim: {sprite_dim[1]}",
            "}",
        ]
    return "\n".join(lines + ["}"]) + "\n"


def write_embedding(
    run_dir: str, mat, metadata=None, label_img=None, global_step: int = 0, tag: str = "default", metadata_header=None
) -> str:
    """Write one embedding's files under run_dir and append its config entry; return its sub-directory."""
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag: expected a non-empty str, got {tag!r}")
    m = as_array(mat, "mat")
    if m.ndim != 2:
        raise ValueError(f"mat: expected a 2-D (points, features) matrix, got shape {m.shape}")
    n = m.shape[0]
    tsv_meta = None if metadata is None else metadata_tsv(metadata, n, metadata_header)
    sprite = None if label_img is None else sprite_png(label_img, n)
    step = f"{global_step:05d}"
    name = encode_tag(tag)
    # A second call with the same step and tag gets its own directory rather than overwriting the first.
    for k in range(1 << 20):
        subdir = posixpath.join(step, name if k == 0 else f"{name}_{k}")
        try:
            os.makedirs(os.path.join(run_dir, subdir))
            break
        except FileExistsError:
            continue
    save = os.path.join(run_dir, subdir)
    rows = np.asarray(m, dtype=np.float32)
    _write_new(
        os.path.join(save, "tensors.tsv"), ("\n".join("\t".join(map(repr, r)) for r in rows.tolist()) + "\n").encode()
    )
    if tsv_meta is not None:
        _write_new(os.path.join(save, "metadata.tsv"), tsv_meta)
    if sprite is not None:
        _write_new(os.path.join(save, "sprite.png"), sprite[0])
    tensor_name = f"{tag}:{step}" if k == 0 else f"{tag}_{k}:{step}"
    entry = _config_entry(subdir, tensor_name, tsv_meta is not None, None if sprite is None else sprite[1])
    fd = os.open(os.path.join(run_dir, "projector_config.pbtxt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, entry.encode("utf-8"))  # one append: concurrent writers' entries never interleave
    finally:
        os.close(fd)
    return subdir
