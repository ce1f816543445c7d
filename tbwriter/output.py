"""Files a user names as outputs (exports, checkpoints): whole or not at all, never replacing a non-regular file.

- absent or a regular file (also through a symlink, which stays a symlink): written to a fresh
  temp file beside the file, fsynced and renamed over it on success;
- a FIFO or a character device (/dev/null, /dev/stdout on a terminal or a pipe): written into
  as a stream, the node itself untouched;
- "-" when the caller passes `stdout`: written to that stream;
- anything else (a directory, a block device, a socket): refused, naming the path.
"""

import errno
import io
import os
import secrets
import stat
from typing import IO, Optional

from tbwriter.reader import _file_kind


class Output:
    """One output file: open(), write to .file, then commit() on success or discard() on failure."""

    def __init__(self, path, text: bool = False, stdout: Optional[IO] = None):
        self.path = os.fspath(path)
        self.text = text
        self.stdout = stdout  # what "-" names; without it "-" is a file of that name
        self.tmp = None  # the temp file's name, once chosen
        self.target = None  # what the temp file is renamed to (the symlink's file for a symlink)
        self.streamed = False  # True: .file writes straight into a FIFO, a device or stdout
        self.file = None

    def open(self) -> None:
        """Open the stream, or create the temp file; OSErrors name the path."""
        if self.path == "-" and self.stdout is not None:
            self.file, self.streamed = self.stdout, True
            return
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as e:
            raise OSError(e.errno, e.strerror, self.path) from e
        if mode is None or stat.S_ISREG(mode):
            raw = io.FileIO(self._create_temp(mode), "w")
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            raw = _Stream(self._open_stream(), "w")
        else:
            raise OSError(
                errno.EINVAL, f"{_file_kind(mode)}, not a regular file, a FIFO or a character device", self.path
            )
        self.file = io.BufferedWriter(raw)
        if self.text:
            self.file = io.TextIOWrapper(self.file, encoding="utf-8", newline="")

    def _create_temp(self, mode: Optional[int]) -> int:
        """A new temp file beside the target (O_EXCL | O_NOFOLLOW, random name): nothing planted is ever opened."""
        self.target = os.path.realpath(self.path)  # a symlink keeps pointing at the file, which gets the new content
        folder, name = os.path.split(self.target)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(100):
            # The name is kept before the file exists, so an interrupt at any point leaves
            # discard() a name to remove (mkstemp's name arrives only after it has created the file).
            self.tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(self.tmp, flags, 0o666)  # 0666 minus the umask, as open() gives
                break
            except FileExistsError:
                continue
            except OSError as e:
                self.tmp = None
                raise OSError(e.errno, e.strerror, self.path) from e
        else:
            self.tmp = None
            raise OSError(errno.EEXIST, "no free temporary name beside it after 100 tries", self.path)
        if mode is not None:
            os.fchmod(fd, stat.S_IMODE(mode))  # a replaced file keeps its permissions (a private checkpoint stays so)
        return fd

    def _open_stream(self) -> int:
        """Open a FIFO or character device for writing (a FIFO waits for its reader, as a shell's > does)."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, e.strerror, self.path) from e
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):  # swapped meanwhile: never write in place
            os.close(fd)
            raise OSError(errno.EINVAL, f"changed while being opened, now {_file_kind(mode)}", self.path)
        self.streamed = True
        return fd

    def commit(self) -> None:
        """Finish: flush a stream; flush, fsync and rename a temp file over the target."""
        try:
            self.file.flush()
            if self.streamed:
                if self.file is not self.stdout:
                    self.file.close()
                return
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.target)
            self.tmp = None
        except OSError as e:
            raise OSError(e.errno, e.strerror, self.path) from e

    def discard(self) -> None:
        """Close, and remove the temp file if it got that far (what a stream got cannot be taken back)."""
        try:
            if self.file is not None and self.file is not self.stdout:
                self.file.close()
        except OSError:
            pass  # e.g. the disk filled: the file goes anyway
        try:
            if self.tmp is not None:
                os.unlink(self.tmp)
        except FileNotFoundError:
            pass


class _Stream(io.FileIO):
    """A FIFO or a device written front to back: /dev/null claims to seek, and np.savez's zip would then seek in it."""

    def seekable(self) -> bool:
        return False

    def seek(self, *args):
        raise io.UnsupportedOperation("seek: a stream")

    def tell(self):
        raise io.UnsupportedOperation("tell: a stream")


def write_output(path, write, text: bool = False) -> None:
    """Call write(file) on the output `path` (see Output), committing only if it returns."""
    out = Output(path, text)
    try:
        out.open()
        write(out.file)
        out.commit()
    finally:
        out.discard()
