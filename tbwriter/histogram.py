"""TensorFlow 1's histogram, bit for bit: its default bucket edges, its bucketing and its sparse encoding.

TF (tensorflow/core/lib/histogram/histogram.cc) keeps a dense vector of counts over fixed edges
and, for every value (cast to double), adds 1 to bucket `upper_bound(edges, value)`, then
updates min, max, num, sum and sum_squares in input order. EncodeToProto (preserve_zero_buckets
false) writes (edge, count) per non-empty bucket and collapses every run of empty buckets into
one entry carrying the run's last edge.

Here: tiny arrays go through `bisect` on a Python list (no array machinery); big arrays are
sorted once (NumPy's SIMD sort) and every edge is looked up in the sorted values with one
`np.searchsorted`: the count of a bucket is the difference of two neighbouring positions.

Buckets, min, max and num are TF's, bit for bit, at every size. sum and sum_squares are TF's bit
for bit up to SMALL values; above, they are NumPy's pairwise sums in double (TF adds in input
order), within 1e-9 of sum(|x|) and of sum_squares of TF's values (tested).
"""

import bisect
import functools
import math
import struct
import sys
import threading

import numpy as np

from tbwriter.proto import histogram_pb2
from tbwriter.wire import varint

DBL_MAX = sys.float_info.max


def _default_edges() -> list:
    """TF's InitDefaultBucketsInner: +-1e-12 * 1.1**k (by repeated multiplication) below 1e20, 0, +-DBL_MAX."""
    pos = []
    v = 1.0e-12
    while v < 1.0e20:
        pos.append(v)
        v *= 1.1
    pos.append(DBL_MAX)
    return [-p for p in reversed(pos)] + [0.0] + pos


EDGES = _default_edges()
EDGES_ARRAY = np.array(EDGES, dtype=np.float64)
NUM_EDGES = len(EDGES)

# Below this many values, a Python loop with bisect beats numpy's per-call overhead.
SMALL = 48


def _as_float(values: np.ndarray) -> np.ndarray:
    """Flat float32/float64 array holding each value exactly as TF's static_cast<double> sees it."""
    flat = values.reshape(-1)
    k, size = flat.dtype.kind, flat.dtype.itemsize
    if k == "f":
        if size == 4 or size == 8:
            return np.ascontiguousarray(flat)
        return flat.astype(np.float32 if size < 4 else np.float64)
    if k in "iub":
        # Up to 16-bit integers are exact in float32; wider ones are rounded to double like TF.
        return flat.astype(np.float32 if size <= 2 else np.float64)
    raise TypeError(f"histogram values must be real numbers, got dtype {flat.dtype}")


def _check_finite(ok: bool, tag: str) -> None:
    if not ok:
        raise ValueError(f"histogram {tag!r}: values contain NaN or Inf (TensorFlow rejects them too)")


# TF's kernels run with the x86 flags "denormals are zero" and "flush to zero" set
# (port::ScopedFlushDenormal): a subnormal input compares and adds as zero, a float32 subnormal
# becomes +-0.0 already when cast to double, and a subnormal sum or square becomes zero.
FLT_MIN = float(np.finfo(np.float32).tiny)
DBL_MIN = sys.float_info.min
# Below this a float64's last mantissa bit is subnormal, so a partial sum may be subnormal.
_SUM_SAFE = 2.0**-970
# Above this, float64 squares and partial sums stay normal: DAZ/FTZ change nothing.
_SQUARE_SAFE = 1e-150
_bucket_of = functools.partial(bisect.bisect_right, EDGES)  # std::upper_bound


