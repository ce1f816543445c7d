"""Histograms: the vectorized TF bucketing against a plain port of TF's C++ (histogram.cc), bit for bit.

The reference below is a straight port: every value cast to double, `upper_bound` by bisect per
value into a dense bucket vector, min/max/sum/sum_squares in input order, then EncodeToProto with
preserve_zero_buckets=false walking every bucket. TF runs its kernels with the x86 flags
denormals-are-zero and flush-to-zero set (port::ScopedFlushDenormal); the port models them, as
bench/histogram_vs_tf.py confirmed against tensorflow 2.21 (byte-identical protos).
"""

import bisect
import functools
import math
import struct
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tbwriter import histogram as H
from tbwriter import summary as tbs

from hypothesis_settings import assert_caught, examples

DBL_MAX = sys.float_info.max
DBL_MIN = sys.float_info.min
FLT_MIN = float(np.finfo(np.float32).tiny)


def ref_edges() -> list:
    """InitDefaultBucketsInner, line by line."""
    buckets, neg = [], []
    v = 1.0e-12
    while v < 1.0e20:
        buckets.append(v)
        neg.append(-v)
        v *= 1.1
    buckets.append(DBL_MAX)
    neg.append(-DBL_MAX)
    neg.reverse()
    return neg + [0.0] + buckets


EDGES = ref_edges()


def bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def ref_histogram(values: np.ndarray) -> dict:
    """Histogram::Add over every value, then EncodeToProto(preserve_zero_buckets=false)."""
    flat = values.reshape(-1)
    f32 = flat.dtype.kind == "f" and flat.dtype.itemsize <= 4
    doubles = [float(v) for v in flat.astype(np.float64 if flat.dtype.kind == "f" else flat.dtype).tolist()]
    buckets = [0.0] * len(EDGES)
    mn, mx, num, total, squares = EDGES[-1], -DBL_MAX, 0.0, 0.0, 0.0
    mn_cmp, mx_cmp = mn, mx

    def daz(x):  # what the CPU sees with denormals-are-zero
        return math.copysign(0.0, x) if x != 0.0 and abs(x) < DBL_MIN else x

    def ftz(x):  # a subnormal result is flushed to zero
        return math.copysign(0.0, x) if x != 0.0 and abs(x) < DBL_MIN else x

    for v in doubles:
        if f32 and v != 0.0 and abs(v) < FLT_MIN:
            v = math.copysign(0.0, v)  # cvtss2sd of a float32 subnormal under DAZ
        x = daz(v)
        b = bisect.bisect_right(EDGES, x)
        buckets[min(b, len(EDGES) - 1)] += 1.0
        if mn_cmp > x:
            mn, mn_cmp = v, x
        if mx_cmp < x:
            mx, mx_cmp = v, x
        num += 1
        total = ftz(total + x)
        squares = ftz(squares + ftz(x * x))
    limits, counts = [], []
    i = 0
    while i < len(buckets):
        end, count = EDGES[i], buckets[i]
        i += 1
        if count <= 0.0:
            while i < len(buckets) and buckets[i] <= 0.0:
                end, count = EDGES[i], buckets[i]
                i += 1
        limits.append(end)
        counts.append(count)
    return dict(min=mn, max=mx, num=num, sum=total, sum_squares=squares, bucket_limit=limits, bucket=counts)


def assert_sums_close(got, want: dict, values: np.ndarray) -> None:
    """Pairwise sums (large path) within 1e-9 of sum(|x|) and of sum_squares of TF's in-order sums."""
    scale = float(np.abs(values.astype(np.float64)).sum())
    for field, bound in (("sum", 1e-9 * scale), ("sum_squares", 1e-9 * want["sum_squares"])):
        g, w = getattr(got, field), want[field]
        assert g == w or abs(g - w) <= bound, (field, g, w, bound)


def assert_identical(values: np.ndarray) -> None:
    """tbwriter's proto equals the reference bit for bit (signed zeros included); sums see assert_sums_close."""
    got = H.tf_histogram(values, "t")
    want = ref_histogram(values)
    exact = ("min", "max", "num", "sum", "sum_squares") if values.size <= H.SMALL else ("min", "max", "num")
    for field in exact:
        assert bits(getattr(got, field)) == bits(want[field]), (field, getattr(got, field), want[field])
    if values.size > H.SMALL:
        with np.errstate(over="ignore"):
            assert_sums_close(got, want, values)
    assert [bits(x) for x in got.bucket_limit] == [bits(x) for x in want["bucket_limit"]]
    assert list(got.bucket) == want["bucket"]


def test_default_edges_match_tf():
    assert H.EDGES == EDGES
    assert len(EDGES) == 1551 and EDGES[775] == 0.0 and EDGES[776] == 1e-12 and EDGES[-1] == DBL_MAX
    assert EDGES[-2] >= 1e20 / 1.1 and EDGES[-2] < 1e20
    assert all(a < b for a, b in zip(EDGES, EDGES[1:]))


