"""Compare tbwriter's histograms with TensorFlow 1's HistogramSummary op, byte for byte.

Run with a Python that has TensorFlow and tbwriter installed:
    python bench/histogram_vs_tf.py [--cases N]
Prints one line per mismatch and a final count of matches and mismatches.
"""

import argparse
import sys

import numpy as np

DBL_MAX = sys.float_info.max


def cases(n: int, seed: int = 0):
    """(name, array) pairs: random data over many scales and dtypes, plus edges and extremes."""
    from tbwriter.histogram import EDGES

    rng = np.random.default_rng(seed)
    edges = np.array(EDGES[1:-1])
    f32_tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    special = [
        0.0,
        -0.0,
        1e-12,
        -1e-12,
        1e20,
        -1e20,
        1.1e-12,
        np.nextafter(1e-12, 0),
        np.nextafter(1e-12, 1),
        np.nextafter(1e20, 0),
        np.nextafter(1e20, np.inf),
        1e-300,
        -1e-300,
        5e-324,
        -5e-324,
        1e300,
        -1e300,
    ]
    yield "special-f64", np.array(special)
    yield "edges-f64", edges.copy()
    yield "edge-neighbours-f64", np.concatenate([np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    yield "edges-f32", edges.astype(np.float32)
    yield (
        "edge-neighbours-f32",
        np.concatenate(
            [
                np.nextafter(edges.astype(np.float32), np.float32(-np.inf)),
                np.nextafter(edges.astype(np.float32), np.float32(np.inf)),
            ]
        ),
    )
    yield (
        "f32-extremes",
        np.array(
            [
                f32_tiny,
                -f32_tiny,
                np.finfo(np.float32).max,
                np.finfo(np.float32).min,
                np.finfo(np.float32).tiny,
                0.0,
                -0.0,
            ],
            dtype=np.float32,
        ),
    )
    yield "dbl-max-neighbours", np.array([np.nextafter(DBL_MAX, 0), -np.nextafter(DBL_MAX, 0), -DBL_MAX])
    yield "zeros-neg-first", np.array([-0.0, 0.0, -0.0, 0.0] * 20)
    yield "zeros-pos-first", np.array([0.0, -0.0] * 3, dtype=np.float32)
    yield "xor-4", np.array([0.1, 0.9, 0.2, 0.8], dtype=np.float32)
    yield "ints-i32", rng.integers(-1000, 1000, 500).astype(np.int32)
    yield "ints-i64-big", rng.integers(-(2**62), 2**62, 300, dtype=np.int64)
    yield "uint8", rng.integers(0, 256, 100).astype(np.uint8)
    yield "f16", rng.standard_normal(300).astype(np.float16)
    yield "f32-512x512", rng.standard_normal((512, 512)).astype(np.float32)
    # Subnormals (TF runs with denormals-are-zero and flush-to-zero) in small and large arrays.
    sub64 = np.array([5e-324, -5e-324, 1e-310, -2e-309, 0.0, -0.0, 3e-308, -2.5e-308, 1e-160, -1e-155])
    yield "subnormal-f64-small", sub64
    yield "subnormal-f64-neg-first", sub64[[1, 0, 5, 4, 2, 3]]
    yield "subnormal-f64-large", np.tile(sub64, 20)
    yield "subnormal-f64-large-rev", np.tile(sub64[::-1], 20)
    yield "tiny-partial-sums-f64", np.array([3e-308, -2.9e-308, 1e-300, -1e-300] * 15)
    yield "subnormal-squares-f64-small", np.array([1e-160, -3e-155, 2e-200, 1e-170])
    yield "subnormal-squares-f64-large", np.array([1e-160, -3e-155, 2e-200, 1e-170] * 30)
    yield "subnormal-squares-f64-mixed", np.array([1e-160, 0.0, 1e-3, -3e-155] * 30)
    sub32 = np.array([1e-45, -1e-45, 1e-40, -3e-39, 0.0, -0.0, 1.2e-38, 2e-38], dtype=np.float32)
    yield "subnormal-f32-small", sub32
    yield "subnormal-f32-neg-first", sub32[[1, 0, 3, 2]]
    yield "subnormal-f32-large", np.tile(sub32, 20)
    yield "subnormal-f32-only-large", np.tile(sub32[[1, 0, 3, 2]], 20)
    yield "f16-subnormal", np.array([6e-8, -6e-8, 1e-5, 0.0, 65504.0], dtype=np.float16)
    yield "f16-large", np.tile(np.array([6e-8, -6e-8, 1e-5, 0.0, 65504.0], dtype=np.float16), 30)
    for i in range(n):
        dtype = [np.float32, np.float64][i % 2]
        size = int(rng.choice([1, 2, 4, 7, 40, 49, 100, 1000, 5000]))
        scale = 10.0 ** rng.uniform(-14, 22)
        x = rng.standard_normal(size) * scale
        if i % 3 == 0:  # mix in exact edges, zeros and signed zeros
            k = max(1, size // 5)
            x[rng.integers(0, size, k)] = rng.choice(edges, k)
            x[rng.integers(0, size, k)] = rng.choice([0.0, -0.0], k)
        if i % 5 == 0:  # many orders of magnitude at once, stressing the sums' rounding
            x = x * 10.0 ** rng.integers(-15, 15, size)
        yield f"random-{i}-{np.dtype(dtype).name}-{size}", x.astype(dtype)


def main() -> None:
    """Build every case's TF summary in one graph, evaluate, compare to tbwriter.summary.histogram."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    args = parser.parse_args()
    import tensorflow as tf
    from tbwriter import summary as tbs
    from tbwriter.proto import summary_pb2

    tf.compat.v1.disable_eager_execution()
    items = list(cases(args.cases))
    graph = tf.Graph()
    with graph.as_default():
        ops = [tf.compat.v1.summary.histogram(f"h{i}", tf.constant(x)) for i, (_, x) in enumerate(items)]
        nan_op = tf.compat.v1.summary.histogram("bad", tf.constant(np.array([1.0, np.nan])))
    with tf.compat.v1.Session(graph=graph) as sess:
        outs = sess.run(ops)
        try:
            sess.run(nan_op)
            tf_nan = "accepted"
        except tf.errors.InvalidArgumentError as e:
            tf_nan = "InvalidArgumentError: " + e.message.splitlines()[0]
    matches = close = mismatches = 0
    for i, ((name, x), tf_bytes) in enumerate(zip(items, outs)):
        ours = tbs.histogram(f"h{i}", x).SerializeToString()
        if ours == tf_bytes:
            matches += 1
            continue
        a = summary_pb2.Summary.FromString(tf_bytes).value[0].histo
        b = summary_pb2.Summary.FromString(ours).value[0].histo
        diffs = [f for f in ("min", "max", "num", "sum", "sum_squares") if getattr(a, f) != getattr(b, f)]
        if list(a.bucket_limit) != list(b.bucket_limit) or list(a.bucket) != list(b.bucket):
            diffs.append("buckets")
        with np.errstate(over="ignore"):
            scale = float(np.abs(x.astype(np.float64)).sum())
        if (
            set(diffs) <= {"sum", "sum_squares"}
            and abs(a.sum - b.sum) <= 1e-9 * scale
            and (abs(a.sum_squares - b.sum_squares) <= 1e-9 * a.sum_squares)
        ):
            close += 1  # large inputs: pairwise sums within the documented bound of TF's in-order sums
            continue
        mismatches += 1
        detail = ", ".join(f"{f}: tf={getattr(a, f)!r} ours={getattr(b, f)!r}" for f in diffs if f != "buckets")
        print(f"MISMATCH {name} ({x.dtype}, {x.size} values): {diffs} {detail}")
    try:
        tbs.histogram("bad", np.array([1.0, np.nan]))
        ours_nan = "accepted"
    except ValueError as e:
        ours_nan = f"ValueError: {e}"
    print(f"NaN input: TF -> {tf_nan}; tbwriter -> {ours_nan}")
    print(
        f"tensorflow {tf.__version__}: {matches} byte-identical Summary protos, {close} identical but for "
        f"sums within 1e-9 of sum(|x|) and of sum_squares, {mismatches} mismatches out of {len(items)} inputs"
    )


if __name__ == "__main__":
    main()
