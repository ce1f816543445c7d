"""Columnar scalar reading: every scalar of a logdir as NumPy arrays per run and tag, fast.

A file is read in chunks of ~4 MB and each chunk is handled by NumPy as a whole, never by a
Python loop per record:
1. Framing: a record starts where 8 length bytes are followed by their masked CRC32C. The
   positions where that holds are found for the whole chunk at once (every position whose
   high length bytes are zero, their CRCs computed side by side), and the chain
   start -> start + 16 + length is checked to run through them.
2. Data checksums: records of equal length are checked together by a table-driven CRC32C that
   takes 4 bytes of every record per step (two 65,536-entry tables).
3. Parsing: the Event / Summary / Value wire format is walked for all records at once
   (wall_time, step, then each value's tag and kind); float32 simple_values are gathered by
   position, other values (histograms, images, ...) are skipped by their length unparsed.
Anything else (a value with plugin metadata, a tensor, fields out of the usual order) is
parsed with protobuf, value by value, exactly as `python -m tbwriter inspect` does.

What counts as a scalar is what `reader.TagKinds` says (the first plugin metadata of a tag in
a run decides); checksums, truncation and corruption are handled as in `reader.read_records`.
"""

from __future__ import annotations

import functools
import os
import struct
from typing import Callable, Iterable, NamedTuple, Optional

import numpy as np

from tbwriter.proto import event_pb2, summary_pb2, types_pb2
from tbwriter.reader import (
    CorruptRecordError,
    OnTruncated,
    Record,
    TagKinds,
    Truncation,
    _check_on_truncated,
    _open,
    _parse_event,
    _read_exactly,
    _report_truncation,
    _stream_crc,
    event_files,
    scalar_value,
)
from tbwriter.wire import mask, masked_crc32c

__all__ = ["ScalarSeries", "Scalars", "read_scalars"]

_CHUNK = 4 << 20  # bytes per chunk: the working set stays a few times this, whatever the file size
_PAD = 16  # zero bytes after a chunk, so that fixed-width reads near its end stay in bounds
_SCAN = 1 << 18  # positions whose header CRC is computed at once: ~40 bytes of temporaries each


class ScalarSeries(NamedTuple):
    """One tag's scalars in file order: steps (int64), wall times (float64), values (float32 or float64)."""

    steps: np.ndarray
    wall_times: np.ndarray
    values: np.ndarray


class Scalars(dict):
    """{run: {tag: ScalarSeries}}, runs and tags sorted by name ('.' is the logdir itself)."""

    def to_dataframe(self):
        """One pandas DataFrame with tbparse's columns: step, tag, value, wall_time, dir_name."""
        import pandas as pd

        parts = []
        for run, tags in self.items():
            for tag, s in tags.items():
                n = s.steps.size
                parts.append(
                    pd.DataFrame(
                        {
                            "step": s.steps,
                            "tag": np.full(n, tag, dtype=object),
                            "value": s.values.astype(np.float64),
                            "wall_time": s.wall_times,
                            "dir_name": np.full(n, "" if run == "." else run, dtype=object),
                        }
                    )
                )
        if not parts:
            return pd.DataFrame(
                {
                    "step": np.empty(0, np.int64),
                    "tag": np.empty(0, object),
                    "value": np.empty(0),
                    "wall_time": np.empty(0),
                    "dir_name": np.empty(0, object),
                }
            )
        return pd.concat(parts, ignore_index=True)


def read_scalars(
    logdir: "str | os.PathLike",
    tags: Optional[Iterable[str]] = None,
    on_truncated: OnTruncated = "warn",
    storage_options: "dict | None" = None,
    as_written: bool = False,
    chunk_size: Optional[int] = None,
) -> Scalars:
    """Every scalar under logdir (a path, URL or event file) as NumPy arrays per run and tag; `tags` keeps only those.

    By default the steps TensorBoard's EventAccumulator shows: what a restart orphaned (steps >= N
    before a SessionLog START at step N, or before a step that goes backwards in files without
    file_version 2) is dropped; as_written=True returns every record as written.
    A corrupt record raises CorruptRecordError (file and byte offset); a truncated last record is
    reported through on_truncated ("warn", "ignore" or a callable) and skipped. chunk_size: bytes
    handled at once (default 4 MiB; tests use tiny ones to reach chunk boundaries).
    """
    if tags is not None:
        if isinstance(tags, str):
            raise TypeError(f"tags: expected an iterable of tag names, got the string {tags!r}")
        tags = set(tags)
    out = Scalars()
    for run, paths in event_files(logdir, storage_options).items():
        columns = RunColumns(run, tags, as_written=as_written)
        for path in paths:
            columns.read_file(path, on_truncated, storage_options, chunk_size)
        out[run] = columns.series()
    return out