def _reference_stats(vals: list, is_f32: bool, tag: str):
    """min, max, num, sum, sum_squares and bucket indices by Histogram::Add's loop, with DAZ/FTZ."""
    total = 0.0
    squares = 0.0
    lo = lo_x = DBL_MAX
    hi = hi_x = -DBL_MAX
    last = NUM_EDGES - 1
    idx = []
    for v in vals:
        if not math.isfinite(v):
            _check_finite(False, tag)
        x = v
        if v != 0.0 and abs(v) < (FLT_MIN if is_f32 else DBL_MIN):
            x = math.copysign(0.0, v)  # what compares and adds
            if is_f32:
                v = x  # a float32 subnormal is already zero as a double
        b = bisect.bisect_right(EDGES, x)
        idx.append(b if b <= last else last)  # v == DBL_MAX: TF writes past its vector; we keep it
        if lo_x > x:  # a stored subnormal min/max compares as zero afterwards
            lo, lo_x = v, x
        if hi_x < x:
            hi, hi_x = v, x
        total += x
        if total != 0.0 and abs(total) < DBL_MIN:
            total = math.copysign(0.0, total)
        sq = x * x
        if sq < DBL_MIN:
            sq = 0.0
        squares += sq
    return lo, hi, float(len(vals)), total, squares, idx


def _small(flat: np.ndarray, tag: str):
    """Counts and statistics of a few values with plain Python, exactly as Histogram::Add does."""
    vals = flat.tolist()  # flat is float32 or float64 (_as_float): Python floats, exact
    is_f32 = flat.dtype.char == "f"
    limit = FLT_MIN if is_f32 else _SQUARE_SAFE
    total = 0.0
    squares = 0.0
    for v in vals:  # in input order: the same double roundings as TF
        total += v
        squares += v * v
    smallest = min(map(abs, vals))
    if total - total != 0.0 or (
        smallest < limit and (smallest != 0.0 or any(v != 0.0 and -limit < v < limit for v in vals))
    ):
        # NaN/Inf (or an overflow), or values where DAZ/FTZ matter: the exact replay of TF's loop.
        lo, hi, num, total, squares, idx = _reference_stats(vals, is_f32, tag)
        idx.sort()
    else:
        lo = min(vals)  # the first of equal minima (0.0 and -0.0), as TF's strict `>` keeps
        hi = max(vals)
        num = float(len(vals))
        idx = sorted(map(_bucket_of, vals))
        if hi == DBL_MAX:
            idx = [min(i, NUM_EDGES - 1) for i in idx]
    return lo, hi, num, total, squares, idx


def _min_max(flat: np.ndarray, tag: str):
    lo = flat.min()
    hi = flat.max()
    _check_finite(bool(np.isfinite(lo) and np.isfinite(hi)), tag)  # NaN propagates into min/max
    return float(lo), float(hi)


# Values per chunk of the in-order sums: the scratch array (~0.5 MB) stays in cache.
_CHUNK = 1 << 15
_buffers = threading.local()


def _scratch(n: int) -> np.ndarray:
    """This thread's reusable complex work array for chunks of up to n values."""
    work = getattr(_buffers, "z", None)
    if work is None or work.size < n + 1:
        work = _buffers.z = np.empty(n + 1, np.complex128)
    return work


def _fix_tiny(flat: np.ndarray, tag: str, lo: float, hi: float, total: float, squares: float):
    """Apply TF's denormals-are-zero / flush-to-zero where values near zero exist (rare, slower)."""
    is_f32 = flat.dtype == np.float32
    tiny = FLT_MIN if is_f32 else DBL_MIN
    zero = np.abs(flat) < tiny  # what TF compares as zero: +-0 and subnormals
    if abs(lo) < tiny or abs(hi) < tiny:
        # TF keeps the first value that compares equal to the minimum: here the first zero-like.
        first = float(flat[int(np.argmax(zero))])
        first = math.copysign(0.0, first) if is_f32 else first
        lo = first if abs(lo) < tiny else lo
        hi = first if abs(hi) < tiny else hi
    nonzero = flat != 0
    if not is_f32 and np.any(nonzero & (np.abs(flat) < _SUM_SAFE)):
        # A partial sum might land among subnormals, where FTZ would zero it: replay TF's loop.
        _, _, _, total, squares, _ = _reference_stats(flat.tolist(), False, tag)
    elif not is_f32 and np.any(nonzero & (np.abs(flat) < _SQUARE_SAFE)):
        total, squares = _in_order_sums(flat, flush_squares=True)  # subnormal squares become 0
    elif np.any(zero & nonzero):
        total, squares = _in_order_sums(np.where(zero, 0.0, flat).astype(flat.dtype))
    return lo, hi, total, squares


