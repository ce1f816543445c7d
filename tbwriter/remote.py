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
naming the URL, is raised by the flush or close that uploaded, or for a background upload by
the next add (which then does not queue its record), and the next flush, timer tick or close
tries again, in order. While `MAX_PENDING` bytes wait, new records are refused with that
error, so memory stays bounded.

Secrets: messages name URLs through `redact()`, which removes logins, secret-looking query
parameters and the secret strings of the URL and storage_options (`secret_strings()`).
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
from urllib.parse import unquote

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
# Secrets in text: a URL's user:password@ (RFC 3986 userinfo: no / ? # before the @), and the
# value of a query parameter or storage option whose name says it is one.
_USERINFO = re.compile(r"(://)[^/?#@\s]*@")
_SECRET_NAME = r"key|secret|token|passw|pwd|signature|sig|credential|auth|session"
_SECRET_PARAM = re.compile(rf"([?&;][^=&;#\s]*(?:{_SECRET_NAME})[^=&;#\s]*=)[^&;#\s'\"]*", re.IGNORECASE)
_SECRET_OPTION = re.compile(_SECRET_NAME, re.IGNORECASE)


class UnsupportedURLError(ValueError):
    """A URL whose scheme is unknown or whose implementation is not installed."""


def is_url(path: str) -> bool:
    """Whether path is a URL (scheme://...) rather than a local path."""
    return "://" in path


def secret_strings(url: str, storage_options: dict | None = None) -> tuple[str, ...]:
    """The secret strings of url's userinfo and of storage_options (values under secret-like names), longest first."""
    found = set()
    match = re.match(r"[^:/]+://([^/?#@\s]*)@", url)
    if match:
        userinfo = match.group(1)
        found.update([userinfo, *userinfo.split(":", 1)])

    def walk(value, secret: bool):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, secret or bool(_SECRET_OPTION.search(str(k))))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, secret)
        elif secret and isinstance(value, (str, bytes)):
            found.add(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)

    walk(storage_options or {}, False)
    found |= {unquote(s) for s in found}
    # Shorter strings would blank out ordinary words of a message without hiding a secret.
    return tuple(sorted((s for s in found if len(s) >= 3), key=len, reverse=True))


def redact(text: str, hidden: tuple[str, ...] = ()) -> str:
    """text without URL userinfo, secret-looking query parameters and the strings in hidden (see secret_strings())."""
    for secret in hidden:
        text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\1***@", text)
    return _SECRET_PARAM.sub(r"\1***", text)


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
    hidden = secret_strings(url, storage_options)
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as e:
        raise UnsupportedURLError(
            f"logdir {redact(url)}: the {scheme}:// implementation is not installed ({e}); "
            f"for s3:// and gs:// pip install 'npnn-tbwriter[remote]'"
        ) from None
    except ValueError as e:
        if "Protocol not known" not in str(e):
            raise ValueError(f"logdir {redact(url)}: {redact(str(e), hidden)}") from None
        raise UnsupportedURLError(
            f"logdir {redact(url)}: unsupported URL scheme {scheme}:// (no fsspec implementation is registered for it)"
        ) from None
    except TypeError as e:  # an option the implementation does not take
        raise TypeError(f"storage_options for {redact(url)}: {redact(str(e), hidden)}") from None
    except Exception as e:  # ftp:// and the like log in here
        raise _store_error(e, "cannot connect", url, hidden) from None


def _store_error(e: BaseException, message: str, url: str, hidden: tuple[str, ...]) -> EventFileError:
    """An EventFileError naming url, with e's type and text (errno EIO when e has none), secrets removed.

    e is not chained: a client's own message may quote the URL with its password.
    """
    text = redact(" ".join(f"{message}: {type(e).__name__}: {e}".split()), hidden)  # one line
    return EventFileError(getattr(e, "errno", None) or errno.EIO, text, redact(url, hidden))


