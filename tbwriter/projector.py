"""Embeddings for TensorBoard's projector: tensors.tsv, metadata.tsv, sprite.png and projector_config.pbtxt.

The files go where the peers put them: <run>/<global_step, 5 digits>/<tag, / and % encoded>/, and
each call appends one `embeddings { ... }` entry to <run>/projector_config.pbtxt.
"""

import contextlib
import errno
import math
import os
import posixpath
import stat

import numpy as np
from google.protobuf import text_encoding

from tbwriter import image as _image
from tbwriter._convert import as_array
from tbwriter.reader import _file_kind

MAX_SPRITE_SIZE = 8192  # the projector front end's limit (tensorboardX#516)


def encode_tag(tag: str) -> str:
    """The tag as one directory name: %, / and \\ percent-encoded as the peers do."""
    return tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


# What JavaScript's trim() removes: the projector skips a metadata line made only of these.
_JS_WHITESPACE = (
    "\t\n\v\f\r \xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _cell(value, where: str) -> str:
    """One metadata value as text; a tab or a line break (the projector's separators) is refused, naming where."""
    text = str(value)
    for char, name in (("\t", "a tab"), ("\n", "a newline"), ("\r", "a carriage return")):
        if char in text:
            raise ValueError(f"{where} holds {name}, which the projector reads as a separator: {text!r}")
    return text


def _line(cells: list, where: str) -> str:
    """Cells joined by tabs; a blank line (which the projector skips, shifting every later label) is refused."""
    line = "\t".join(cells)
    if not line.strip(_JS_WHITESPACE):
        raise ValueError(
            f"{where} is blank: the projector skips blank lines, so later labels would shift; got {cells!r}"
        )
    return line


def metadata_tsv(metadata, n: int, metadata_header=None) -> bytes:
    """metadata.tsv: one label per line, or a header line and one tab-separated row per point.

    Written so that TensorBoard's projector reads exactly n rows, each label on its point: it splits
    lines on newlines (the server also on carriage returns), skips blank ones and takes the first
    line as a header only if it holds a tab. What it cannot read back is refused, naming the label.
    """
    if isinstance(metadata, (str, bytes)) or not hasattr(metadata, "__len__"):
        raise TypeError(f"metadata: expected a list of {n} labels, got {type(metadata).__name__}")
    if len(metadata) != n:
        raise ValueError(f"metadata: expected one label per row of mat ({n}), got {len(metadata)}")
    if not metadata_header:
        lines = [_line([_cell(x, f"metadata[{i}]")], f"metadata[{i}]") for i, x in enumerate(metadata)]
    else:
        width = len(metadata_header)
        if width < 2:
            raise ValueError(
                f"metadata_header: the projector reads a header only with two or more columns, got "
                f"{list(metadata_header)!r}; pass one label per point without metadata_header"
            )
        names = [_cell(x, f"metadata_header[{j}]") for j, x in enumerate(metadata_header)]
        if len(set(names)) < width:
            raise ValueError(f"metadata_header: column names repeat, the projector keeps only one of each: {names!r}")
        lines = [_line(names, "metadata_header")]
        for i, row in enumerate(metadata):
            if isinstance(row, str) or not hasattr(row, "__len__") or len(row) != width:
                raise ValueError(f"metadata[{i}]: expected {width} columns like metadata_header, got {row!r}")
            lines.append(_line([_cell(x, f"metadata[{i}][{j}]") for j, x in enumerate(row)], f"metadata[{i}]"))
    try:
        return ("\n".join(lines) + "\n").encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"metadata: a label is not valid Unicode ({e.reason}): {e.object[e.start : e.end]!r}"
        ) from None


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


def _quoted(text: str) -> str:
    """A text-format string literal, escaped as protobuf's text_format escapes it (quotes, backslashes, newlines)."""
    return '"' + text_encoding.CEscape(text, as_utf8=True) + '"'


def _config_entry(subdir: str, tensor_name: str, has_metadata: bool, sprite_dim) -> str:
    lines = ["embeddings {", f"tensor_name: {_quoted(tensor_name)}"]
    lines.append(f"tensor_path: {_quoted(posixpath.join(subdir, 'tensors.tsv'))}")
    if has_metadata:
        lines.append(f"metadata_path: {_quoted(posixpath.join(subdir, 'metadata.tsv'))}")
    if sprite_dim is not None:
        lines += [
            "sprite {",
            f"image_path: {_quoted(posixpath.join(subdir, 'sprite.png'))}",
            f"single_image_dim: {sprite_dim[0]}",
            f"single_image_dim: {sprite_dim[1]}",
            "}",
        ]
    return "\n".join(lines + ["}"]) + "\n"


def _kind(dir_fd: int, name: str) -> str:
    """What name in dir_fd is, for messages ("a symlink", "a FIFO", ...), without following it."""
    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    return "a symlink" if stat.S_ISLNK(mode) else _file_kind(mode)


