"""Event files: unique naming, buffering, flushing and closing.

Loss window: framed records wait in memory until `max_queue` of them are pending or a
timer thread's `flush_secs` period ends, whichever comes first; `flush()` and `close()`
hand everything to the OS (`os.write`) before they return, so a `kill -9` of the process
loses nothing they returned for. They do not `fsync`: a power cut or OS crash can still
lose what the OS had not written to disk yet.

Errors: a failed write (disk full, file too large, the file deleted) makes the writer
unusable; the error, naming the file, is raised by that call or, if the timer thread hit
it, by the next write/flush/close. Nothing is written after a failure, so the file never
holds a record after a torn one.

A URL logdir (s3://, gs://, any fsspec URL) is written as immutable objects instead, by
tbwriter.remote, imported only then; its faults are retried rather than final (see there).

fork(): a writer inherited by a child process refuses every call there (WriterStateError),
so the child can never write into, or flush its copy of the buffer into, the parent's file;
create a new writer in the child instead.

Records still being encoded (tbwriter.encoder) hold their place in the queue as a Pending:
writes stop before the first one, and flush/close wait for the worker to fill them.
"""

import collections
import itertools
import os
import socket
import threading
import time
import weakref

from tbwriter.proto import event_pb2
from tbwriter.wire import frame

# O_EXCL: two writers can never open (and truncate) the same name.
_OPEN_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
_uid = itertools.count(1)  # writers of one process in the same second, zero-padded so names sort in creation order
_live_states = weakref.WeakSet()  # every open file's state, so a fork can disable them in the child


class WriterStateError(RuntimeError):
    """A call on a writer that was closed, or that was inherited through fork()."""


class EventFileError(OSError):
    """Writing an event file failed; `filename` names the file."""


def _create_file(logdir: str, filename_suffix: str):
    """Create a new event file that no other writer or process has; return (path, fd)."""
    host = socket.gethostname()
    while True:
        name = "events.out.tfevents.%010d.%s.%s.%06d%s" % (time.time(), host, os.getpid(), next(_uid), filename_suffix)
        path = os.path.join(logdir, name)
        try:
            fd = os.open(path, _OPEN_FLAGS, 0o666)
        except FileExistsError:
            continue
        return path, fd