def _raise(run: str, step: int, error: ValueError) -> None:
    raise error


def _file_version(text: str) -> float:
    """TensorBoard's event_util.ParseFileVersion: the number after 'brain.Event:', -1 if it is none."""
    try:
        return float(text.split("brain.Event:")[-1])
    except ValueError:
        return -1.0


class RunColumns:
    """Scalars of one run, gathered file by file into per-tag column chunks.

    Unless as_written, restarts are purged as TensorBoard's EventAccumulator does
    (_MaybePurgeOrphanedData, purge_orphaned_data=True): once a file_version >= 2 was seen, a
    SessionLog START at step N drops every earlier simple_value with step >= N; before that (files
    of writers that send no file_version), an event with a summary whose step is below that of
    the last event that dropped nothing drops its own tags' earlier simple_values with step >= its
    step. Tensor scalars are never dropped (EventAccumulator does not purge its tensors).
    """

    def __init__(
        self,
        run: str,
        tags: Optional[set] = None,
        on_bad_value: Callable[[str, int, ValueError], object] = _raise,
        as_written: bool = False,
    ):
        self.run = run
        self.tags = tags
        self.kinds = TagKinds()
        self.on_bad_value = on_bad_value
        self.as_written = as_written
        self.parts: dict[str, list] = {}
        self.file_version: Optional[float] = None  # EventAccumulator's state, carried across the run's files
        self.most_recent_step = -1

    def read_file(
        self,
        path: "str | os.PathLike",
        on_truncated: OnTruncated = "warn",
        storage_options: "dict | None" = None,
        chunk_size: Optional[int] = None,
    ) -> None:
        """Add the scalars of one event file or object URL; records before a corrupt one are kept, then it raises."""
        for chunk in _chunks(os.fspath(path), on_truncated, storage_options, chunk_size):
            self._add_chunk(chunk)

    def series(self) -> dict[str, ScalarSeries]:
        """The run's {tag: ScalarSeries}, tags sorted."""
        result = {}
        for tag in sorted(self.parts):
            steps, walls, values, _ = zip(*self.parts[tag])
            dtype = np.float32 if all(v.dtype == np.float32 for v in values) else np.float64
            result[tag] = ScalarSeries(
                np.concatenate(steps),
                np.concatenate(walls),
                np.concatenate([v.astype(dtype, copy=False) for v in values]),
            )
        return result

    def _keep(self, tag: str) -> bool:
        return self.tags is None or tag in self.tags

    def _add_chunk(self, chunk: "_Chunk") -> None:
        fast, slow = _walk(chunk)
        found = []  # (order key, tag, step, wall, value array of one, is a tensor) from protobuf-parsed values
        events: dict[int, event_pb2.Event] = {}  # records parsed whole
        for rec, j, value_bytes in slow:
            self._parse_slow(chunk, rec, j, value_bytes, found, events)
        per_tag: dict[str, list] = {}
        for tag, order, steps, walls, values in fast:
            if self.kinds.decided(tag) in (None, "scalar") and self._keep(tag):
                per_tag[tag] = [(order, steps, walls, values, None)]  # None: no tensors
        for key, tag, step, wall, value, tensor in found:
            per_tag.setdefault(tag, []).append(
                (np.array([key]), np.array([step], np.int64), np.array([wall]), value, np.array([tensor]))
            )
        columns = {}  # tag: (order keys, steps, walls, values, tensor flags or None) in file order
        for tag, pieces in per_tag.items():
            if len(pieces) == 1:
                columns[tag] = pieces[0]
            else:  # fast and protobuf-parsed values of one tag: back into file order
                keys = np.concatenate([p[0] for p in pieces])
                dtype = np.float32 if all(p[3].dtype == np.float32 for p in pieces) else np.float64
                o = np.argsort(keys, kind="stable")
                columns[tag] = (
                    keys[o],
                    np.concatenate([p[1] for p in pieces])[o],
                    np.concatenate([p[2] for p in pieces])[o],
                    np.concatenate([p[3].astype(dtype) for p in pieces])[o],
                    np.concatenate([np.zeros(p[0].size, bool) if p[4] is None else p[4] for p in pieces])[o],
                )
        done = dict.fromkeys(columns, 0)  # rows of each tag already added
        barriers = [] if self.as_written else self._purges(chunk, events)
        for rec, purge_tags, step in barriers + [(chunk.starts.size, set(), 0)]:
            for tag, (keys, steps, walls, values, tensor) in columns.items():
                upto = int(np.searchsorted(keys, rec << 20))  # the rows of records before this one
                if upto > done[tag]:
                    rows = slice(done[tag], upto)
                    flags = None if tensor is None else tensor[rows]
                    self.parts.setdefault(tag, []).append((steps[rows], walls[rows], values[rows], flags))
                    done[tag] = upto
            self._purge(purge_tags, step)

    def _purges(self, chunk: "_Chunk", events: dict) -> list:
        """[(record, tags or None for all, step)]: where EventAccumulator drops earlier scalars with step >= step."""
        steps, summary = chunk.steps.copy(), chunk.summary.copy()
        for r, event in events.items():
            steps[r], summary[r] = event.step, event.HasField("summary")
        versions = sorted(r for r, event in events.items() if event.HasField("file_version"))
        bounds = [0] + versions + [steps.size]
        out = []
        for a, b in zip(bounds[:-1], bounds[1:]):  # stretches of one file_version
            if a == b:
                continue
            if a in versions:
                self.file_version = _file_version(events[a].file_version)
            if self.file_version and self.file_version >= 2:  # restarts are SessionLog STARTs
                starts = [r for r in events if a <= r < b and _is_start(events[r])]
                out += [(r, None, int(steps[r])) for r in sorted(starts)]
                continue
            # no file_version: a summary whose step goes backwards (vectorized: the common case has none)
            s = steps[a:b]
            prev = np.concatenate(([self.most_recent_step], s[:-1]))
            back = np.flatnonzero(summary[a:b] & (s < prev))
            if not back.size:
                self.most_recent_step = int(s[-1])
                continue
            last = int(prev[back[0]])
            for r in range(a + int(back[0]), b):
                step = int(steps[r])
                if summary[r] and step < last:  # the last step stays: later events are compared with it too
                    out.append((r, self._event_tags(chunk, r, events), step))
                else:
                    last = step
            self.most_recent_step = last
        return out

    def _event_tags(self, chunk: "_Chunk", rec: int, events: dict) -> Optional[set]:
        """The tags of a record's values; None for every tag (EventAccumulator filters all tags for an empty one)."""
        event = events[rec] if rec in events else _parse_event(_record(chunk, rec))
        tags = {value.tag for value in event.summary.value}
        return None if "" in tags else tags

    def _purge(self, tags: Optional[set], step: int) -> None:
        """Drop the simple_values of these tags (None: all) whose step is >= step, as EventAccumulator._Purge does.

        Tensor scalars stay: EventAccumulator keeps them in its tensors reservoir, which it never purges.
        """
        for tag in self.parts if tags is None else tags & self.parts.keys():
            parts = self.parts[tag]
            tensor = np.concatenate([np.zeros(p[0].size, bool) if p[3] is None else p[3] for p in parts])
            steps, walls, values = (np.concatenate(c) for c in list(zip(*parts))[:3])
            keep = (steps < step) | tensor
            self.parts[tag] = [(steps[keep], walls[keep], values[keep], tensor[keep])]

    def _parse_slow(self, chunk: "_Chunk", rec: int, j: int, value_bytes, found: list, events: dict) -> None:
        """Values the vectorized walk does not handle: protobuf, as reader-based tools do."""
        if value_bytes is None:  # the whole record
            event = _parse_event(_record(chunk, rec))
            events[rec] = event
            if event.WhichOneof("what") != "summary":
                return
            values = list(enumerate(event.summary.value))
            step, wall = event.step, event.wall_time
        else:
            try:
                value = summary_pb2.Summary.Value.FromString(value_bytes)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError: re-parse the record to report it
                self._parse_slow(chunk, rec, j, None, found, events)
                return
            values = [(j, value)]
            step, wall = int(chunk.steps[rec]), float(chunk.walls[rec])
        for k, value in values:
            if self.kinds.kind(value) != "scalar" or not self._keep(value.tag):
                continue
            try:
                number = scalar_value(value)
            except ValueError as e:
                offset = chunk.base + int(chunk.starts[rec])
                self.on_bad_value(self.run, step, ValueError(f"{chunk.path}: record at byte offset {offset}: {e}"))
                continue
            f32 = value.WhichOneof("value") == "simple_value" or value.tensor.dtype == types_pb2.DT_FLOAT
            number = np.array([number], np.float32 if f32 else np.float64)
            found.append(((rec << 20) + k, value.tag, step, wall, number, value.WhichOneof("value") == "tensor"))