SPECIAL = [
    0.0,
    -0.0,
    1e-12,
    -1e-12,
    1e20,
    -1e20,
    np.nextafter(1e-12, 0),
    np.nextafter(1e-12, 1),
    np.nextafter(1e20, 0),
    np.nextafter(1e20, np.inf),
    5e-324,
    -5e-324,
    1e-310,
    -2e-308,
    2.3e-308,
    1e-160,
    np.nextafter(DBL_MAX, 0),
    -np.nextafter(DBL_MAX, 0),
    -DBL_MAX,
    1.0,
    -1.0,
    1.1,
    3.0,
]


@pytest.mark.parametrize("n", [1, 4, H.SMALL, H.SMALL + 1, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_edges_and_neighbours_small_and_large(n, dtype):
    rng = np.random.default_rng(n)
    edges = np.array(EDGES[1:-1])
    with np.errstate(over="ignore"):  # float32 cannot hold DBL_MAX's neighbours: drop the infinities
        pool = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), SPECIAL]).astype(dtype)
    assert_identical(rng.choice(pool[np.isfinite(pool)], n))


def test_every_edge_at_once_both_paths():
    edges = np.array(EDGES[1:-1])
    for dtype in (np.float32, np.float64):
        x = edges.astype(dtype)
        assert_identical(x)  # large path
        for chunk in np.array_split(x, len(x) // 4):
            assert_identical(chunk)  # small path


def test_zero_signs_and_first_equal_minimum():
    for vals in (
        [-0.0, 0.0],
        [0.0, -0.0],
        [-0.0] * 60,
        [0.0, -0.0] * 40,
        [-5e-324, 5e-324, 0.0],
        [5e-324, -5e-324] * 40,
    ):
        assert_identical(np.array(vals))
    h = H.tf_histogram(np.array([-0.0, -0.0]))
    assert bits(h.sum) == bits(0.0) and bits(h.min) == bits(-0.0)  # TF's sum starts at +0.0


def test_float32_subnormals_are_zero_like_tf():
    tiny = np.finfo(np.float32).smallest_subnormal
    for n in (3, 200):
        x = np.resize(np.array([-tiny, tiny, 1.0, 1e-40, -1e-39], dtype=np.float32), n)
        assert_identical(x)
        h = H.tf_histogram(x)
        assert h.min == -0.0 and h.max == 1.0


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.bool_])
def test_integer_dtypes(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if dtype != np.bool_ else None
    for n in (4, 500):
        if info is None:
            x = rng.integers(0, 2, n).astype(bool)
        else:
            x = rng.integers(max(info.min, -(2**62)), min(info.max, 2**62), n, endpoint=True).astype(dtype)
        assert_identical(x)


def test_float16_including_subnormals():
    x = np.array([6e-8, -6e-8, 1e-5, 0.0, 65504.0, -65504.0, 0.1], dtype=np.float16)
    assert_identical(x)
    assert_identical(np.tile(x, 30))


def test_tiny_float64_partial_sums_flush_like_tf():
    assert_identical(np.array([3e-308, -2.9e-308, 1e-300, -1e-300] * 20))
    for vals in ([1e-160, -3e-155, 2e-200, 1e-170], [1e-160, 0.0, 1e-3, -3e-155]):
        for n in (1, 30):  # subnormal squares are flushed: sum_squares 0.0, not 1e-318
            assert_identical(np.array(vals * n))
    assert H.tf_histogram(np.full(100, 1e-160)).sum_squares == 0.0


def test_dbl_max_counts_in_last_bucket():
    h = H.tf_histogram(np.array([DBL_MAX, 1.0]))
    assert list(h.bucket_limit)[-1] == DBL_MAX and list(h.bucket)[-1] == 1.0
    assert_identical(np.array([DBL_MAX] * 60))


finite64 = st.floats(allow_nan=False, allow_infinity=False, width=64)
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
edge_values = st.sampled_from(EDGES[1:-1] + SPECIAL)
EDGES32 = sorted({float(np.float32(v)) for v in EDGES[1:-1] + SPECIAL if abs(v) < 3e38})


@settings(max_examples=examples(150), deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 300), elements=st.one_of(finite64, edge_values)))
def test_property_float64(x):
    assert_identical(x)


@settings(max_examples=examples(150), deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 300), elements=st.one_of(finite32, st.sampled_from(EDGES32))))
def test_property_float32(x):
    assert_identical(x)