class _FileState:
    """What a writer's timer thread and finalizer share: never a reference to the writer."""

    __slots__ = (
        "path",
        "fd",
        "buf",
        "lock",
        "max_queue",
        "pid",
        "dead",
        "error",
        "reported",
        "stop",
        "thread",
        "size",
        "unsure",
        "waiting",
        "__weakref__",
    )

    def __init__(self, path: str, fd: int, max_queue: int):
        self.path = path
        self.fd = fd
        self.buf = []  # framed records not yet handed to the OS (and Pendings, see ready())
        self.waiting = collections.deque()  # the Pendings in buf, in order
        self.size = 0  # bytes of the file written by write_locked
        self.unsure = False  # a write was interrupted: how much of it is in the file is unknown
        self.lock = threading.Lock()
        self.max_queue = max_queue
        self.pid = os.getpid()
        self.dead = None  # None while usable, else the exception every call raises
        self.error = None  # the write error, if one happened
        self.reported = False  # whether `error` reached a caller already
        self.stop = threading.Event()
        self.thread = None

    @property
    def closed(self) -> bool:
        """Whether the writer can no longer write (closed, failed, or inherited through fork)."""
        return self.dead is not None

    def raise_dead(self):
        """Raise the reason this writer cannot be used."""
        if self.dead is self.error:
            self.reported = True
        raise self.dead

    def write_locked(self, check_deleted: bool = False):
        """Hand all buffered records to the OS in one write; call with `lock` held; False on failure.

        Appenders do not take the lock: list.append is atomic, and this only removes the
        records it wrote, so a record appended meanwhile stays for the next write. Records
        leave the buffer only once written: a KeyboardInterrupt anywhere leaves them for a
        retry, which asks the file's size how much of them the interrupted write got out.
        """
        buf = self.buf
        n = ready(buf, self.waiting)
        if not n:
            return True
        data = b"".join(buf[:n])
        try:
            done = 0
            if self.unsure:  # only this writer appends to the file, so its size is the truth
                done = os.fstat(self.fd).st_size - self.size
            self.unsure = True
            while done < len(data):  # a short write: the rest, or the error, comes next
                done += os.write(self.fd, memoryview(data)[done:])
            # No call between these three stores, so no KeyboardInterrupt can split them.
            self.size += len(data)
            del buf[:n]
            self.unsure = False
            # A file whose directory was removed still takes writes, into nowhere; checked at
            # flush, timer and close only (fstat costs as much as the write).
            if check_deleted and os.fstat(self.fd).st_nlink == 0:
                raise FileNotFoundError(2, "event file was deleted (its directory removed?)")
        except OSError as e:
            self.fail(e)
            return False
        return True

    def append(self, record: bytes):
        """Queue one framed record; write the queue out when max_queue are pending."""
        if self.dead is not None:
            self.raise_dead()
        buf = self.buf
        buf.append(record)
        if len(buf) >= self.max_queue:
            with self.lock:
                if self.dead is None:
                    self.write_locked()  # a failure shows as self.dead, checked next
        if self.dead is not None:
            self.check_appended(record)

    def fill(self, pending, record: "bytes | None"):
        """The worker's record in its place (None: the place goes); write once max_queue are ready."""
        with self.lock:
            put_in_place(self.buf, self.waiting, pending, record)
            if self.dead is None and len(self.buf) >= self.max_queue:
                self.write_locked()

    def check_appended(self, record: bytes):
        """After a close or failure raced with an append: raise if the record was not written."""
        with self.lock:  # the closer's final write has finished once we hold it
            if self.dead is self.error or any(r is record for r in self.buf):
                self.raise_dead()

    def fail(self, e: OSError):
        """Mark the writer broken by e: every later call raises a copy naming the file."""
        err = EventFileError(e.errno, f"tbwriter could not write the event file: {e.strerror or e}", self.path)
        err.__cause__ = e
        self.error = self.dead = err

    def timer_flush(self):
        """The timer thread's flush: errors wait for the caller's next call."""
        with self.lock:
            if self.dead is None:
                self.write_locked(True)  # a failure is kept in self.error for the next call

    def close(self):
        """Flush and close the file; raise a write error not yet raised to a caller.

        Safe to interrupt and retry: records stay buffered until written, and the fd is
        forgotten before it is closed, so a retry never closes a number reused by another file.
        """
        self.stop.set()
        t = self.thread
        if t is not None and t is not threading.current_thread():
            t.join()
        wait_encoded(self)
        with self.lock:
            if self.dead is None:
                # Set before the final write: an append racing with it sees it and checks.
                self.dead = WriterStateError(f"the event writer of {self.path} is closed; create a new writer")
            if self.fd >= 0 and self.pid == os.getpid():
                if self.error is None:
                    self.write_locked(True)
                fd, self.fd = self.fd, -1
                os.close(fd)
            if self.error is not None and not self.reported:
                self.reported = True
                raise self.error

    def finalize(self):
        """Close at interpreter exit or garbage collection; report a lost write on stderr."""
        if self.pid != os.getpid():
            return
        try:
            self.close()
        except EventFileError as e:
            import sys

            print(f"tbwriter: {e}", file=sys.stderr)

    def after_fork_in_child(self):
        """In a fork()ed child: refuse every call, never write the parent's buffer."""
        self.lock = threading.Lock()  # the parent's may have been held by another thread
        self.buf = []
        self.waiting = collections.deque()
        self.thread = None
        if self.dead is None or isinstance(self.dead, WriterStateError):
            self.dead = WriterStateError(
                f"this writer of {self.path} belongs to process {self.pid} and was inherited "
                f"through fork() by process {os.getpid()}; create a new writer in the child process"
            )
        if self.fd >= 0:
            try:
                os.close(self.fd)  # the child's copy only; the parent's stays open
            except OSError:
                pass
            self.fd = -1


def ready(buf: list, waiting) -> int:
    """How many records at the head of buf are encoded: all, or those before the first Pending."""
    n = len(buf)  # first: what is appended later cannot be counted in
    if waiting:
        try:
            return buf.index(waiting[0], 0, n)
        except ValueError:  # reserved but not yet in buf[:n]: every record there is encoded
            pass
    return n


