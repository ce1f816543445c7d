"""Read event files back: records, events, runs of a logdir, and the values inside them.

A record on disk is (the format TensorBoard's own reader checks):
    uint64 length (little endian) | uint32 masked CRC32C of those 8 bytes
    data (length bytes)           | uint32 masked CRC32C of data
Everything here streams: a file is read record by record, never as a whole.

What can go wrong, and what the reader does about it:
- *Truncated*: the file ends inside a record (fewer than 12 header bytes left, or a header
  whose checksum holds but whose record runs past the end of the file). This is what a writer
  killed mid-write leaves, and the bytes that are there are an honest prefix. The reader stops
  there, reports it through `on_truncated` (default: a `TruncatedRecordWarning`) and skips it.
- *Corrupt*: bytes that contradict their checksum (header or data), or data that passes its
  checksum but is not an Event. Nothing after a bad header can be trusted (its length is
  unknown), so the reader raises `CorruptRecordError(path, offset, reason)` and stops.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import struct
import warnings
from typing import Callable, Iterator, NamedTuple, Union

import crc32c
import numpy as np
from google.protobuf.message import DecodeError

from tbwriter.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tbwriter.wire import mask, masked_crc32c

__all__ = [
    "CorruptRecordError",
    "Record",
    "SkippedFileWarning",
    "TagKinds",
    "Truncation",
    "TruncatedRecordWarning",
    "event_files",
    "read_events",
    "read_logdir",
    "read_records",
    "scalar_value",
    "tensor_to_array",
]

_LENGTH = struct.Struct("<Q")
_FOOTER = struct.Struct("<I")


class CorruptRecordError(ValueError):
    """A record contradicts its checksum or is not an Event; names the file and byte offset."""

    def __init__(self, path: str, offset: int, reason: str):
        super().__init__(f"{path}: corrupt record at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class Truncation(NamedTuple):
    """Where a file ends inside its last record (a writer killed mid-write)."""

    path: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: truncated last record at byte offset {self.offset}: {self.reason}"


class TruncatedRecordWarning(UserWarning):
    """Warned (by default) when a file's last record is truncated and therefore skipped."""


class Record(NamedTuple):
    """One verified record: the file it came from, its byte offset there, and its data."""

    path: str
    offset: int
    data: bytes

    def event(self) -> event_pb2.Event:
        """Parse the data as an Event; CorruptRecordError if it is not one."""
        return _parse_event(self)


OnTruncated = Union[str, Callable[[Truncation], object]]


def _check_on_truncated(on_truncated: OnTruncated) -> None:
    """ValueError unless on_truncated is "warn", "ignore" or a callable."""
    if not (on_truncated in ("warn", "ignore") or callable(on_truncated)):
        raise ValueError(f"on_truncated: expected 'warn', 'ignore' or a callable, got {on_truncated!r}")


def _report_truncation(on_truncated: OnTruncated, truncation: Truncation) -> None:
    """Deliver a truncation to the caller's choice: "warn", "ignore" or a callable."""
    if on_truncated == "warn":
        warnings.warn(TruncatedRecordWarning(str(truncation)), stacklevel=4)
    elif on_truncated != "ignore":
        on_truncated(truncation)


_CHUNK = 1 << 20  # bytes read at a time: memory stays ~1 MB plus the largest record


def _open(path: str, storage_options: "dict | None"):
    """Open a local file or an object URL for reading; return it and a function giving its current size."""
    if "://" in path:
        from tbwriter.remote import open_object

        f = open_object(path, storage_options)
        return f, lambda: f.size  # objects are immutable
    if storage_options is not None:
        raise ValueError(f"storage_options: only for URLs (s3://...), got the local path {path!r}")
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{_file_kind(mode)}, not a regular file", path)
    f = os.fdopen(fd, "rb", buffering=0)
    return f, lambda: os.fstat(f.fileno()).st_size


