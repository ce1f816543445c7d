"""Keep freed memory in the process heap (glibc), so every training step reuses it.

glibc serves each allocation above its mmap threshold (128 KiB, raised on the fly only up to
the largest block freed so far) with fresh pages from the kernel and returns them on free, so
a step's activation-sized arrays pay the page faults and the kernel's zeroing again on every
step. Serving arrays up to 32 MiB from the heap and keeping up to 64 MiB of freed heap makes
them reuse the same memory; peak RSS stays the same (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 64 << 20


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds; False (nothing changed) off glibc or when the
    user set MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ themselves."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (present only in glibc)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