def put_in_place(buf: list, waiting, pending, record: "bytes | None") -> None:
    """Replace pending in buf by record (or drop it); call with the lock held."""
    try:
        i = buf.index(pending)
    except ValueError:  # the queue was dropped (a fork()ed child)
        return
    if record is None:
        del buf[i]
    else:
        buf[i] = record
    waiting.remove(pending)


def wait_encoded(state) -> bool:
    """Wait until the worker has filled every place queued so far; False when called on the worker."""
    try:
        last = state.waiting[-1]
    except IndexError:
        return True
    return last.wait()


def _after_fork_in_child():
    for state in list(_live_states):
        state.after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_loop(ref, stop: threading.Event, flush_secs: float):
    """Timer thread: every flush_secs, hand pending records to the OS."""
    while not stop.wait(flush_secs):
        state = ref()
        if state is None:
            return
        try:
            state.timer_flush()
        except Exception as e:  # never die silently: the next call raises it
            state.error = state.dead = EventFileError(None, f"tbwriter's flush thread failed: {e!r}", state.path)
            return
        del state


class EventFileWriter:
    """One event file in logdir: buffered, thread-safe, closed at exit if left open."""

    def __init__(
        self,
        logdir,
        max_queue: int = 10,
        flush_secs: float = 120,
        filename_suffix: str = "",
        storage_options: "dict | None" = None,
    ):
        if not isinstance(max_queue, int) or isinstance(max_queue, bool):
            raise TypeError(f"max_queue: expected an int, got {type(max_queue).__name__}")
        if not flush_secs > 0:
            raise ValueError(f"flush_secs: expected a positive number of seconds, got {flush_secs!r}")
        if not isinstance(filename_suffix, str):
            raise TypeError(f"filename_suffix: expected a str, got {type(filename_suffix).__name__}")
        logdir = os.fspath(logdir)
        self.logdir = logdir
        remote = "://" in logdir
        if remote:  # a URL: object storage through fsspec, imported only here
            from tbwriter.remote import ObjectState

            s = ObjectState(logdir, filename_suffix, storage_options)
        elif storage_options is not None:
            raise ValueError(f"storage_options: only for URL logdirs (s3://...), got the local path {logdir!r}")
        else:
            os.makedirs(logdir, exist_ok=True)
            path, fd = _create_file(logdir, filename_suffix)
            s = _FileState(path, fd, max(1, max_queue))
        self._state = s
        self.path = path = s.path
        # The file_version record goes out at once: the file is never seen empty.
        s.buf.append(frame(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()))
        with s.lock:
            if not s.write_locked():
                if not remote:
                    os.close(fd)
                s.raise_dead()
        _live_states.add(s)
        s.thread = threading.Thread(
            target=_flush_loop,
            args=(weakref.ref(s), s.stop, float(flush_secs)),
            name=f"tbwriter-flush-{os.path.basename(path)}",
            daemon=True,
        )
        s.thread.start()
        self._finalizer = weakref.finalize(self, s.finalize)
        # Queue one already framed record: the scalar hot path's one call, the state's own append.
        self.write_framed = s.append

    def write_event(self, event: event_pb2.Event) -> None:
        """Queue one Event."""
        self.write_serialized(event.SerializeToString())

    def write_serialized(self, event_bytes: bytes) -> None:
        """Queue one already serialized Event."""
        self.write_framed(frame(event_bytes))

    def check_open(self) -> None:
        """Raise why this writer cannot write (closed, failed, or inherited through fork), if so."""
        s = self._state
        if s.dead is not None:
            s.raise_dead()

    def flush(self) -> None:
        """Hand every queued record to the OS before returning (no fsync)."""
        s = self._state
        wait_encoded(s)
        with s.lock:
            if s.dead is not None:
                s.raise_dead()
            if not s.write_locked(True):
                s.raise_dead()

    def close(self) -> None:
        """Flush and close the file; later writes raise. Closing twice is a no-op; retry an interrupted close."""
        s = self._state
        if s.pid != os.getpid():
            s.raise_dead()
        s.close()
        self._finalizer.detach()  # only now: an interrupted close leaves the finalizer to finish it
        _live_states.discard(s)

    @property
    def closed(self) -> bool:
        """Whether the writer can no longer write."""
        return self._state.closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