def _open_dir(parent_fd: int, name: str, shown: str) -> int:
    """Open the directory name in parent_fd without following a symlink; an error names shown and what it is."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except NotADirectoryError:
        raise NotADirectoryError(
            errno.ENOTDIR, f"{_kind(parent_fd, name)}, not a directory; not followed", shown
        ) from None


def _write_new(dir_fd: int, name: str, data: bytes) -> None:
    """Create name in dir_fd (O_EXCL | O_NOFOLLOW: never an existing file or link) and write data."""
    with os.fdopen(os.open(name, _NEW, 0o666, dir_fd=dir_fd), "wb") as f:
        f.write(data)


def _open_config(run_fd: int, shown: str) -> int:
    """projector_config.pbtxt opened to append: a regular file of this run only (no link followed, no FIFO waited)."""
    try:
        fd = os.open(CONFIG, _APPEND, 0o666, dir_fd=run_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):  # a symlink (O_NOFOLLOW), a FIFO without a reader (O_NONBLOCK)
            raise OSError(e.errno, f"{_kind(run_fd, CONFIG)}, not a regular file; not opened", shown) from None
        raise OSError(e.errno, e.strerror, shown) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:  # a device, or a hard link to a file elsewhere
        os.close(fd)
        what = f"a file with {st.st_nlink} hard links" if stat.S_ISREG(st.st_mode) else _file_kind(st.st_mode)
        raise OSError(errno.EINVAL, f"{what}; only a regular file of this run is appended to", shown)
    return fd


CONFIG = "projector_config.pbtxt"
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _write_files(run_fd: int, run_dir: str, step: str, name: str, files: dict) -> tuple:
    """Create <step>/<name>[_k]/ in the run (no link followed) holding files; return (its path, k)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(step, dir_fd=run_fd)
    step_fd = _open_dir(run_fd, step, os.path.join(run_dir, step))
    try:
        # A second call with the same step and tag gets its own directory rather than overwriting the first.
        for k in range(1 << 20):
            folder = name if k == 0 else f"{name}_{k}"
            try:
                os.mkdir(folder, dir_fd=step_fd)  # mkdir never follows a link: a planted one only takes the name
                break
            except FileExistsError:
                continue
        subdir = posixpath.join(step, folder)
        save_fd = _open_dir(step_fd, folder, os.path.join(run_dir, subdir))
        try:
            for file, data in files.items():
                _write_new(save_fd, file, data)
        finally:
            os.close(save_fd)
    finally:
        os.close(step_fd)
    return subdir, k


def check_embedding(m: np.ndarray, metadata, tag: str, metadata_header=None) -> "bytes | None":
    """Refuse a bad tag, matrix or labels in one line; return metadata.tsv's bytes (None without labels)."""
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag: expected a non-empty str, got {tag!r}")
    if "\0" in tag:
        raise ValueError(f"tag: holds a NUL character, which no file name can: {tag!r}")
    try:
        tag.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"tag: not valid Unicode ({e.reason}): {tag!r}") from None
    if m.ndim != 2:
        raise ValueError(f"mat: expected a 2-D (points, features) matrix, got shape {m.shape}")
    return None if metadata is None else metadata_tsv(metadata, m.shape[0], metadata_header)


def write_embedding(
    run_dir: str, mat, metadata=None, label_img=None, global_step: int = 0, tag: str = "default", metadata_header=None
) -> str:
    """Write one embedding's files under run_dir and append its config entry; return its sub-directory.

    Inside run_dir nothing is followed: a symlink planted at the step folder, the tag folder or
    projector_config.pbtxt is refused, naming it; the files are created new (O_EXCL) in a folder
    this call made, and the config entry, appended last, is what makes the projector read them.
    """
    m = as_array(mat, "mat")
    tsv_meta = check_embedding(m, metadata, tag, metadata_header)
    n = m.shape[0]
    sprite = None if label_img is None else sprite_png(label_img, n)
    rows = np.asarray(m, dtype=np.float32)
    files = {"tensors.tsv": ("\n".join("\t".join(map(repr, r)) for r in rows.tolist()) + "\n").encode()}
    if tsv_meta is not None:
        files["metadata.tsv"] = tsv_meta
    if sprite is not None:
        files["sprite.png"] = sprite[0]
    step = f"{global_step:05d}"
    run_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the log dir is the user's own choice
    try:
        config_fd = _open_config(run_fd, os.path.join(run_dir, CONFIG))  # first: a refused config leaves no folder
        try:
            subdir, k = _write_files(run_fd, run_dir, step, encode_tag(tag), files)
            tensor_name = f"{tag}:{step}" if k == 0 else f"{tag}_{k}:{step}"
            entry = _config_entry(subdir, tensor_name, tsv_meta is not None, None if sprite is None else sprite[1])
            os.write(config_fd, entry.encode("utf-8"))  # one append: concurrent writers' entries never interleave
        finally:
            os.close(config_fd)
    finally:
        os.close(run_fd)
    return subdir