def _is_start(event: event_pb2.Event) -> bool:
    """A SessionLog START event (EventAccumulator._CheckForRestartAndMaybePurge)."""
    return event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START


def _record(chunk: "_Chunk", rec: int) -> Record:
    """The chunk's record number rec, with its file and byte offset."""
    start = int(chunk.starts[rec])
    return Record(chunk.path, chunk.base + start, bytes(chunk.buf[start + 12 : start + 12 + int(chunk.lengths[rec])]))


# --- CRC32C, vectorized over many equal-length byte strings -----------------------------------


@functools.lru_cache(maxsize=None)
def _tables():
    """CRC32C tables, built on first use: byte, 16-bit, and 16-bit advanced by 16 zero bits (slicing by 2x16)."""
    t8 = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t8 = np.where(t8 & 1, (t8 >> 1) ^ np.uint32(0x82F63B78), t8 >> 1).astype(np.uint32)
    t16 = np.arange(65536, dtype=np.uint32)
    for _ in range(2):
        t16 = (t16 >> 8) ^ t8[t16 & 0xFF]
    return t8, t16, (t16 >> 16) ^ t16[t16 & 0xFFFF]


def _masked_crcs(u8: np.ndarray, u32: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Masked CRC32C of u8[s:s + length] for every s in starts (u32: the unaligned 4-byte view of u8)."""
    t8, t16, t16_hi = _tables()
    crc = np.full(starts.size, 0xFFFFFFFF, dtype=np.uint32)
    pos = starts.copy()
    for _ in range(length // 4):
        x = crc ^ u32[pos]
        crc = t16_hi[x & 0xFFFF] ^ t16[x >> 16]
        pos += 4
    for _ in range(length % 4):
        crc = (crc >> 8) ^ t8[(crc ^ u8[pos]) & 0xFF]
        pos += 1
    crc ^= np.uint32(0xFFFFFFFF)
    return mask(crc)  # uint32 arithmetic wraps as the formula's & 0xFFFFFFFF does


# --- chunks of verified records -----------------------------------------------------------------


class _Chunk:
    """Verified records of one chunk: buf (padded bytes), their starts in buf, data lengths; views."""

    __slots__ = (
        "path",
        "base",
        "buf",
        "u8",
        "u32",
        "u64",
        "f32",
        "f64",
        "starts",
        "lengths",
        "steps",
        "walls",
        "summary",
    )

    def __init__(self, path: str, base: int, buf: bytes, starts: np.ndarray, lengths: np.ndarray):
        self.path = path
        self.base = base
        self.buf = buf
        self.u8 = np.frombuffer(buf, np.uint8)
        n = len(buf) - 8
        self.u32 = np.ndarray((n,), "<u4", buf, 0, (1,))  # the 4 bytes at every position
        self.f32 = np.ndarray((n,), "<f4", buf, 0, (1,))
        self.f64 = np.ndarray((n,), "<f8", buf, 0, (1,))
        self.u64 = np.ndarray((n,), "<u8", buf, 0, (1,))
        self.starts = starts
        self.lengths = lengths
        self.steps = None  # per record, set by _walk (protobuf's values replace them for records parsed whole)
        self.walls = None
        self.summary = None  # per record: has a summary field


def _chunks(path: str, on_truncated: OnTruncated, storage_options: "dict | None", chunk_size: Optional[int] = None):
    """Yield _Chunks of verified records of one file; report truncation, raise on corruption."""
    _check_on_truncated(on_truncated)
    chunk_size = chunk_size or _CHUNK
    f, current_size = _open(path, storage_options)
    with f:
        carry, base, need = b"", 0, 12  # need: bytes the record at `base` needs at least
        while True:
            if need > chunk_size:  # one large record (its length checksum holds): alone, held once
                chunk = _large_record_chunk(f, path, base, need - 16, current_size(), on_truncated)
                if chunk is None:
                    return
                yield chunk
                carry, base, need = b"", base + need, 12
                continue
            want = max(min(chunk_size, current_size() - base - len(carry)), need - len(carry), 1)
            data = _read_exactly(f, want)
            at_end = len(data) < want  # fewer bytes only at the end of the file
            buf = carry + data
            if not buf:
                return
            size = current_size()  # a live writer may have appended since the last read
            starts, lengths, stop, problem = _frame(buf, at_end, size, size - base)
            if starts.size:
                padded = buf + bytes(_PAD)
                bad = _check_data(padded, starts, lengths)
                keep = starts < bad if bad is not None else slice(None)
                if bad is None or starts[keep].size:
                    yield _Chunk(path, base, padded, starts[keep], lengths[keep])
                if bad is not None:
                    raise CorruptRecordError(
                        path, base + bad, f"data checksum mismatch ({int(lengths[starts == bad][0])} data bytes)"
                    )
            if problem is None:
                if at_end:
                    return
                carry, need = b"", 12
            else:
                kind, detail = problem
                if kind == "corrupt":
                    raise CorruptRecordError(path, base + stop, detail)
                if kind == "truncated":
                    _report_truncation(on_truncated, Truncation(path, base + stop, detail))
                    return
                carry, need = buf[stop:], detail  # "more": the record at stop needs `detail` bytes
            base += stop


def _large_record_chunk(f, path: str, base: int, length: int, size: int, on_truncated: OnTruncated):
    """The _Chunk of the one record at base, CRC-checked while streaming, then read whole; None if cut short."""
    if base + 16 + length > size:
        _report_truncation(
            on_truncated,
            Truncation(path, base, f"record of {length} data bytes needs {16 + length} bytes, file has {size - base}"),
        )
        return None
    if _stream_crc(f, path, base, length, on_truncated) is None:
        return None
    buf = bytearray(16 + length + _PAD)
    f.seek(base)
    view = memoryview(buf)[: 16 + length]
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    f.seek(base + 16 + length)
    if got < len(view) or masked_crc32c(view[12 : 12 + length]) != _U32.unpack_from(buf, 12 + length)[0]:
        raise CorruptRecordError(path, base, f"data changed while it was being read ({length} data bytes)")
    return _Chunk(path, base, buf, np.zeros(1, np.int64), np.array([length], np.int64))


_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<QI")
_EMPTY = np.empty(0, dtype=np.int64)


def _frame(buf: bytes, at_end: bool, limit: int, in_file: int):
    """(starts, lengths, stop, problem) of the whole records in buf, which end at `stop`.

    limit: no record is longer (the file's size); longer lengths are not looked at.
    in_file: bytes of the file from buf's start on (buf may hold fewer).
    problem: None (buf ends at stop), ("more", bytes needed) when the record at stop continues
    past buf, ("truncated", message) or ("corrupt", message)."""
    n = len(buf)
    if n < 12:
        return _EMPTY, _EMPTY, 0, _tail(buf, 0, at_end, in_file)
    padded = buf + bytes(_PAD)
    u32 = np.ndarray((len(padded) - 3,), "<u4", padded, 0, (1,))
    hi = np.ndarray((n - 11,), "<u4", padded, 4, (1,))
    stored = np.ndarray((n - 11,), "<u4", padded, 8, (1,))
    u8 = np.frombuffer(padded, np.uint8)
    found = []
    for lo in range(0, n - 11, _SCAN):  # in blocks: in zeros every position is a candidate
        cand = np.flatnonzero(hi[lo : lo + _SCAN] == 0) + lo  # records under 4 GiB: high length bytes zero
        cand = cand[u32[cand] <= limit]  # most zero runs inside data give impossible lengths
        found.append(cand[_masked_crcs(u8, u32, cand, 8) == stored[cand]])
    starts = np.concatenate(found)
    lengths = u32[starts].astype(np.int64)
    ends = starts + 16 + lengths
    # The chain from 0: normally every verified header is on it; a header-like pattern inside
    # some record's data is not, and then the chain is followed explicitly.
    if not (starts.size and starts[0] == 0 and np.array_equal(ends[:-1], starts[1:])):
        index = {s: i for i, s in enumerate(starts.tolist())}
        chain, pos = [], 0
        while pos in index:
            chain.append(index[pos])
            pos = int(ends[index[pos]])
        chain = np.array(chain, dtype=np.int64)
        starts, lengths, ends = starts[chain], lengths[chain], ends[chain]
    whole = int(np.searchsorted(ends, n, side="right"))  # ends increase along the chain
    starts, lengths = starts[:whole], lengths[:whole]
    stop = int(ends[whole - 1]) if whole else 0
    return starts, lengths, stop, _tail(buf, stop, at_end, in_file)


def _tail(buf: bytes, stop: int, at_end: bool, in_file: int):
    """What the bytes from stop on are: nothing (None), an incomplete record, or a corrupt header."""
    rest = len(buf) - stop
    if rest == 0:
        return None
    if rest < 12:
        if at_end:
            return "truncated", f"file ends {rest} bytes into the 12-byte record header"
        return "more", 12
    length, stored = _HEADER.unpack_from(buf, stop)
    if masked_crc32c(buf[stop : stop + 8]) != stored:
        return "corrupt", "length checksum mismatch"
    total = 12 + length + 4
    left = max(in_file - stop, rest)
    if at_end or total > left:  # checked before reading: a huge trusted length costs nothing
        return "truncated", f"record of {length} data bytes needs {total} bytes, file has {left}"
    return "more", total


def _check_data(buf: bytes, starts: np.ndarray, lengths: np.ndarray) -> Optional[int]:
    """Start of the first record whose data fails its checksum, or None."""
    u8 = np.frombuffer(buf, np.uint8)
    u32 = np.ndarray((len(buf) - 8,), "<u4", buf, 0, (1,))
    stored = u32[starts + 12 + lengths]
    bad_starts = []
    by_length = np.argsort(lengths, kind="stable")
    bounds = np.flatnonzero(np.diff(lengths[by_length])) + 1
    for members in np.split(by_length, bounds):
        length = int(lengths[members[0]])
        if members.size >= 2 * length:  # enough records for a vectorized step to beat a call per record
            good = _masked_crcs(u8, u32, starts[members] + 12, length) == stored[members]
            if not good.all():
                bad_starts.append(int(starts[members[np.argmin(good)]]))
        else:
            for i in members.tolist():
                s = int(starts[i]) + 12
                if masked_crc32c(buf[s : s + length]) != int(stored[i]):
                    bad_starts.append(int(starts[i]))
                    break
    return min(bad_starts) if bad_starts else None


# --- the vectorized Event / Summary / Value walk ---------------------------------------------------


def _varints(u8: np.ndarray, pos: np.ndarray):
    """(values as uint64, byte lengths, ok) of the varints at pos (ok False: longer than 10 bytes)."""
    byte = u8[pos]
    value = (byte & 0x7F).astype(np.uint64)
    size = np.ones(pos.size, dtype=np.int64)
    more = np.flatnonzero(byte >= 0x80)
    shift = 7
    while more.size and shift < 70:
        byte = u8[pos[more] + size[more]]
        value[more] |= (byte & 0x7F).astype(np.uint64) << np.uint64(shift)
        size[more] += 1
        more = more[byte >= 0x80]
        shift += 7
    ok = np.ones(pos.size, dtype=bool)
    ok[more] = False
    return value, size, ok


# Value fields that hold no scalar and carry no metadata after them in the usual field order:
# obsolete_old_style_histogram (3), image (4), histo (5), audio (6). A following field (e.g.
# metadata, 9) is detected since the value would then not end right after this field.
_SKIP_FIELDS = np.zeros(256, dtype=bool)
_SKIP_FIELDS[[0x1A, 0x22, 0x2A, 0x32]] = True
# Event fields other than summary that say nothing about scalars or restarts: graph_def (4),
# log_message (6), tagged_run_metadata (8), meta_graph_def (9), source_metadata (10). Such a
# record is skipped when that field ends it; file_version (3) and session_log (7) records
# decide what TensorBoard purges and are parsed by protobuf.
_OTHER_EVENT = np.zeros(256, dtype=bool)
_OTHER_EVENT[[0x22, 0x32, 0x42, 0x4A, 0x52]] = True


def _walk(chunk: _Chunk):
    """([(tag, order keys, steps, walls, values)] of simple_values, [(record, value index, value bytes or None)])."""
    u8, starts, lengths = chunk.u8, chunk.starts, chunk.lengths
    n = starts.size
    p = starts + 12
    end = p + lengths
    walls = np.zeros(n)
    steps = np.zeros(n, dtype=np.int64)
    has = (u8[p] == 0x09) & (p + 9 <= end)
    walls[has] = chunk.f64[p[has] + 1]
    p[has] += 9
    has = (u8[p] == 0x10) & (p < end)
    v, size, ok = _varints(u8, p[has] + 1)
    steps[has] = v.view(np.int64)
    p[has] += 1 + size
    whole_slow = np.zeros(n, dtype=bool)
    whole_slow[np.flatnonzero(has)[~ok]] = True
    is_summary = (u8[p] == 0x2A) & (p < end)
    chunk.steps, chunk.walls, chunk.summary = steps, walls, is_summary.copy()
    is_summary &= ~whole_slow
    skipped = np.flatnonzero((p < end) & ~is_summary & _OTHER_EVENT[u8[p]])
    skipped = skipped[_value_ends_after_field(u8, p[skipped], end[skipped])]
    other = (p < end) & ~is_summary
    other[skipped] = False
    whole_slow |= other
    rec = np.flatnonzero(is_summary)
    length, size, ok = _varints(u8, p[rec] + 1)
    q = p[rec] + 1 + size
    qe = q + length.astype(np.int64)
    good = ok & (qe == end[rec])
    whole_slow[rec[~good]] = True
    rec, q, qe = rec[good], q[good], qe[good]
    j = np.zeros(rec.size, dtype=np.int64)  # value index inside its summary
    out_rec, out_j, out_ts, out_tl, out_val = [], [], [], [], []
    slow_values = []
    while rec.size:
        ok = u8[q] == 0x0A
        vl, size, ok2 = _varints(u8, q + 1)
        vs = q + 1 + size
        ve = vs + vl.astype(np.int64)
        ok &= ok2 & (ve <= qe) & (u8[vs] == 0x0A)  # a Value starting with its tag
        tl, size, ok3 = _varints(u8, vs + 1)
        ts = vs + 1 + size
        te = ts + tl.astype(np.int64)
        ok &= ok3 & (te <= ve)
        whole_slow[rec[~ok]] = True
        te = np.where(ok, te, q)  # rows not ok (an empty tag is no field at all) are parsed whole: read in bounds
        field = u8[te]
        simple = ok & (te < ve) & (field == 0x15) & (te + 5 == ve)
        skip = ok & ((te == ve) | (_SKIP_FIELDS[field] & _value_ends_after_field(u8, te, ve)))
        slow = ok & ~simple & ~skip
        out_rec.append(rec[simple])
        out_j.append(j[simple])
        out_ts.append(ts[simple])
        out_tl.append(te[simple] - ts[simple])
        out_val.append(chunk.f32[te[simple] + 1])
        for r, k, a, b in zip(rec[slow].tolist(), j[slow].tolist(), vs[slow].tolist(), ve[slow].tolist()):
            slow_values.append((r, k, chunk.buf[a:b]))
        cont = ok & (ve < qe)
        rec, q, qe, j = rec[cont], ve[cont], qe[cont], j[cont] + 1
    # records with anything unusual are parsed whole; drop their fast and per-value parts
    slow_recs = np.flatnonzero(whole_slow)
    slow = [(int(r), 0, None) for r in slow_recs.tolist()]
    if slow_recs.size:
        slow_values = [s for s in slow_values if not whole_slow[s[0]]]
    slow += slow_values
    rec = np.concatenate(out_rec) if out_rec else _EMPTY
    if rec.size == 0:
        return [], slow
    j = np.concatenate(out_j)
    ts = np.concatenate(out_ts)
    tl = np.concatenate(out_tl)
    values = np.concatenate(out_val)
    if slow_recs.size:
        keep = ~whole_slow[rec]
        rec, j, ts, tl, values = rec[keep], j[keep], ts[keep], tl[keep], values[keep]
    order = (rec << 20) + j
    if rec.size == 0:
        return [], slow
    if j[-1] and np.any(order[1:] < order[:-1]):  # found value index by value index: back into file order
        o = np.argsort(order, kind="stable")
        rec, order, ts, tl, values = rec[o], order[o], ts[o], tl[o], values[o]
    named, bad = _tags(chunk.u64, chunk.buf, ts, tl)
    if bad.size:  # tags that are not UTF-8: protobuf decides (and reports the corruption)
        slow += [(r, 0, None) for r in np.unique(rec[bad]).tolist()]
        named = [(tag, rows[~np.isin(rec[rows], rec[bad])]) for tag, rows in named]
    return [(tag, order[rows], steps[rec[rows]], walls[rec[rows]], values[rows]) for tag, rows in named], slow


def _value_ends_after_field(u8: np.ndarray, te: np.ndarray, ve: np.ndarray) -> np.ndarray:
    """Whether the length-delimited field at te (key byte, length varint, payload) ends exactly at ve."""
    length, size, ok = _varints(u8, te + 1)
    return ok & (te + 1 + size + length.astype(np.int64) == ve)


_PEEL = 16  # up to this many distinct tags per chunk are split off one by one (no sort)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


def _word_mask(length: int, w: int) -> np.uint64:
    """Mask of the bytes of an 8-byte word at offset w that lie inside a tag of `length` bytes."""
    return _ALL if length - w >= 8 else np.uint64((1 << (8 * (length - w))) - 1)


def _tags(u64: np.ndarray, buf: bytes, ts: np.ndarray, tl: np.ndarray):
    """[(tag, row indices)] grouping the tags buf[ts:ts + tl] by equal bytes, and the rows whose tag is not UTF-8.

    Words are read only inside each row's own tag, and only for rows of that tag's length, so
    memory stays within the tags' bytes (one long tag must not cost its length for every row).
    """
    groups = []
    rest = np.arange(ts.size)
    while rest.size and len(groups) < _PEEL:
        r = int(rest[0])
        length, a = int(tl[r]), int(ts[r])
        same = np.flatnonzero(tl[rest] == length)  # positions in rest
        for w in range(0, length, 8):
            m = _word_mask(length, w)
            same = same[(u64[ts[rest[same]] + w] & m) == (u64[a + w] & m)]
        groups.append(rest[same])
        keep = np.ones(rest.size, dtype=bool)
        keep[same] = False
        rest = rest[keep]
    if rest.size:  # many distinct tags: by length, then by sorting each length's words
        by_length = rest[np.argsort(tl[rest], kind="stable")]
        bounds = np.flatnonzero(np.diff(tl[by_length])) + 1
        for rows in np.split(by_length, bounds):
            length = int(tl[rows[0]])
            if length == 0:
                groups.append(rows)
                continue
            keyed = np.empty((rows.size, (length + 7) // 8), dtype=np.uint64)
            for k, w in enumerate(range(0, length, 8)):
                keyed[:, k] = u64[ts[rows] + w] & _word_mask(length, w)
            _, ids = np.unique(keyed, axis=0, return_inverse=True)
            ids = ids.ravel()
            order = np.argsort(ids, kind="stable")
            groups += np.split(rows[order], np.flatnonzero(np.diff(ids[order])) + 1)
    named, bad = [], []
    for rows in groups:
        a = int(ts[rows[0]])
        try:
            named.append((buf[a : a + int(tl[rows[0]])].decode("utf-8"), rows))
        except UnicodeDecodeError:
            bad.append(rows)
    return named, (np.concatenate(bad) if bad else _EMPTY)
