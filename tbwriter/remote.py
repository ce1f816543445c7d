"""Logdirs on object storage: any fsspec URL (s3://, gs://, memory://, ...), written append-free.

Imported only for URLs; fsspec and the scheme's implementation (s3fs, gcsfs) are imported
inside `filesystem()`. Credentials and endpoints come from where the implementation looks
(for S3: the AWS environment and config files, AWS_ENDPOINT_URL) or from `storage_options`.

Objects cannot be appended to, so a writer never rewrites one: each upload stores only the
records queued since the last one, as a new immutable event file in the run directory,
named `events.out.tfevents.<time>.<host>.<pid>.<writer>.<seq><suffix>` with a zero-padded
`seq`, so the names sort in write order and TensorBoard reads them as one series. Total bytes
uploaded equal the records' bytes. An upload happens at `flush()`, `close()`, every
`flush_secs` (timer thread) and whenever `OBJECT_BYTES` are queued; `max_queue` does not
apply (it would make an object of every ten records). Each object is one PUT (or a multipart
upload completed at the end), so a killed process never leaves a partial object visible.

Faults: an upload is retried with backoff (at most `ATTEMPTS` tries, none started after
`RETRY_SECS`). If it still fails, its records stay queued under the same object name (a retry
of an upload whose answer was lost rewrites identical bytes, never duplicates), the error,
naming the URL, is raised by the next call (as for a full disk), and the next flush, timer
tick or close tries again, in order. While `MAX_PENDING` bytes wait, new records are refused
with that error, so memory stays bounded.
"""

from __future__ import annotations

import collections
import errno
import os
import posixpath
import re
import socket
import threading
import time

from tbwriter.events import EventFileError, WriterStateError, _FileState, _uid, put_in_place, ready, wait_encoded

OBJECT_BYTES = 4 << 20  # queued bytes that trigger an upload without a flush
MAX_PENDING = 64 << 20  # queued bytes beyond which records are refused while the store fails
ATTEMPTS = 4  # tries per upload
FIRST_DELAY = 0.5  # seconds before the first retry; doubles, at most MAX_DELAY
MAX_DELAY = 4.0
RETRY_SECS = 30.0  # no new try starts this long after the first
# Errors a retry cannot fix (missing bucket, no permission, a bad option).
_PERMANENT = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, TypeError)

# Buckets are never created (makedirs would): a mistyped bucket name must be an error.
_BUCKET_SCHEMES = ("s3", "s3a", "gs", "gcs")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"(://)[^/@]*@")


class UnsupportedURLError(ValueError):
    """A URL whose scheme is unknown or whose implementation is not installed."""


def is_url(path: str) -> bool:
    """Whether path is a URL (scheme://...) rather than a local path."""
    return "://" in path


def redact(url: str) -> str:
    """The URL without user:password@, for messages."""
    return _USERINFO.sub(r"\1***@", url)


def filesystem(url: str, storage_options: dict | None = None):
    """The fsspec filesystem for url and the path inside it; UnsupportedURLError naming what to install."""
    match = _SCHEME.match(url)
    if match is None:
        raise UnsupportedURLError(f"logdir: expected a local path or a URL scheme://..., got {redact(url)!r}")
    scheme = match.group(1)
    try:
        import fsspec
    except ImportError:
        raise UnsupportedURLError(
            f"logdir {redact(url)}: {scheme}:// URLs need fsspec: pip install 'npnn-tbwriter[remote]'"
        ) from None
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as e:
        raise UnsupportedURLError(
            f"logdir {redact(url)}: the {scheme}:// implementation is not installed ({e}); "
            f"for s3:// and gs:// pip install 'npnn-tbwriter[remote]'"
        ) from None
    except ValueError as e:
        if "Protocol not known" not in str(e):
            raise
        raise UnsupportedURLError(
            f"logdir {redact(url)}: unsupported URL scheme {scheme}:// (no fsspec implementation is registered for it)"
        ) from None