def read_records(
    path: "str | os.PathLike", on_truncated: OnTruncated = "warn", storage_options: "dict | None" = None
) -> Iterator[Record]:
    """Yield the verified records of one file or object URL; skip a truncated last one, raise on corruption."""
    _check_on_truncated(on_truncated)
    path = os.fspath(path)
    good_headers = set()  # headers already verified: event files repeat a few lengths endlessly
    f, current_size = _open(path, storage_options)
    if "://" in path:  # records, truncations and errors name the URL without its login
        from tbwriter.remote import redact

        path = redact(path)
    with f:
        size = current_size()
        buf = b""
        pos = 0  # buf[pos] is the byte at file offset `offset`
        offset = 0
        while True:
            if len(buf) - pos < 12:
                buf = buf[pos:] + _read_exactly(f, _CHUNK)
                pos = 0
                if len(buf) < 12:
                    if buf:
                        _report_truncation(
                            on_truncated,
                            Truncation(path, offset, f"file ends {len(buf)} bytes into the 12-byte record header"),
                        )
                    return
            header = buf[pos : pos + 12]
            length = _LENGTH.unpack_from(buf, pos)[0]
            if header not in good_headers:
                if masked_crc32c(header[:8]) != _FOOTER.unpack_from(buf, pos + 8)[0]:
                    raise CorruptRecordError(path, offset, "length checksum mismatch")
                if len(good_headers) < 4096:
                    good_headers.add(header)
            total = 12 + length + 4
            if len(buf) - pos < total:
                end = offset + total
                if end > size:
                    size = current_size()  # a live writer may have appended since
                if end > size:
                    # The length is trusted (its checksum holds), so the record is cut off by the
                    # end of the file, not damaged: check before reading, so a huge length costs nothing.
                    _report_truncation(
                        on_truncated,
                        Truncation(
                            path, offset, f"record of {length} data bytes needs {total} bytes, file has {size - offset}"
                        ),
                    )
                    return
                if length > _CHUNK:
                    data = _read_large_record(f, path, offset, length, on_truncated)
                    if data is None:
                        return
                    yield Record(path, offset, data)
                    buf, pos = b"", 0
                    offset += total
                    continue
                buf = buf[pos:] + _read_exactly(f, max(_CHUNK, total - (len(buf) - pos)))
                pos = 0
                if len(buf) < total:  # the file shrank under us
                    _report_truncation(
                        on_truncated, Truncation(path, offset, "file became shorter while it was being read")
                    )
                    return
            data = buf[pos + 12 : pos + 12 + length]
            if masked_crc32c(data) != _FOOTER.unpack_from(buf, pos + 12 + length)[0]:
                raise CorruptRecordError(path, offset, f"data checksum mismatch ({length} data bytes)")
            yield Record(path, offset, data)
            pos += total
            offset += total


def _read_large_record(f, path: str, offset: int, length: int, on_truncated: OnTruncated) -> "bytes | None":
    """The data of the record at offset, CRC-checked in chunks before it is held whole; None if cut short."""
    expected = _stream_crc(f, path, offset, length, on_truncated)
    if expected is None:
        return None
    f.seek(offset + 12)
    data = _read_exactly(f, length)  # one read, one copy: a lone part is returned as it is
    f.seek(offset + 12 + length + 4)
    if len(data) < length or masked_crc32c(data) != expected:
        raise CorruptRecordError(path, offset, f"data changed while it was being read ({length} data bytes)")
    return data


def _stream_crc(f, path: str, offset: int, length: int, on_truncated: OnTruncated) -> "int | None":
    """Check the data CRC of the record at offset a chunk at a time; return it, None if the file is cut short.

    A damaged or made-up length (a sparse file of zeros) so costs one chunk of memory, not the record.
    """
    f.seek(offset + 12)
    crc = 0
    left = length
    while left:
        chunk = f.read(min(left, _CHUNK))
        if not chunk:
            break
        crc = crc32c.crc32c(chunk, crc)
        left -= len(chunk)
    footer = _read_exactly(f, 4)
    if left or len(footer) < 4:
        _report_truncation(on_truncated, Truncation(path, offset, "file became shorter while it was being read"))
        return None
    expected = _FOOTER.unpack(footer)[0]
    if mask(crc) != expected:
        raise CorruptRecordError(path, offset, f"data checksum mismatch ({length} data bytes)")
    return expected


def _read_exactly(f, n: int) -> bytes:
    """Read n bytes, or fewer only at the end of the file (raw reads may return short)."""
    parts = []
    while n > 0:
        part = f.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _parse_event(record: Record) -> event_pb2.Event:
    """Parse a record's data as an Event; a parse failure means corruption."""
    try:
        return event_pb2.Event.FromString(record.data)
    except DecodeError as e:
        # Passing the CRC yet not parsing: written wrong, or not an event file at all.
        raise CorruptRecordError(
            record.path, record.offset, f"checksums hold but the data is not an Event ({e})"
        ) from None


def read_events(
    path: "str | os.PathLike", on_truncated: OnTruncated = "warn", storage_options: "dict | None" = None
) -> Iterator[event_pb2.Event]:
    """Yield the Events of one file or object URL in order (see read_records for truncation and corruption)."""
    for record in read_records(path, on_truncated, storage_options):
        yield _parse_event(record)


