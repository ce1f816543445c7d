"""tbwriter.summary.histogram vs tensorboardX.summary.histogram (TF default bins), medians, side by side.

    python bench/histogram_speed.py
Prints calls per second of each and the ratio, for 4 float32 values (the XOR lab) and a 512x512 float32 array.
"""
import statistics
import time

import numpy as np


def rate(fn, calls: int, repeats: int = 7) -> float:
    """Median calls per second over `repeats` timed batches of `calls` calls."""
    fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append(calls / (time.perf_counter() - t))
    return statistics.median(samples)


def main() -> None:
    """Time both libraries on the same arrays in one process."""
    from tensorboardX import summary as tbx
    from tbwriter import summary as tbs
    from tbwriter.histogram import EDGES

    tbx_bins = EDGES[1:-1]  # tensorboardX's default_bins: TF's edges without +-DBL_MAX
    rng = np.random.default_rng(0)
    for label, x, calls in [("4 float32 values", rng.random(4, dtype=np.float32), 2000),
                            ("512x512 float32", rng.standard_normal((512, 512)).astype(np.float32), 20)]:
        ours = rate(lambda: tbs.histogram("h", x), calls)
        theirs = rate(lambda: tbx.histogram("h", x, tbx_bins), calls)
        print(f"histogram of {label}: tbwriter {ours:,.0f}/s, tensorboardX {theirs:,.0f}/s, ratio {ours / theirs:.1f}x")


if __name__ == "__main__":
    main()