def _store_error(e: BaseException, message: str, url: str) -> EventFileError:
    """An EventFileError naming url, caused by e (errno EIO when e has none)."""
    err = EventFileError(getattr(e, "errno", None) or errno.EIO, f"{message}: {e}", redact(url))
    err.__cause__ = e
    return err


class ObjectState:
    """A remote writer's queue and uploads, shared with its timer thread and finalizer.

    Same interface as events._FileState: `buf` takes framed records without the lock,
    `write_locked()` (lock held) uploads them, `dead` is what the next call raises.
    """

    __slots__ = (
        "url",
        "fs",
        "root",
        "prefix",
        "suffix",
        "seq",
        "path",
        "buf",
        "waiting",
        "size",
        "sealed",
        "lock",
        "pid",
        "dead",
        "closed",
        "error",
        "uploaded",
        "stop",
        "thread",
        "__weakref__",
    )

    def __init__(self, logdir: str, filename_suffix: str, storage_options: dict | None):
        self.fs, self.root = filesystem(logdir, storage_options)
        self.url = logdir.rstrip("/")
        if _SCHEME.match(logdir).group(1) not in _BUCKET_SCHEMES:
            try:
                self.fs.makedirs(self.root, exist_ok=True)
            except Exception as e:
                raise _store_error(e, "tbwriter could not create the log directory", self.url) from None
        self.prefix = "events.out.tfevents.%010d.%s.%s.%s-%s." % (
            time.time(),
            socket.gethostname(),
            os.getpid(),
            next(_uid),
            os.urandom(3).hex(),
        )
        self.suffix = filename_suffix
        self.seq = 0
        self.path = self._object_url(0)
        self.buf = []  # framed records not yet in an object (and Pendings: events.ready)
        self.waiting = collections.deque()  # the Pendings in buf, in order
        self.size = 0  # bytes in buf and sealed (approximate between uploads: appends do not lock)
        self.sealed = []  # (name, bytes) objects whose upload failed, retried first and in order
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.dead = None  # None while usable, else the exception the next call raises
        self.closed = False
        self.error = None  # the last upload's error, None once an upload succeeds
        self.uploaded = 0  # bytes stored
        self.stop = threading.Event()
        self.thread = None

    def _object_url(self, seq: int) -> str:
        return self.url + "/" + self.prefix + "%08d" % seq + self.suffix

    def raise_dead(self):
        """Raise the reason for refusing this call; a store error is raised once, then calls go on."""
        err = self.dead
        if not self.closed and err is self.error:
            self.dead = None
        raise err

    def append(self, record: bytes):
        """Queue one framed record; upload when OBJECT_BYTES are queued; refuse beyond MAX_PENDING."""
        if self.dead is not None:
            self.raise_dead()
        if self.size >= MAX_PENDING and self.error is not None:
            raise _store_error(
                self.error, f"tbwriter refused a record: {self.size} bytes wait for the store, which failed", self.url
            )
        self.buf.append(record)
        self.size += len(record)
        if self.size >= OBJECT_BYTES and self.error is None:
            with self.lock:
                if not self.closed:
                    self.write_locked()  # a failure shows in self.dead, raised by the next call
        if self.closed:
            self.check_appended(record)

    def fill(self, pending, record: "bytes | None"):
        """The worker's record in its place (None: the place goes); upload once OBJECT_BYTES are queued."""
        with self.lock:
            put_in_place(self.buf, self.waiting, pending, record)
            self.size += len(record or b"")
            if self.size >= OBJECT_BYTES and self.error is None and not self.closed:
                self.write_locked()

    def check_appended(self, record: bytes):
        """After a close raced with an append: raise if the record was not stored."""
        with self.lock:
            if any(r is record for r in self.buf):
                raise self.dead

    def write_locked(self, check_deleted: bool = False) -> bool:
        """Upload every queued record as new objects, in order; call with `lock` held; False on failure."""
        buf = self.buf
        n = ready(buf, self.waiting)
        if n:
            obj = (self.prefix + "%08d" % self.seq + self.suffix, b"".join(buf[:n]))
            self.seq += 1
            # No call between these two stores, so no KeyboardInterrupt can split them.
            self.sealed.append(obj)
            del buf[:n]
        sealed = self.sealed
        while sealed:
            name, data = sealed[0]
            try:
                self._put(self.root.rstrip("/") + "/" + name, data)
            except Exception as e:
                self.error = _store_error(
                    e,
                    f"tbwriter could not store {len(data)} bytes of events (kept, retried at the next "
                    f"flush; {sum(len(d) for _, d in sealed)} bytes wait)",
                    self.url + "/" + name,
                )
                if not self.closed:
                    self.dead = self.error
                self.size = sum(map(len, self.buf)) + sum(len(d) for _, d in sealed)
                return False
            del sealed[0]
            self.uploaded += len(data)
        self.error = None
        self.size = sum(map(len, self.buf))
        return True

    def _put(self, path: str, data: bytes):
        """Store one whole object, retrying with backoff, bounded in count and time."""
        start = time.monotonic()
        delay = FIRST_DELAY
        for attempt in range(ATTEMPTS):
            try:
                self.fs.pipe_file(path, data)
                return
            except _PERMANENT:
                raise
            except Exception:
                if attempt + 1 == ATTEMPTS or time.monotonic() + delay - start > RETRY_SECS:
                    raise
            time.sleep(delay)
            delay = min(2 * delay, MAX_DELAY)

    def timer_flush(self):
        """The timer thread's upload: errors wait for the caller's next call."""
        with self.lock:
            if not self.closed:
                self.write_locked()

    def close(self):
        """Upload what is queued and refuse later calls; raise (keeping the records) if the store fails.

        A failed close can be called again to retry.
        """
        self.stop.set()
        t = self.thread
        if t is not None and t is not threading.current_thread():
            t.join()
        wait_encoded(self)
        with self.lock:
            if not self.closed:
                self.dead = WriterStateError(f"the event writer of {redact(self.url)} is closed; create a new writer")
                self.closed = True  # after dead: an append racing with this sees dead first
            if self.pid == os.getpid() and not self.write_locked():
                raise self.error

    finalize = _FileState.finalize  # close at exit or collection; a lost upload goes to stderr

    def after_fork_in_child(self):
        """In a fork()ed child: refuse every call, never upload the parent's queue."""
        self.lock = threading.Lock()
        self.buf = []
        self.waiting = collections.deque()
        self.sealed = []
        self.thread = None
        self.closed = True
        self.dead = WriterStateError(
            f"this writer of {redact(self.url)} belongs to process {self.pid} and was inherited through "
            f"fork() by process {os.getpid()}; create a new writer in the child process"
        )


def event_files(url: str, storage_options: dict | None = None) -> dict[str, list[str]]:
    """Map each run under url (relative directory, '.' for url itself) to its event objects' URLs, sorted."""
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    try:
        fs.invalidate_cache()  # listings are cached; a reader wants the store as it is now
        if fs.isfile(root):
            return {".": [url]}
        found = fs.find(root)
    except Exception as e:
        raise OSError(errno.EIO, f"cannot list {redact(url)}: {e}") from e
    if not found:
        raise FileNotFoundError(f"logdir: no such file or directory: {redact(url)}")
    runs: dict[str, list[str]] = {}
    for path in sorted(found):
        directory, name = posixpath.split(path)
        if "tfevents" in name:
            run = posixpath.relpath(directory, root) if directory != root else "."
            runs.setdefault(run, []).append(fs.unstrip_protocol(path))
    return dict(sorted(runs.items()))


def open_object(url: str, storage_options: dict | None = None):
    """Open an object for reading without read-ahead: each read() is one ranged GET."""
    fs, path = filesystem(url, storage_options)
    return fs.open(path, "rb", cache_type="none")
