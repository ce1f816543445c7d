"""Heavy summaries encoded off the caller's thread, written in call order.

SummaryWriter hands each heavy value (a large histogram, an image or grid, audio, video, an
embedding's files, a figure's PNG) to its one worker thread as a job over a private copy of
the data. The job's record takes its place in the event file's queue at once (a Pending), so
every record queued after it, scalars included, waits behind it: the file holds events in
call order. The worker encodes, then puts the record in its place under the file's lock.

    caller: copy the array -> submit(): Pending into file.buf, job into the FIFO -> return
    worker: job -> Event bytes -> framed record -> file.fill(Pending, record)

wait() (flush, close) returns once every job submitted before it is done. A job that raises
is kept as an error naming the call, tag and step, raised by the writer's next call; its
place is dropped and later records are written. Jobs hold at most max_bytes of raw values:
past that, submit() blocks until the worker catches up.
"""

import collections
import os
import threading
import weakref

import numpy as np

from tbwriter.wire import frame

# Copies of at least this many bytes go into buffers of finished jobs when one of the same size
# is spare: fresh memory costs a page fault per 4 KiB (4x a 4 MB copy's time, measured here).
POOL_MIN_BYTES = 1 << 20

_live = weakref.WeakSet()  # every encoder, so a fork can reset them in the child


class Pending:
    """The place of one record in an event file's queue while the worker encodes it."""

    __slots__ = ("encoder", "seq")

    def __init__(self, encoder: "Encoder", seq: int):
        self.encoder = encoder
        self.seq = seq

    def __len__(self) -> int:
        return 0  # no bytes of the queue yet (remote.ObjectState sums the lengths of its queue)

    def wait(self) -> bool:
        """Wait until the worker has filled or dropped this place; False (at once) on the worker itself."""
        return self.encoder.wait(self.seq)


def _error(e: BaseException, what: str) -> BaseException:
    """e's type with a message naming the call that failed on the worker (RuntimeError if it cannot be built)."""
    msg = f"{what} failed on tbwriter's encoding thread: {e}"
    try:
        err = type(e)(e.errno, msg, e.filename) if isinstance(e, OSError) else type(e)(msg)
    except Exception:
        err = RuntimeError(msg)
    err.__cause__ = e
    return err


class Encoder:
    """One worker thread (started at the first job) running jobs in submission order."""

    def __init__(self, max_bytes: int):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"async_max_bytes: expected a positive int of bytes, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.errors = []  # failed jobs' errors, oldest first; the writer raises them one per call
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        # RLock: a finalizer run by the worker's own garbage collection may submit or wait.
        self.cond = threading.Condition(threading.RLock())
        self.jobs = collections.deque()
        self.queued_bytes = 0  # raw bytes held by jobs not finished yet
        self.submitted = self.finished = 0  # sequence numbers: jobs are finished in order
        self.thread = None
        self.stopping = False
        self.spare = []  # uint8 buffers of finished jobs' copies, for the next copies

    def copy(self, arr: np.ndarray) -> tuple:
        """(a private copy of arr, its buffer to pass to submit, or None): a spare buffer is reused."""
        n = arr.nbytes
        if n < POOL_MIN_BYTES:
            return np.array(arr, copy=True), None
        with self.cond:
            buf = next((b for b in self.spare if b.nbytes == n), None)
            if buf is not None:
                self.spare = [b for b in self.spare if b is not buf]
        if buf is None:
            buf = np.empty(n, np.uint8)
        out = buf.view(arr.dtype).reshape(arr.shape)
        np.copyto(out, arr)
        return out, buf

    def submit(self, state, encode, nbytes: int, what: str, buffers: tuple = ()) -> None:
        """Queue encode() (-> Event bytes, or None for no record) for state's file, or for no file (state None)."""
        with self.cond:
            while self.queued_bytes and self.queued_bytes + nbytes > self.max_bytes:
                self.cond.wait()  # the memory bound: one job may exceed it alone, never two
            self.submitted += 1
            seq = self.submitted
            pending = None
            if state is not None:
                pending = Pending(self, seq)
                state.waiting.append(pending)  # first: a write never sees a Pending it does not know
                state.buf.append(pending)
            self.jobs.append((seq, state, pending, encode, nbytes, what, buffers))
            self.queued_bytes += nbytes
            self.stopping = False
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="tbwriter-encode", daemon=True)
                self.thread.start()
            self.cond.notify_all()

    def _run(self) -> None:
        """The worker: encode each job, put its record in place, count it finished; never dies of a job."""
        cond, jobs = self.cond, self.jobs
        while True:
            with cond:
                while not jobs:
                    if self.stopping:
                        if self.thread is threading.current_thread():
                            self.thread = None
                        return
                    cond.wait()
                seq, state, pending, encode, nbytes, what, buffers = jobs.popleft()
            record = None
            try:
                try:
                    data = encode()
                    record = None if data is None else frame(data)
                except BaseException as e:  # kept for the caller's next call; the worker goes on
                    self.errors.append(_error(e, what))
                    buffers = ()  # its traceback may still show the values: not reused
                if pending is not None:
                    state.fill(pending, record)
            except BaseException as e:
                self.errors.append(_error(e, what))
            finally:
                del encode  # the job's last reference to its buffers: they may be reused now
                with cond:
                    self.finished = seq
                    self.queued_bytes -= nbytes
                    # Spare buffers hold at most a quarter of the bound, newest kept.
                    spare, room = self.spare + list(buffers), self.max_bytes // 4
                    while spare and sum(b.nbytes for b in spare) > room:
                        del spare[0]
                    self.spare = spare
                    cond.notify_all()

    def wait(self, seq: "int | None" = None) -> bool:
        """Return once job seq (default: every job submitted so far) is done; False on the worker thread."""
        with self.cond:
            if seq is None:
                seq = self.submitted
            if self.thread is threading.current_thread():
                return self.finished >= seq  # the worker cannot wait for itself
            while self.finished < seq:
                self.cond.wait()
        return True

    def close(self) -> None:
        """Wait for every job, then end the worker thread; a later submit starts a new one."""
        self.wait()
        with self.cond:
            t = self.thread
            self.stopping = True
            self.cond.notify_all()
        if t is not None and t is not threading.current_thread():
            t.join()
        self.spare = []

    def raise_error(self) -> None:
        """Raise the oldest error of a failed job, if any (each is raised once)."""
        if self.errors:
            raise self.errors.pop(0)


def _after_fork_in_child() -> None:
    # The worker does not exist in the child; the parent's files refuse the child's calls.
    for enc in list(_live):
        enc._reset()
        enc.errors.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
