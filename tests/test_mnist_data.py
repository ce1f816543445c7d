"""npnn.datasets.mnist: reading, verifying and downloading the IDX files.

Downloads are tested against a real HTTP server on 127.0.0.1 serving small fake IDX files
made here, with their checksums injected; the real data comes from the repository's
sibling folder ../shared/data/mnist when it exists.
"""

import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from mnist_files import real_mnist_dir, skip_reason

from npnn.datasets import mnist
from npnn.datasets.mnist import DataError, MissingDataError, load_mnist


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX (magic 0x0000 08 ndim, big-endian dims, data)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_fake(n_train: int = 12, n_test: int = 5, seed: int = 0) -> tuple[dict, dict]:
    """Fake MNIST: {name: raw IDX bytes} and the matching {name: sha256} table."""
    rng = np.random.default_rng(seed)
    raw = {}
    for images, labels, n in (
        (mnist.TRAIN_IMAGES, mnist.TRAIN_LABELS, n_train),
        (mnist.TEST_IMAGES, mnist.TEST_LABELS, n_test),
    ):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[0, 0, 0], x[0, 0, 1] = 255, 0  # the extremes map to exactly 1.0 and 0.0
        raw[images] = idx_bytes(x)
        raw[labels] = idx_bytes(rng.integers(0, 10, size=n, dtype=np.uint8))
    return raw, {name: hashlib.sha256(data).hexdigest() for name, data in raw.items()}


RAW, SUMS = make_fake()


class Server:
    """A real HTTP server on a free loopback port; routes map URL paths to bytes, else 404."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = Server()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def refused_url():
    """A loopback URL on which nothing listens: connections are refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def serve(server: Server, prefix: str, files: dict) -> str:
    """Serve {name: bytes} as <prefix>/<name>.gz; return the mirror URL."""
    for name, data in files.items():
        server.routes[f"/{prefix}/{name}.gz"] = data
    return f"{server.url}/{prefix}/"


