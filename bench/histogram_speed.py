"""tbwriter.summary.histogram vs tensorboardX.summary.histogram (TF default bins), medians, side by side.

    python bench/histogram_speed.py
Prints calls per second of each and the median per-round ratio, for 4 float32 values (the XOR
lab) and a 512x512 float32 array.
"""

import statistics
import time

import numpy as np


def rates(ours, theirs, calls: int, repeats: int = 11):
    """Median calls/s of each and the median of per-round ratios; rounds alternate the two so
    that load from other processes hits both alike."""
    ours()
    theirs()
    a, b, ratios = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            ours()
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(calls):
            theirs()
        t_theirs = time.perf_counter() - t
        a.append(calls / t_ours)
        b.append(calls / t_theirs)
        ratios.append(t_theirs / t_ours)
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def main() -> None:
    """Time both libraries on the same arrays in one process."""
    from tensorboardX import summary as tbx
    from tbwriter import summary as tbs
    from tbwriter.histogram import EDGES

    tbx_bins = EDGES[1:-1]  # tensorboardX's default_bins: TF's edges without +-DBL_MAX
    rng = np.random.default_rng(0)
    for label, x, calls in [
        ("4 float32 values", rng.random(4, dtype=np.float32), 500),
        ("512x512 float32", rng.standard_normal((512, 512)).astype(np.float32), 5),
    ]:
        ours, theirs, ratio = rates(lambda: tbs.histogram("h", x), lambda: tbx.histogram("h", x, tbx_bins), calls)
        print(f"histogram of {label}: tbwriter {ours:,.0f}/s, tensorboardX {theirs:,.0f}/s, ratio {ratio:.1f}x")


if __name__ == "__main__":
    main()