def _in_order_sums(flat: np.ndarray, flush_squares: bool = False):
    """sum and sum of squares accumulated in input order from +0.0, exactly as TF's loop."""
    z = _scratch(min(flat.size, _CHUNK))
    carry = 0j
    for start in range(0, flat.size, _CHUNK):
        carry = _sum_chunk(flat[start : start + _CHUNK], z, carry, flush_squares)
    return carry.real + 0.0, carry.imag + 0.0


def _sum_chunk(x: np.ndarray, z: np.ndarray, carry: complex, flush_squares: bool = False) -> complex:
    """Continue both running sums over x: the real and imaginary parts of one complex cumsum are
    two independent sequential double accumulations; z[0] carries the previous chunk's totals."""
    k = x.size
    zz = z[: k + 1]
    zz[0] = carry
    np.copyto(zz[1:], x)
    with np.errstate(over="ignore"):  # huge values: TF's sums overflow to inf as well
        np.multiply(zz.real[1:], zz.real[1:], out=zz.imag[1:])
        if flush_squares:
            squares = zz.imag[1:]
            squares[squares < DBL_MIN] = 0.0
        np.cumsum(zz, out=zz)
    return complex(zz[k])


_TINY = (bisect.bisect_right(EDGES, -1e-12), bisect.bisect_right(EDGES, 0.0))  # |v| < 1e-12 lands here
_ZERO_BUCKETS = slice(_TINY[0], _TINY[1] + 1)
_THRESHOLDS = {}


def _thresholds(ftype) -> np.ndarray:
    """Each edge as the smallest ftype value >= it, so that `x < t` in ftype is exactly `x < edge`."""
    t = _THRESHOLDS.get(ftype)
    if t is None:
        with np.errstate(over="ignore"):  # DBL_MAX in float32: inf, above every finite value
            t = EDGES_ARRAY.astype(ftype)
        low = t.astype(np.float64) < EDGES_ARRAY
        t[low] = np.nextafter(t[low], ftype(np.inf))
        t = _THRESHOLDS[ftype] = t
    return t


def _pairwise_sums(flat: np.ndarray):
    """sum and sum of squares in double by NumPy's pairwise summation (x * x is exact for float32)."""
    with np.errstate(over="ignore"):  # huge values: TF's sums overflow to inf as well
        total = float(np.add.reduce(flat, dtype=np.float64))
        wide = flat.astype(np.float64)
        squares = float(np.add.reduce(np.multiply(wide, wide, out=wide)))
    return total + 0.0, squares + 0.0  # TF's sums start at +0.0


def _large(flat: np.ndarray, tag: str):
    """Counts and statistics of many values: one sort, one searchsorted of the edges, pairwise sums."""
    ordered = np.sort(flat)  # NaN sorts last, -inf first: one look at both ends checks them all
    lo, hi = float(ordered[0]), float(ordered[-1])
    _check_finite(math.isfinite(lo) and math.isfinite(hi), tag)
    below = np.searchsorted(ordered, _thresholds(flat.dtype.type), side="left")  # values < each edge
    counts = np.diff(below, prepend=0, append=flat.size)  # bucket i: edges[i-1] <= v < edges[i]
    total, squares = _pairwise_sums(flat)
    if counts[_ZERO_BUCKETS].any():
        tiny = FLT_MIN if flat.dtype == np.float32 else DBL_MIN
        # Negative subnormals compare as zero under DAZ: TF counts them in zero's bucket.
        moved = below[_TINY[0]] - int(np.searchsorted(ordered, -tiny, side="right"))  # in (-tiny, 0)
        counts[_TINY[0]] -= moved
        counts[_TINY[1]] += moved
        lo, hi, total, squares = _fix_tiny(flat, tag, lo, hi, total, squares)
    counts[NUM_EDGES - 1] += counts[NUM_EDGES]  # DBL_MAX itself (see _reference_stats)
    idx = np.flatnonzero(counts[:NUM_EDGES])
    return lo, hi, float(flat.size), total, squares, idx.tolist(), counts[idx].astype(np.float64).tolist()


