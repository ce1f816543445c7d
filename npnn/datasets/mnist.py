"""MNIST from the four standard IDX files: found on disk, or downloaded, verified and cached.

Where the files are looked for: the `root` argument (`--data DIR`), else `$NPNN_DATA`, else
`~/.cache/npnn/mnist`. Each file may be gzipped (`name.gz`) or raw (`name`). Every file is
checked against the SHA-256 of its *decompressed* content, so the original .gz, a
recompressed .gz and the raw file all pass.
"""

from __future__ import annotations

import gzip
import http.client
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np

# Tried in order; each serves `<name>.gz`. yann.lecun.com is last: it often answers 403 now.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# SHA-256 of the decompressed content of the original distribution.
SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# IDX magic numbers: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


class DataError(ValueError):
    """A data file is corrupted, truncated, of the wrong kind or fails its checksum."""


class MissingDataError(FileNotFoundError):
    """Data files are missing and could not be downloaded."""


class MNIST(NamedTuple):
    """The four arrays: images float32 in [0, 1], labels int64."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def default_root() -> Path:
    """The directory used when none is given: $NPNN_DATA, else ~/.cache/npnn/mnist."""
    env = os.environ.get("NPNN_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "npnn" / "mnist"


def find_file(root: Path, name: str) -> Path | None:
    """The raw or gzipped file for `name` in root (raw preferred: no decompression), or None."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


# Deflate's best case is about 1032 output bytes per input byte: a bound on what a .gz can hold.
_GZIP_MAX_RATIO = 1032


def read_file(
    path: Path, name: str, checksums: Mapping[str, str] = SHA256, source: Path | str | None = None
) -> np.ndarray:
    """Read, decompress if gzipped, verify and parse one IDX file; DataError names `source` (default path).

    The header is read and checked first, sizes are checked against it before the data is
    read, and a gzip stream is decompressed only up to the size the header declares + 1 byte.
    """
    source = path if source is None else source
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(2) != b"\x1f\x8b":
            f.seek(0)
            return _read_idx(f, size, None, name, source, checksums)
        f.seek(0)
        try:
            with gzip.GzipFile(fileobj=f) as stream:
                return _read_idx(stream, None, size, name, source, checksums)
        except EOFError as e:
            raise DataError(f"{source}: truncated gzip stream ({e})") from None
        except (gzip.BadGzipFile, zlib.error) as e:
            raise DataError(f"{source}: corrupted gzip data ({e})") from None


def _read_upto(stream, out: memoryview) -> int:
    """Fill out from stream; return the number of bytes read (fewer only at the end of the stream)."""
    got = 0
    while got < len(out):
        n = stream.readinto(out[got : got + (1 << 20)])  # gzip's readinto reads into a temporary this big
        if not n:
            break
        got += n
    return got


def _read_idx(
    stream, raw_size: int | None, gz_size: int | None, name: str, source, checksums: Mapping[str, str]
) -> np.ndarray:
    """Parse the IDX content of `name` from stream (raw of raw_size bytes, or gzip of gz_size) and check its SHA-256."""
    magic = LABELS_MAGIC if "labels" in name else IMAGES_MAGIC
    ndim = magic & 0xFF
    header = bytearray(4 + 4 * ndim)
    got = _read_upto(stream, memoryview(header))
    if got < len(header):
        raise DataError(f"{source}: truncated IDX header: {got} bytes, expected at least {len(header)}")
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        raise DataError(f"{source}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} for {name}")
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise DataError(f"{source}: images of {dims[1]}x{dims[2]} pixels, expected 28x28")
    count = math.prod(dims)
    if raw_size is not None and raw_size - len(header) != count:
        what = "truncated" if raw_size - len(header) < count else "trailing bytes"
        raise DataError(f"{source}: {what}: {raw_size - len(header)} data bytes, expected {count} for shape {dims}")
    if gz_size is not None and len(header) + count > _GZIP_MAX_RATIO * gz_size:
        raise DataError(
            f"{source}: header declares shape {dims} ({count} data bytes), more than a "
            f"{gz_size}-byte gzip file can hold"
        )
    data = np.empty(count + 1, dtype=np.uint8)  # pages are touched only as data arrives
    got = _read_upto(stream, memoryview(data))
    if got != count:
        what = "truncated" if got < count else "trailing bytes"
        held = f"{got}" if got < count else f"more than {count}"
        raise DataError(f"{source}: {what}: {held} data bytes, expected {count} for shape {dims}")
    data = data[:count]
    digest = hashlib.sha256(header)
    digest.update(data)
    if digest.hexdigest() != checksums[name]:
        raise DataError(f"{source}: SHA-256 mismatch for {name}: got {digest.hexdigest()}, expected {checksums[name]}")
    return data.reshape(dims)