class ObjectState:
    """A remote writer's queue and uploads, shared with its timer thread and finalizer.

    Same interface as events._FileState: `buf` takes framed records without the lock,
    `write_locked()` (lock held) uploads them, `dead` is what every call raises once closed.
    """

    __slots__ = (
        "url",
        "hidden",
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
        "refusal",
        "uploaded",
        "stop",
        "thread",
        "__weakref__",
    )

    def __init__(self, logdir: str, filename_suffix: str, storage_options: dict | None):
        self.fs, self.root = filesystem(logdir, storage_options)
        self.hidden = secret_strings(logdir, storage_options)  # removed from every message
        self.url = redact(logdir.rstrip("/"), self.hidden)  # for messages only: fs and root do the I/O
        if _SCHEME.match(logdir).group(1) not in _BUCKET_SCHEMES:
            try:
                self.fs.makedirs(self.root, exist_ok=True)
            except Exception as e:
                raise _store_error(e, "tbwriter could not create the log directory", self.url, self.hidden) from None
        self.prefix = "events.out.tfevents.%010d.%s.%s.%06d-%s." % (
            time.time(),
            socket.gethostname(),
            os.getpid(),
            next(_uid),
            os.urandom(3).hex(),
        )
        self.suffix = filename_suffix
        self.seq = 0
        self.path = self.url + "/" + self.prefix + "00000000" + self.suffix
        self.buf = []  # framed records not yet in an object (and Pendings: events.ready)
        self.waiting = collections.deque()  # the Pendings in buf, in order
        self.size = 0  # bytes in buf and sealed (approximate between uploads: appends do not lock)
        self.sealed = []  # (name, bytes) objects whose upload failed, retried first and in order
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.dead = None  # None while usable, else the WriterStateError every call raises
        self.closed = False
        self.error = None  # the last upload's error, None once an upload succeeds
        self.refusal = None  # a background upload failed: the next add raises this, refusing its record
        self.uploaded = 0  # bytes stored
        self.stop = threading.Event()
        self.thread = None

    def raise_dead(self):
        """Raise why this call cannot go on: the writer is closed (or forked), or its upload just failed."""
        raise self.dead if self.dead is not None else self.error

    def append(self, record: bytes):
        """Queue one framed record; upload when OBJECT_BYTES are queued; refuse beyond MAX_PENDING.

        After a failed background upload (timer thread, OBJECT_BYTES), the next call raises that
        error once and does not queue its record: an exception means the record was not taken.
        """
        if self.dead is not None:
            raise self.dead
        refusal = self.refusal
        if refusal is not None:
            self.refusal = None
            raise refusal
        if self.size >= MAX_PENDING and self.error is not None:
            raise _store_error(
                self.error,
                f"tbwriter refused a record: {self.size} bytes wait for the store, which failed",
                self.url,
                self.hidden,
            )
        self.buf.append(record)
        self.size += len(record)
        if self.size >= OBJECT_BYTES and self.error is None:
            self.background_upload()
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
        self.refusal = None  # this upload's outcome supersedes a background one's
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
                    self.hidden,
                )
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

    def background_upload(self):
        """An upload no caller waits for (timer thread, OBJECT_BYTES): a failure refuses the next add's record."""
        with self.lock:
            if not self.closed and not self.write_locked():
                e = self.error
                self.refusal = EventFileError(
                    e.errno,
                    f"tbwriter did not queue this record: a background upload failed; the records queued "
                    f"before it are kept and retried at the next flush, timer tick or close ({e.strerror})",
                    e.filename,
                )

    timer_flush = background_upload

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
                self.dead = WriterStateError(f"the event writer of {self.url} is closed; create a new writer")
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
            f"this writer of {self.url} belongs to process {self.pid} and was inherited through "
            f"fork() by process {os.getpid()}; create a new writer in the child process"
        )


def event_files(url: str, storage_options: dict | None = None) -> dict[str, list[str]]:
    """Map each run under url (relative directory, '.' for url itself) to its event objects' URLs, sorted."""
    fs, root = filesystem(url, storage_options)
    base = root.rstrip("/")
    try:
        fs.invalidate_cache()  # listings are cached; a reader wants the store as it is now
        if fs.isfile(root):
            return {".": [url]}
        found = fs.find(root)
    except Exception as e:
        text = " ".join(f"cannot list {url}: {e}".split())  # one line
        raise OSError(errno.EIO, redact(text, secret_strings(url, storage_options))) from None
    if not found:
        raise FileNotFoundError(f"logdir: no such file or directory: {redact(url)}")
    runs: dict[str, list[str]] = {}
    for path in sorted(found):
        rel = path[len(base) :].lstrip("/") if path.startswith(base) else path
        directory, name = posixpath.split(rel)
        if "tfevents" in name:
            # Built from url, not fs.unstrip_protocol: that drops the host and login of ftp:// and the like.
            runs.setdefault(directory or ".", []).append(url.rstrip("/") + "/" + rel)
    return dict(sorted(runs.items()))


def open_object(url: str, storage_options: dict | None = None):
    """Open an object for reading without read-ahead: each read() is one ranged GET."""
    fs, path = filesystem(url, storage_options)
    try:
        return fs.open(path, "rb", cache_type="none")
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such object", redact(url)) from None
    except Exception as e:
        raise _store_error(e, "cannot open", url, secret_strings(url, storage_options)) from None
