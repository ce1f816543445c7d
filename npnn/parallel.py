"""Two threads per op, the way PyTorch's CPU kernels use their intra-op threads.

NumPy's loops release the GIL on large arrays, so two halves of a batch (or of a parameter)
written by two threads overlap. Each half writes its own rows of a preallocated output with
the same ufuncs, so the results are bit-identical to one thread. `npnn.parallel.NUM_THREADS = 1`
turns it off (npnn.distributed runs one thread per rank: it counts the cores the process may use).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["NUM_THREADS", "MIN_SPLIT", "both", "worth", "rows"]


def _threads() -> int:
    """At most 2, the cores this process may use (mpiexec binds each rank to one) and, when set,
    OMP_NUM_THREADS (what PyTorch's intra-op threads follow)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return min(2, n)


NUM_THREADS = _threads()
MIN_SPLIT = 1 << 16  # elements: below this a hand-off to the other thread costs more than it saves
_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # a forked child inherits _pool without its thread: it makes its own
_local = threading.local()  # .worker is True on the worker thread


def _as_worker(fn) -> None:
    _local.worker = True
    fn()


def both(mine, theirs) -> None:
    """Call theirs() on npnn's worker thread and mine() on this one; return once both are done."""
    global _pool, _pool_pid
    if getattr(_local, "worker", False):  # called from a half already on the worker: waiting on it would deadlock
        mine()
        theirs()
        return
    if _pool is None or _pool_pid != os.getpid():
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npnn")
        _pool_pid = os.getpid()
    future = _pool.submit(_as_worker, theirs)
    try:
        mine()
    finally:
        future.result()


def worth(n: int, size: int) -> bool:
    """Whether rows(fn, n, size) splits: two threads, two rows or more, size elements >= MIN_SPLIT."""
    return NUM_THREADS > 1 and n > 1 and size >= MIN_SPLIT


def rows(fn, n: int, size: int) -> None:
    """fn(start, stop) over the rows [0, n): two halves on two threads when the work (size
    elements in all) is worth the hand-off, else one call fn(0, n)."""
    if not worth(n, size):
        fn(0, n)
        return
    half = n // 2
    both(lambda: fn(0, half), lambda: fn(half, n))