def _encode(idx: list, counts: list):
    """EncodeToProto(preserve_zero_buckets=false) from the sorted non-empty bucket indices."""
    limits = []
    out = []
    prev = -1
    edges = EDGES
    for i, c in zip(idx, counts):  # one step per non-empty bucket, not per bucket
        if i > prev + 1:  # a run of empty buckets before this one: keep the run's last edge
            limits.append(edges[i - 1])
            out.append(0.0)
        limits.append(edges[i])
        out.append(c)
        prev = i
    if prev < NUM_EDGES - 1:
        limits.append(edges[-1])
        out.append(0.0)
    return limits, out


def _encode_sorted(idx: list):
    """EncodeToProto's (limits, counts) from the sorted bucket index of every value (small path)."""
    buckets = []
    counts = []
    prev = -1
    for i in idx:  # runs of equal indices -> (bucket, count), then the shared encoder
        if i == prev:
            counts[-1] += 1.0
        else:
            buckets.append(i)
            counts.append(1.0)
            prev = i
    return _encode(buckets, counts)


# Serialized HistogramProto, built with struct instead of field by field (protobuf's Python
# setters cost more than the arithmetic: docs/performance.md): min..sum_squares as fixed64
# fields 1-5, then bucket_limit (6) and bucket (7) packed. Parsing these bytes gives the same
# message as setting the fields.
_STATS = struct.Struct("<BdBdBdBdBd").pack
_PACKED = {}  # count of doubles -> struct packing them


def _buckets_bytes(limits: list, counts: list) -> bytes:
    """bucket_limit and bucket as packed repeated double fields."""
    n = len(limits)
    pack = _PACKED.get(n)
    if pack is None:
        pack = _PACKED[n] = struct.Struct(f"<{n}d").pack
    size = varint(8 * n)
    return b"".join((b"\x32", size, pack(*limits), b"\x3a", size, pack(*counts)))


_ENCODED = {}  # sorted bucket indices of a small histogram -> _buckets_bytes (values drift slowly)
_LAST = NUM_EDGES - 1
_FLOAT32 = np.dtype(np.float32)


def _small_bytes(flat: np.ndarray, tag: str) -> bytes:
    """_small and _encode_sorted, serialized; the common case (no NaN/Inf, DBL_MAX or |v| < 1e-12) inline."""
    vals = flat.tolist()
    total = 0.0
    squares = 0.0
    for v in vals:  # in input order: the same double roundings as TF
        total += v
        squares += v * v
    ordered = sorted(vals)  # without NaN (caught by total below): min, max and sorted buckets at once
    idx = list(map(_bucket_of, ordered))
    # NaN and +-Inf make total NaN or Inf; bucket NUM_EDGES holds DBL_MAX; values near zero
    # (where DAZ/FTZ may matter) land in _TINY: all of them take _small's exact replay instead.
    i = bisect.bisect_left(idx, _TINY[0])
    if total - total != 0.0 or idx[-1] > _LAST or (i < len(idx) and idx[i] <= _TINY[1]):
        lo, hi, num, total, squares, idx = _small(flat, tag)
    else:  # equal values are equal floats here (+-0 went to _small): the first minimum is any
        lo, hi, num = ordered[0], ordered[-1], float(len(vals))
    key = tuple(idx)
    buckets = _ENCODED.get(key)
    if buckets is None:
        if len(_ENCODED) > 4096:  # bounded: values wandering over many buckets must not grow it
            _ENCODED.clear()
        buckets = _ENCODED[key] = _buckets_bytes(*_encode_sorted(idx))
    return _STATS(0x09, lo, 0x11, hi, 0x19, num, 0x21, total, 0x29, squares) + buckets