@settings(max_examples=examples(60), deadline=None)
@given(hnp.arrays(st.sampled_from([np.int32, np.int64, np.uint8, np.int16]), st.integers(1, 200)))
def test_property_ints(x):
    assert_identical(x)


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(-40, 60), st.integers(1, 3000), st.integers(0, 2**32 - 1))
def test_property_random_scales_large(exp, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 10.0**exp * 10.0 ** rng.integers(-3, 4, n)
    assert_identical(x)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    if np.isfinite(x32).all():
        assert_identical(x32)


def test_property_catches_float32_edges_not_rounded_up(monkeypatch):
    """The large path's edges cast to float32 without the round-up: values at an edge land one bucket low."""
    monkeypatch.setattr(H, "_THRESHOLDS", {})
    monkeypatch.setattr(H, "_thresholds", lambda ftype: H.EDGES_ARRAY.astype(ftype))
    with np.errstate(over="ignore"):
        assert_caught(test_property_float32)


def test_property_catches_values_at_an_edge_in_the_bucket_below(monkeypatch):
    """The small path's bucket search taking lower_bound instead of TF's upper_bound fails the property."""
    monkeypatch.setattr(H, "_bucket_of", functools.partial(bisect.bisect_left, H.EDGES))
    assert_caught(test_property_float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_sums_within_1e9_relative_of_tf(dtype):
    """Sums that do not cancel: the pairwise values are within 1e-9 of TF's in-order values themselves."""
    rng = np.random.default_rng(7)
    for x in (rng.standard_normal(20_000) + 3.0, rng.uniform(0, 1e-3, 20_000), rng.standard_normal(20_000) * 1e6):
        x = x.astype(dtype)
        got = H.tf_histogram(x)
        want = ref_histogram(x)
        total, squares = want["sum"], want["sum_squares"]
        assert list(got.bucket) == want["bucket"]
        assert abs(got.sum - total) <= 1e-9 * abs(total)
        assert abs(got.sum_squares - squares) <= 1e-9 * squares
        assert got.sum != 0.0 and got.num == x.size


def test_nan_and_inf_name_the_tag_before_anything():
    for bad in (np.nan, np.inf, -np.inf):
        for n in (3, 300):
            x = np.ones(n)
            x[n // 2] = bad
            with pytest.raises(ValueError, match="'weights'"):
                tbs.histogram("weights", x)
            with pytest.raises(ValueError, match="'weights'"):
                tbs.histogram("weights", x, bins=10)


def test_overflowing_squares_are_not_rejected():
    h = H.tf_histogram(np.array([1e200, 2.0]))
    assert h.sum_squares == math.inf  # TF too: only NaN/Inf inputs are errors
    assert_identical(np.array([1e200, -1e200, 3.0]))


def test_empty_and_non_numeric():
    with pytest.raises(ValueError, match="values"):
        tbs.histogram("h", np.array([]))
    with pytest.raises(TypeError, match="values"):
        tbs.histogram("h", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="name"):
        tbs.histogram("", [1.0])


def test_numpy_bins_like_tensorboardx():
    x = np.arange(10, dtype=np.float64)
    h = tbs.histogram("h", x, bins=5).value[0].histo
    counts, edges = np.histogram(x, bins=5)
    # One empty bucket on the left carries the left edge; right edges follow.
    assert list(h.bucket) == [0.0] + counts.tolist()
    assert list(h.bucket_limit) == edges.tolist()
    assert h.num == 10 and h.sum == 45.0 and h.sum_squares == 285.0 and h.min == 0 and h.max == 9
    for bins in ("auto", "fd", "sturges", [0, 3, 9], np.array([0.0, 5.0, 10.0])):
        h = tbs.histogram("h", x, bins=bins).value[0].histo
        assert sum(h.bucket) == 10
    h = tbs.histogram("h", np.array([5.0, 5.0, 9.0]), bins=[0, 2, 4, 6, 8, 10]).value[0].histo
    assert list(h.bucket_limit) == [4.0, 6.0, 8.0, 10.0] and list(h.bucket) == [0.0, 2.0, 0.0, 1.0]
    h = tbs.histogram("h", np.arange(100.0), bins=100, max_bins=10).value[0].histo
    assert sum(h.bucket) == 100 and len(h.bucket) <= 11


@pytest.mark.parametrize("bins", ["nonsense", 0, -3, True, [[1, 2], [3, 4]], object()])
def test_unknown_bins_name_bins(bins):
    with pytest.raises(ValueError, match="bins"):
        tbs.histogram("h", [1.0, 2.0], bins=bins)


def test_histogram_raw():
    s = tbs.histogram_raw("r", 0.0, 2.0, 3, 3.0, 5.0, [0.0, 1.0, 2.0], [0, 2, 1])
    h = s.value[0].histo
    assert s.value[0].tag == "r" and list(h.bucket) == [0.0, 2.0, 1.0] and h.num == 3
    with pytest.raises(ValueError, match="bucket_limits and bucket_counts"):
        tbs.histogram_raw("r", 0, 1, 1, 1, 1, [1.0, 2.0], [1])


def test_histogram_proto_and_summary_agree():
    x = np.random.default_rng(3).standard_normal(100)
    assert tbs.histogram("h", x).value[0].histo == tbs.histogram_proto(x)
    assert tbs.histogram("h", list(x)).value[0].histo == tbs.histogram_proto(x)