def _is_event_file(name: str) -> bool:
    """TensorBoard's rule: any file whose name contains 'tfevents'."""
    return "tfevents" in name


class SkippedFileWarning(UserWarning):
    """Warned when a logdir entry named like an event file is not a regular file (FIFO, device) and is skipped."""


def _file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: 'a FIFO', 'a character device', ..."""
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _regular_files(dirpath: str, names: list[str]) -> list[str]:
    """The paths of names in dirpath that are regular files (symlinks followed); warn about and skip the rest."""
    paths = []
    for name in names:
        path = os.path.join(dirpath, name)
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            warnings.warn(SkippedFileWarning(f"{path}: skipped: {e.strerror or e}"), stacklevel=3)
            continue
        if not stat.S_ISREG(mode):
            warnings.warn(SkippedFileWarning(f"{path}: skipped: {_file_kind(mode)}, not a regular file"), stacklevel=3)
            continue
        paths.append(path)
    return paths


def event_files(logdir: "str | os.PathLike", storage_options: "dict | None" = None) -> dict[str, list[str]]:
    """Map each run (directory of event files, relative to logdir, '.' for logdir itself) to its sorted event files.

    A path to a single file gives {'.': [path]}. Runs are sorted by name; symlinked
    directories are not followed (TensorBoard does not follow them either). Entries that are
    not regular files (FIFOs, devices) are skipped with a SkippedFileWarning; given directly,
    they raise OSError saying what they are. A URL logdir (s3://..., any fsspec URL) gives the
    event objects' URLs.
    """
    logdir = os.fspath(logdir)
    if "://" in logdir:
        from tbwriter.remote import event_files as remote_event_files

        return remote_event_files(logdir, storage_options)
    if storage_options is not None:
        raise ValueError(f"storage_options: only for URLs (s3://...), got the local path {logdir!r}")
    try:
        mode = os.stat(logdir).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"logdir: no such file or directory: {logdir}") from None
    if stat.S_ISREG(mode):
        return {".": [logdir]}
    if not stat.S_ISDIR(mode):
        raise OSError(errno.EINVAL, f"{_file_kind(mode)}, not an event file or a directory", logdir)
    runs: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(logdir):
        dirnames.sort()
        files = _regular_files(dirpath, sorted(n for n in filenames if _is_event_file(n)))
        if files:
            run = os.path.relpath(dirpath, logdir).replace(os.sep, "/")
            runs[run] = files
    return dict(sorted(runs.items()))


def read_logdir(
    logdir: "str | os.PathLike", on_truncated: OnTruncated = "warn", storage_options: "dict | None" = None
) -> Iterator[tuple[str, event_pb2.Event]]:
    """Yield (run, event) for every event of every run under logdir (a path or URL, or one file), file by file.

    A corrupt record raises CorruptRecordError and ends the iteration; to read on past a
    corrupt file, loop over event_files() and read_events() yourself (as `inspect` does).
    """
    for run, paths in event_files(logdir, storage_options).items():
        for path in paths:
            for event in read_events(path, on_truncated, storage_options):
                yield run, event


# --- values -------------------------------------------------------------------------------

_PLUGIN_KINDS = {
    "scalars": "scalar",
    "histograms": "histogram",
    "images": "image",
    "audio": "audio",
    "text": "text",
    "pr_curves": "pr_curve",
    "hparams": "hparams",
    "custom_scalars": "custom_scalars",
    "graph_keras_model": "graph",
    "mesh": "mesh",
}

_ONEOF_KINDS = {
    "simple_value": "scalar",
    "histo": "histogram",
    "obsolete_old_style_histogram": "histogram",
    "image": "image",
    "audio": "audio",
    "tensor": "tensor",
    None: "empty",
}


class TagKinds:
    """Kind of each tag's values ('scalar', 'histogram', 'image', 'text', 'hparams', ...).

    Writers send a tag's plugin metadata only with its first value, so the first metadata
    seen for a tag decides its kind for the rest of the run (as TensorBoard does): feed one
    instance every value of a run, in file order.
    """

    def __init__(self):
        self._by_tag: dict[str, str] = {}

    def decided(self, tag: str) -> "str | None":
        """The kind the tag's first plugin metadata gave, or None if none was seen yet."""
        return self._by_tag.get(tag)

    def kind(self, value: summary_pb2.Summary.Value) -> str:
        """The kind of this value, remembering the tag's first plugin metadata."""
        known = self._by_tag.get(value.tag)
        if known is not None:
            return known
        plugin = value.metadata.plugin_data.plugin_name if value.HasField("metadata") else ""
        if plugin:
            kind = _PLUGIN_KINDS.get(plugin, plugin)
            self._by_tag[value.tag] = kind
            return kind
        # No metadata: the value's own field says what it is (TF1's simple_value, histo, image).
        return _ONEOF_KINDS[value.WhichOneof("value")]


_NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_HALF: (np.float16, "half_val"),
}