def tf_histogram_bytes(values: np.ndarray, tag: str = "") -> bytes:
    """tf_histogram(values, tag) serialized (parses to the same HistogramProto; zeros may be explicit)."""
    if type(values) is np.ndarray and values.dtype is _FLOAT32 and 0 < values.size <= SMALL:
        return _small_bytes(values.ravel(), tag)  # the per-step case, without _as_float's checks
    flat = _as_float(values)
    if flat.size == 0:
        raise ValueError(f"histogram {tag!r}: values is empty")
    if flat.size <= SMALL:
        return _small_bytes(flat, tag)
    lo, hi, num, total, squares, idx, counts = _large(flat, tag)
    return _STATS(0x09, lo, 0x11, hi, 0x19, num, 0x21, total, 0x29, squares) + _buckets_bytes(*_encode(idx, counts))


def tf_histogram(values: np.ndarray, tag: str = "", out=None) -> histogram_pb2.HistogramProto:
    """HistogramProto with TF's default buckets, identical to tf.compat.v1.summary.histogram's.

    Fills `out` (an empty HistogramProto, e.g. inside a Summary) when given, saving a copy."""
    data = tf_histogram_bytes(values, tag)
    h = histogram_pb2.HistogramProto() if out is None else out
    h.MergeFromString(data)
    return h


def stats(values: np.ndarray, tag: str = ""):
    """(flat, min, max, num, sum, sum_squares) computed the way TF does (for numpy-binned histograms)."""
    flat = _as_float(values)
    if flat.size == 0:
        raise ValueError(f"histogram {tag!r}: values is empty")
    if flat.size <= SMALL:
        lo, hi, num, total, squares, _ = _small(flat, tag)
        return flat, lo, hi, num, total, squares
    lo, hi = _min_max(flat, tag)
    total, squares = _in_order_sums(flat)
    lo, hi, total, squares = _fix_tiny(flat, tag, lo, hi, total, squares)
    return flat, lo, hi, float(flat.size), total, squares


def numpy_histogram(values: np.ndarray, bins, tag: str = "", max_bins=None) -> histogram_pb2.HistogramProto:
    """HistogramProto over numpy's bins (int, estimator name or edges), trimmed like tensorboardX."""
    flat, lo, hi, num, total, squares = stats(values, tag)
    try:
        counts, limits = np.histogram(flat, bins=bins)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"histogram {tag!r}: bins must be 'tensorflow', an int, a numpy estimator name "
            f"or increasing edges, got {bins!r} ({e})"
        ) from None
    if max_bins is not None and counts.size > max_bins:
        # Merge neighbouring bins so that at most max_bins remain (tensorboardX's subsampling).
        step = -(-counts.size // int(max_bins))
        pad = (-counts.size) % step
        counts = np.pad(counts, (0, pad)).reshape(-1, step).sum(axis=1)
        limits = np.append(limits[:-1:step], limits[-1])
    nz = np.flatnonzero(counts)
    start, end = int(nz[0]), int(nz[-1]) + 1
    # bucket_limit holds right edges only: keep one empty bucket on the left so the left edge shows.
    counts = counts[start - 1 : end] if start > 0 else np.concatenate([[0], counts[:end]])
    limits = limits[start : end + 1]
    return histogram_pb2.HistogramProto(
        min=lo,
        max=hi,
        num=num,
        sum=total,
        sum_squares=squares,
        bucket_limit=limits.astype(np.float64).tolist(),
        bucket=counts.astype(np.float64).tolist(),
    )