def _fetch(url: str, dest: Path, name: str, progress: bool, timeout: float) -> None:
    """Stream url into dest with a progress bar; raises urllib/OS errors."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "npnn-mnist"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        total = response.headers.get("Content-Length")
        with tqdm(
            total=int(total) if total else None,
            unit="B",
            unit_scale=True,
            desc=f"{name}.gz",
            disable=not progress,
            leave=False,
        ) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))


def _reason(error: BaseException) -> str:
    """A short description of why a download failed."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return f"{type(error).__name__}: {error}"


def download_file(
    name: str,
    root: Path,
    mirrors: Iterable[str] = MIRRORS,
    checksums: Mapping[str, str] = SHA256,
    progress: bool = True,
    timeout: float = 30.0,
    unreachable: dict | None = None,
) -> tuple[Path | None, list[str]]:
    """Try each mirror for `name`.gz; keep the first verified copy as root/name.gz.

    Returns (path or None, one failure reason per mirror tried). The download goes to a
    temporary file in root and is renamed only once verified, so an interrupted or bad
    download never leaves a file that looks complete. Mirrors that cannot be connected to
    go into `unreachable` (mirror -> reason) instead and are skipped for later files, so
    that without network the four files fail fast.
    """
    failures = []
    unreachable = {} if unreachable is None else unreachable
    final = root / f"{name}.gz"
    if os.path.lexists(final):  # find_file saw no regular file there: a FIFO, device or link is never replaced
        return None, [f"{final}: exists but is not a regular file; not replaced (remove it to download)"]
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        if mirror in unreachable:
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=root)
        os.close(fd)
        tmp = Path(tmp)
        try:
            _fetch(url, tmp, name, progress, timeout)
            read_file(tmp, name, checksums, source=url)
            os.replace(tmp, final)
            return final, failures
        except DataError as e:
            failures.append(str(e))
        except urllib.error.HTTPError as e:
            failures.append(f"{url}: {_reason(e)}")
        except urllib.error.URLError as e:
            unreachable[mirror] = _reason(e)
        except (OSError, ValueError, http.client.HTTPException) as e:
            failures.append(f"{url}: {_reason(e)}")
        finally:
            tmp.unlink(missing_ok=True)
    return None, failures


def ensure_files(
    root: str | os.PathLike | None = None,
    *,
    download_missing: bool = True,
    mirrors: Iterable[str] = MIRRORS,
    checksums: Mapping[str, str] = SHA256,
    progress: bool = True,
    timeout: float = 30.0,
) -> dict[str, Path]:
    """Return the path of each of the four files in root, downloading the missing ones."""
    root = Path(root).expanduser() if root is not None else default_root()
    paths = {name: find_file(root, name) for name in FILES}
    missing = [name for name, path in paths.items() if path is None]
    if not missing:
        return paths
    reasons = {}
    if download_missing:
        try:
            root.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=root).close()  # writable? else say so before downloading
        except OSError as e:
            raise MissingDataError(
                f"MNIST files missing in {root}: {', '.join(missing)}; cannot "
                f"download into it ({e}); pass --data DIR or set NPNN_DATA"
            ) from None
        mirrors, unreachable = tuple(mirrors), {}
        for name in missing:
            paths[name], reasons[name] = download_file(name, root, mirrors, checksums, progress, timeout, unreachable)
    still = [name for name in missing if paths[name] is None]
    if still:
        lines = [f"MNIST files missing in {root}: {', '.join(still)}."]
        if download_missing:
            lines += [f"  mirror {m} unreachable: {why}" for m, why in unreachable.items()]
        for name in still:
            if reasons.get(name):
                lines.append(f"  {name}: download failed: " + "; ".join(reasons[name]))
        lines.append(
            f"Put these files (gzipped as <name>.gz or raw) into {root}, "
            "or pass --data DIR / set NPNN_DATA to a directory that holds all four "
            f"(they come from {MIRRORS[0]})."
        )
        raise MissingDataError("\n".join(lines))
    return paths


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    flatten: bool = True,
    download: bool = True,
    mirrors: Iterable[str] = MIRRORS,
    checksums: Mapping[str, str] = SHA256,
    progress: bool = True,
    timeout: float = 30.0,
) -> MNIST:
    """Load MNIST: images float32 in [0,1] as (N, 784) if flatten else (N, 1, 28, 28), labels int64."""
    paths = ensure_files(
        root, download_missing=download, mirrors=mirrors, checksums=checksums, progress=progress, timeout=timeout
    )
    arrays = {name: read_file(paths[name], name, checksums) for name in FILES}
    out = []
    for images, labels in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        x, y = arrays[images], arrays[labels]
        if len(x) != len(y):
            raise DataError(f"{paths[images]} holds {len(x)} images but {paths[labels]} holds {len(y)} labels")
        x = x.astype(np.float32)
        x /= np.float32(255)  # in place: no float64 temporary, and 255 maps to exactly 1.0
        x = x.reshape(len(x), 784) if flatten else x.reshape(len(x), 1, 28, 28)
        out += [x, y.astype(np.int64)]
    return MNIST(*out)