# A tensor holding fewer values than its shape needs is filled by repeating the last one (TF's
# rule), but only up to this many bytes: a 70-byte record must not claim gigabytes.
_MAX_FILL_BYTES = 1 << 20


def _shape_and_count(tensor: tensor_pb2.TensorProto) -> tuple[tuple[int, ...], int]:
    """The tensor's shape and element count; ValueError for a negative (unknown) dimension."""
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor: shape {list(shape)} has a negative dimension; expected a fully known shape")
    return shape, math.prod(shape)


def tensor_to_array(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """Decode a TensorProto into a NumPy array (numeric, bool, half, bfloat16 as float32, string as bytes objects).

    The shape is checked against the values present before anything is allocated.
    """
    shape, count = _shape_and_count(tensor)
    if tensor.dtype == types_pb2.DT_STRING:
        flat = np.empty(len(tensor.string_val), dtype=object)
        flat[:] = list(tensor.string_val)
        return _fill(flat, count, object, empty=b"").reshape(shape)
    if tensor.dtype == types_pb2.DT_BFLOAT16:
        if tensor.tensor_content:
            bits = np.frombuffer(tensor.tensor_content, dtype="<u2")
        else:
            bits = np.array(tensor.half_val, dtype=np.uint16)
        floats = (bits.astype(np.uint32) << 16).view(np.float32)
        return _fill(floats, count, np.float32).reshape(shape)
    if tensor.dtype not in _NUMPY_DTYPES:
        name = types_pb2.DataType.Name(tensor.dtype) if tensor.dtype in types_pb2.DataType.values() else tensor.dtype
        raise ValueError(f"tensor: unsupported dtype {name}; expected a numeric, bool or string tensor")
    dtype, field = _NUMPY_DTYPES[tensor.dtype]
    if tensor.tensor_content:
        flat = np.frombuffer(tensor.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
        if flat.size != count:
            raise ValueError(f"tensor: tensor_content holds {flat.size} values, shape {list(shape)} needs {count}")
        return flat.astype(dtype).reshape(shape)
    vals = getattr(tensor, field)
    if field == "half_val":
        flat = np.array(vals, dtype=np.uint16).view(np.float16)
    else:
        flat = np.array(vals, dtype=dtype)
    return _fill(flat, count, dtype).reshape(shape)


def _fill(flat: np.ndarray, count: int, dtype, empty=0) -> np.ndarray:
    """TF's rule for value lists: exact, or the last value repeated, or `empty` (zeros, b"") if none."""
    if flat.size == count:
        return flat
    if flat.size > count:
        raise ValueError(f"tensor: holds {flat.size} values, its shape needs {count}")
    if count * np.dtype(dtype).itemsize > _MAX_FILL_BYTES:
        raise ValueError(
            f"tensor: holds {flat.size} values, its shape needs {count}; filling that by "
            f"repeating the last value would take more than {_MAX_FILL_BYTES} bytes"
        )
    out = np.full(count, empty, dtype=dtype)
    if flat.size:
        out[: flat.size] = flat
        out[flat.size :] = flat[-1]
    return out


def scalar_value(value: summary_pb2.Summary.Value) -> float:
    """The number in a scalar Summary.Value: its simple_value, or its one-element numeric tensor."""
    which = value.WhichOneof("value")
    if which == "simple_value":
        return float(value.simple_value)
    if which == "tensor":
        shape, count = _shape_and_count(value.tensor)
        if count != 1:  # checked before decoding: the shape may claim billions of elements
            raise ValueError(f"value {value.tag!r}: expected a one-element numeric tensor, got shape {list(shape)}")
        array = tensor_to_array(value.tensor)
        if array.size == 1 and array.dtype != object:
            return float(array.reshape(()))
        raise ValueError(
            f"value {value.tag!r}: expected a one-element numeric tensor, got dtype "
            f"{array.dtype} with shape {list(array.shape)}"
        )
    raise ValueError(f"value {value.tag!r}: expected simple_value or a tensor, got {which}")