def write_dir(root: Path, files: dict, gz: bool, level: int = 9, mtime: int = 0) -> Path:
    """Write {name: raw bytes} into root, gzipped as name.gz or raw."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=level, mtime=mtime))
        else:
            (root / name).write_bytes(data)
    return root


def expected_arrays(raw: dict):
    """The uint8 arrays inside the fake files."""
    x = np.frombuffer(raw[mnist.TRAIN_IMAGES], np.uint8, offset=16).reshape(-1, 28, 28)
    y = np.frombuffer(raw[mnist.TRAIN_LABELS], np.uint8, offset=8)
    return x, y


def test_raw_gz_and_recompressed_all_load_the_same(tmp_path):
    x, y = expected_arrays(RAW)
    loaded = [
        load_mnist(write_dir(tmp_path / "raw", RAW, gz=False), checksums=SUMS, download=False),
        load_mnist(write_dir(tmp_path / "gz9", RAW, gz=True), checksums=SUMS, download=False),
        load_mnist(write_dir(tmp_path / "gz1", RAW, gz=True, level=1, mtime=12345), checksums=SUMS, download=False),
    ]
    for d in loaded:
        assert d.train_images.dtype == np.float32 and d.test_images.dtype == np.float32
        assert d.train_labels.dtype == np.int64 and d.test_labels.dtype == np.int64
        assert d.train_images.shape == (12, 784) and d.test_images.shape == (5, 784)
        assert d.train_images[0, 0] == 1.0 and d.train_images[0, 1] == 0.0
        assert d.train_images.min() >= 0.0 and d.train_images.max() <= 1.0
        np.testing.assert_array_equal(d.train_images, x.reshape(12, 784) / np.float32(255))
        np.testing.assert_array_equal(d.train_labels, y)


def test_image_shape_argument(tmp_path):
    d = load_mnist(write_dir(tmp_path, RAW, gz=True), flatten=False, checksums=SUMS, download=False)
    assert d.train_images.shape == (12, 1, 28, 28) and d.test_images.shape == (5, 1, 28, 28)
    x, _ = expected_arrays(RAW)
    np.testing.assert_array_equal(d.train_images[:, 0], x / np.float32(255))


def test_root_from_env_then_home_cache(tmp_path, monkeypatch):
    write_dir(tmp_path / "env", RAW, gz=True)
    monkeypatch.setenv("NPNN_DATA", str(tmp_path / "env"))
    assert mnist.default_root() == tmp_path / "env"
    assert load_mnist(checksums=SUMS, download=False).train_images.shape == (12, 784)
    monkeypatch.delenv("NPNN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist.default_root() == tmp_path / "home" / ".cache" / "npnn" / "mnist"


def test_download_tries_mirrors_in_order_and_caches(server, refused_url, tmp_path, capfd):
    good = serve(server, "good", {n: gzip.compress(d) for n, d in RAW.items()})
    empty = f"{server.url}/missing/"  # every file 404s there
    cache = tmp_path / "cache" / "mnist"
    before = len(server.requests)
    d = load_mnist(cache, mirrors=[refused_url, empty, good], checksums=SUMS, progress=True)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in mnist.FILES)
    asked = server.requests[before:]
    for name in mnist.FILES:  # the 404 mirror is asked first, then the good one
        assert asked.index(f"/missing/{name}.gz") < asked.index(f"/good/{name}.gz")
    x, y = expected_arrays(RAW)
    np.testing.assert_array_equal(d.train_labels, y)
    assert "train-images-idx3-ubyte.gz" in capfd.readouterr().err  # the tqdm bar's label
    # A second load uses the cache: no request at all.
    count = len(server.requests)
    load_mnist(cache, mirrors=[good], checksums=SUMS, progress=False)
    assert len(server.requests) == count


def test_corrupted_mirror_is_skipped_for_a_good_one(server, tmp_path):
    bad = {n: gzip.compress(d[:-1] + bytes([d[-1] ^ 1])) for n, d in RAW.items()}
    mirrors = [serve(server, "flipped", bad), serve(server, "good2", {n: gzip.compress(d) for n, d in RAW.items()})]
    d = load_mnist(tmp_path, mirrors=mirrors, checksums=SUMS, progress=False)
    assert d.test_images.shape == (5, 784)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.gz" for n in mnist.FILES)


def test_corrupted_and_truncated_downloads_leave_nothing(server, tmp_path):
    files = {}
    for i, (name, data) in enumerate(RAW.items()):
        gz = gzip.compress(data)
        # Alternate: a valid gzip of altered content (checksum mismatch), a cut gzip stream.
        files[name] = gzip.compress(data[:-1] + b"\x07") if i % 2 == 0 else gz[: len(gz) // 2]
    mirror = serve(server, "broken", files)
    cache = tmp_path / "cache"
    with pytest.raises(MissingDataError) as info:
        load_mnist(cache, mirrors=[mirror], checksums=SUMS, progress=False)
    message = str(info.value)
    for name in mnist.FILES:
        assert name in message
    assert f"{mnist.TRAIN_IMAGES}: download failed: {mirror}{mnist.TRAIN_IMAGES}.gz: SHA-256 mismatch" in message
    assert f"{mirror}{mnist.TRAIN_LABELS}.gz: truncated gzip stream" in message
    assert list(cache.iterdir()) == []  # no .part files, no half-written .gz


def test_no_network_gives_one_message_with_missing_files_and_where_to_put_them(refused_url, tmp_path):
    write_dir(tmp_path, {mnist.TRAIN_LABELS: RAW[mnist.TRAIN_LABELS]}, gz=True)
    other = refused_url.replace("/mnist/", "/other/")
    with pytest.raises(MissingDataError) as info:
        load_mnist(tmp_path, mirrors=[refused_url, other], checksums=SUMS, progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == (
        f"MNIST files missing in {tmp_path}: {mnist.TRAIN_IMAGES}, {mnist.TEST_IMAGES}, {mnist.TEST_LABELS}."
    )
    assert lines[1].startswith(f"  mirror {refused_url} unreachable: ") and "Connection refused" in lines[1]
    assert lines[2].startswith(f"  mirror {other} unreachable: ") and "Connection refused" in lines[2]
    message = lines[-1]
    assert "--data DIR" in message and "NPNN_DATA" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{mnist.TRAIN_LABELS}.gz"]


def test_unwritable_directory_is_reported_before_downloading(server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(
        MissingDataError,
        match=f"^MNIST files missing in {blocker / 'mnist'}: {mnist.TRAIN_IMAGES}, .*cannot download into it",
    ):
        load_mnist(blocker / "mnist", mirrors=[f"{server.url}/missing/"], checksums=SUMS, progress=False)


def test_missing_without_download_names_the_files(tmp_path):
    with pytest.raises(
        MissingDataError,
        match=f"missing in {tmp_path}: {mnist.TRAIN_IMAGES}, "
        f"{mnist.TRAIN_LABELS}, {mnist.TEST_IMAGES}, {mnist.TEST_LABELS}",
    ):
        load_mnist(tmp_path, download=False, checksums=SUMS)


def _wrong_magic(raw):
    return {**raw, mnist.TEST_LABELS: raw[mnist.TEST_IMAGES]}


def _truncated_raw(raw):
    return {**raw, mnist.TEST_LABELS: raw[mnist.TEST_LABELS][:-2]}


def _trailing(raw):
    return {**raw, mnist.TEST_LABELS: raw[mnist.TEST_LABELS] + b"\0"}


def _checksum(raw):
    data = bytearray(raw[mnist.TEST_LABELS])
    data[-1] = (data[-1] + 1) % 10
    return {**raw, mnist.TEST_LABELS: bytes(data)}


@pytest.mark.parametrize(
    "corrupt, gz, expected",
    [
        (_wrong_magic, False, "wrong magic number 0x00000803, expected 0x00000801"),
        (_truncated_raw, False, "truncated: 3 data bytes, expected 5"),
        (_trailing, True, "trailing bytes: more than 5 data bytes, expected 5"),
        (_trailing, False, "trailing bytes: 6 data bytes, expected 5"),
        (_checksum, True, f"SHA-256 mismatch for {mnist.TEST_LABELS}"),
    ],
)
def test_bad_local_files_raise_naming_the_file(tmp_path, corrupt, gz, expected):
    write_dir(tmp_path, corrupt(RAW), gz=gz)
    path = tmp_path / (f"{mnist.TEST_LABELS}.gz" if gz else mnist.TEST_LABELS)
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, download=False, checksums=SUMS)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


@pytest.mark.parametrize("cut", ["truncated gzip stream", "corrupted gzip data"])
def test_bad_local_gzip_raises_naming_the_file(tmp_path, cut):
    write_dir(tmp_path, RAW, gz=True)
    path = tmp_path / f"{mnist.TRAIN_IMAGES}.gz"
    data = path.read_bytes()
    if cut.startswith("truncated"):
        path.write_bytes(data[:-100])
    else:  # flip a byte of the stored CRC32 trailer
        path.write_bytes(data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:])
    with pytest.raises(DataError, match=f"^{path}: {cut}"):
        load_mnist(tmp_path, download=False, checksums=SUMS)


def test_real_data_matches_the_published_facts():
    real = real_mnist_dir()
    if real is None:
        pytest.skip(skip_reason() + "; nothing to check without network")
    d = load_mnist(real, download=False)
    assert d.train_images.shape == (60000, 784) and d.test_images.shape == (10000, 784)
    assert np.bincount(d.train_labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(d.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(float(d.train_images.mean()) - 0.1307) < 5e-5
    assert abs(float(d.train_images.std()) - 0.3081) < 5e-5
    assert d.train_images.min() == 0.0 and d.train_images.max() == 1.0
