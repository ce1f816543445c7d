"""A real `tensorboard --logdir` process on a free loopback port, for tests to query."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoard:
    """Client of a running TensorBoard: GET and POST its HTTP API, poll until data shows."""

    def __init__(self, port: int, proc: subprocess.Popen, log: Path):
        self.base = f"http://127.0.0.1:{port}"
        self.proc = proc
        self.log = log

    def get(self, path: str, **params) -> bytes:
        """GET path with query params; return the body."""
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()

    def json(self, path: str, **params):
        """GET path and decode JSON."""
        return json.loads(self.get(path, **params))

    def post_json(self, path: str, body: dict):
        """POST a JSON body (the hparams plugin's API) and decode the JSON answer."""
        req = urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def wait_for(self, fetch, ready, timeout: float = 90.0):
        """Call fetch() until ready(result) is true; return the result or fail with the last one."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = fetch()
                if ready(last):
                    return last
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError) as e:
                last = e
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"tensorboard never got ready; last answer: {last!r}\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.25)

    def session_groups(self, count: int) -> list:
        """The hparams plugin's session groups (with metrics), once there are `count` of them."""
        body = {
            "experimentName": "",
            "startIndex": 0,
            "sliceSize": 100,
            "includeMetrics": True,
            "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        }
        return self.wait_for(
            lambda: self.post_json("/data/plugin/hparams/session_groups", body),
            lambda r: len(r.get("sessionGroups", [])) == count,
        )["sessionGroups"]

    def runs(self) -> list:
        """The runs TensorBoard lists."""
        return self.json("/data/runs")


@contextlib.contextmanager
def tensorboard(logdir, load_fast: bool):
    """Start `tensorboard --logdir` (keeping every sample) and stop it whatever happens."""
    port = free_port()
    fd, log = tempfile.mkstemp(prefix="tensorboard-", suffix=".log")
    os.close(fd)
    log = Path(log)
    cmd = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        f"--load_fast={'true' if load_fast else 'false'}",
        # Not 0: the loaders read 0 as "keep all", but the plugins then downsample to 0 points.
        "--samples_per_plugin",
        "scalars=1000000,histograms=1000000,images=1000000,tensors=1000000",
        "--reload_interval",
        "1",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    tb = TensorBoard(port, proc, log)
    try:
        tb.wait_for(lambda: tb.get("/data/environment"), lambda r: bool(r), timeout=120)
        yield tb
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)
