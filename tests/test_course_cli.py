"""python -m npnn.xor and python -m npnn.mnist against a user's mistakes and Ctrl-C, as real subprocesses.

Each case asserts the one line on stderr, the exit code, and what was (not) written; S3 cases
run against the moto server of test_remote.py.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import boto3
import numpy as np
import pytest
from test_mnist_train import accumulator, fake_data
from test_remote import s3  # noqa: F401 (the fixture: a moto S3 server on loopback)

from npnn.datasets import mnist as data

MNIST = "python -m npnn.mnist"
XOR = "python -m npnn.xor"


def command(program: str, argv: list, sha: dict | None = None) -> list:
    """The argv of `python -m npnn.<program>` with the fake MNIST files' checksums injected."""
    code = (
        "import sys\nfrom npnn.datasets import mnist as data\n"
        f"data.SHA256.update({sha or {}!r})\nfrom npnn import {program}\n"
        f"sys.exit({program}.command(sys.argv[1:]))\n"
    )
    return [sys.executable, "-c", code, *map(str, argv)]


def run(program: str, argv: list, sha: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """The program to its end; its exit code, stdout and stderr."""
    return subprocess.run(command(program, argv, sha), capture_output=True, text=True, timeout=300, cwd=cwd)


def interrupt(program: str, argv: list, ready, sha: dict | None = None) -> subprocess.CompletedProcess:
    """Start the program, wait until ready() (it has written something), then Ctrl-C it."""
    proc = subprocess.Popen(command(program, argv, sha), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the program ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def mnist_data(tmp_path, monkeypatch):
    """(root, checksums) of small fake MNIST files."""
    root = fake_data(tmp_path / "data", monkeypatch)
    return root, {n: data.SHA256[n] for n in data.FILES}


def quick(root, logdir, *more) -> list:
    return ["--data", root, "--limit", "100", "--test-limit", "40", "--logdir", logdir, "--no-progress", *more]


def model_arrays(path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta"}


def meta_of(path) -> dict:
    with np.load(path) as z:
        return json.loads(str(z["meta"]))


# -- Ctrl-C ------------------------------------------------------------------------------------


def test_mnist_ctrl_c_saves_a_checkpoint_that_resume_continues_exactly(tmp_path, mnist_data):
    root, sha = mnist_data
    flags = ["--limit", "100", "--batch-size", "10", "--test-limit", "40", "--log-every", "1", "--no-progress"]
    flags += ["--data", root, "--logdir", tmp_path / "logs"]
    run_dir = tmp_path / "logs" / "mlp_ep_200_bs_10_limit_100"

    ckpt = tmp_path / "ck.npz"
    stopped = interrupt("mnist", flags + ["--epochs", "200", "--save", ckpt], ckpt.exists, sha)  # after epoch 1
    assert stopped.returncode == 130, stopped.stderr
    (line,) = stopped.stderr.splitlines()
    match = re.fullmatch(
        rf"{MNIST}: interrupted: run {run_dir} stopped at step (\d+) \(epoch (\d+), batch (\d+)/10\); "
        rf"checkpoint saved: --resume {ckpt} continues it",
        line,
    )
    assert match, line
    step, epoch, batch = map(int, match.groups())
    assert step == (epoch - 1) * 10 + batch and meta_of(ckpt)["step"] == step
    # Resumed without repeating the flags that define the run, to the end of the next epoch.
    again = ["--data", root, "--logdir", tmp_path / "logs", "--no-progress", "--resume", ckpt, "--epochs", epoch]
    resumed = run("mnist", again + ["--save", tmp_path / "resumed.npz"], sha)
    assert resumed.returncode == 0, resumed.stderr
    assert f"after {epoch * 10} steps; in {run_dir};" in resumed.stdout
    straight = run("mnist", flags + ["--epochs", epoch, "--logdir", tmp_path / "s", "--save", tmp_path / "s.npz"], sha)
    assert straight.returncode == 0, straight.stderr
    a, b = model_arrays(tmp_path / "resumed.npz"), model_arrays(tmp_path / "s.npz")
    assert a.keys() == b.keys() and "model/layer1.weight" in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ea = accumulator(run_dir)  # one series: the steps before the interrupt, then the resumed ones
    assert [e.step for e in ea.Scalars("train/loss")] == list(range(1, epoch * 10 + 1))


def test_mnist_ctrl_c_without_save_says_nothing_can_resume(tmp_path, mnist_data):
    root, sha = mnist_data
    logs = tmp_path / "logs"
    stopped = interrupt(
        "mnist", quick(root, logs, "--limit", "300", "--epochs", "500"), lambda: any(logs.glob("*/*tfevents*")), sha
    )
    assert stopped.returncode == 130, stopped.stderr
    (line,) = stopped.stderr.splitlines()
    assert re.fullmatch(
        rf"{MNIST}: interrupted: run {logs}/mlp_ep_500_limit_300 stopped at step \d+ \(epoch \d+, batch \d+/3\); "
        r"no checkpoint \(--save PATH keeps one to --resume from\)",
        line,
    ), line


def test_xor_ctrl_c_is_one_line_and_the_steps_written_stay_readable(tmp_path):
    logs = tmp_path / "logs"

    def written():  # the writer flushes every 10 summaries: some steps are in the file
        return sum(f.stat().st_size for f in logs.glob("*/*tfevents*")) > 20_000

    stopped = interrupt("xor", ["--logdir", logs, "--steps", "1000000", "--quiet"], written)
    assert stopped.returncode == 130
    run_dir = logs / "lr_0.01"
    assert stopped.stderr.splitlines() == [
        f"{XOR}: interrupted: run {run_dir} holds the steps written before the interrupt"
    ]
    assert len(accumulator(run_dir).Scalars("Cost/Cost")) > 0


# -- log dirs and output paths -----------------------------------------------------------------


@pytest.mark.parametrize("program", ["xor", "mnist"])
def test_bad_urls_and_uncreatable_paths_are_one_line_exit_2(tmp_path, program):
    prog = XOR if program == "xor" else MNIST
    cases = [
        (
            "s4://bucket/xor",
            "s4://bucket/xor: unsupported URL scheme s4:// (no fsspec implementation is registered for it)",
        ),
        ("/proc/logs", "/proc/logs: cannot create anything in /proc: No such file or directory"),
    ]
    for logdir, message in cases:
        out = run(program, ["--logdir", logdir] + ["--data", tmp_path] * (program == "mnist"))
        assert (out.returncode, out.stdout) == (2, ""), out.stderr
        assert out.stderr.splitlines() == [f"{prog}: error: argument --logdir: {message}"]


def test_mnist_save_must_go_into_an_existing_creatable_directory(tmp_path):
    cases = [
        (tmp_path / "nonexistent_dir" / "x.npz", f"{tmp_path / 'nonexistent_dir' / 'x.npz'}: no such directory "
                                                 f"{tmp_path / 'nonexistent_dir'}"),
        ("/proc/self/x.npz", "/proc/self/x.npz: cannot create anything in /proc/self: No such file or directory"),
    ]  # fmt: skip
    for save, message in cases:
        out = run("mnist", ["--save", save, "--logdir", tmp_path / "logs", "--data", tmp_path])
        assert (out.returncode, out.stdout) == (2, ""), out.stderr
        assert out.stderr.splitlines() == [f"{MNIST}: error: argument --save: {message}"]
    assert sorted(os.listdir(tmp_path)) == []  # nothing created


def test_s3_missing_bucket_is_one_line_before_any_work_and_hides_credentials(s3, tmp_path):  # noqa: F811
    for program, prog in (("xor", XOR), ("mnist", MNIST)):
        out = run(program, ["--logdir", "s3://nosuchbucket/xor"] + ["--data", tmp_path] * (program == "mnist"))
        assert (out.returncode, out.stdout) == (2, ""), out.stderr
        (line,) = out.stderr.splitlines()
        assert line.startswith(f"{prog}: error: argument --logdir: cannot write to s3://nosuchbucket/xor: ")
        assert "bucket does not exist" in line
    out = run("xor", ["--logdir", "s3://ALICE:hunter2@nosuchbucket/xor"])
    assert out.returncode == 2 and "hunter2" not in out.stderr and "ALICE" not in out.stderr
    buckets = boto3.client("s3", endpoint_url=s3.endpoint).list_buckets()["Buckets"]
    assert [b["Name"] for b in buckets] == ["runs"]  # nothing created


def test_s3_rerun_goes_into_a_new_run_beside_the_old_one(s3):  # noqa: F811
    logdir = f"s3://runs/{uuid.uuid4().hex}"
    for _ in range(2):
        out = run("xor", ["--logdir", logdir, "--steps", "20", "--quiet"])
        assert out.returncode == 0, out.stderr
    assert f"{logdir}/lr_0.01 already holds a run: this one goes to {logdir}/lr_0.01_run2" in out.stdout
    from tbwriter.reader import read_logdir

    steps = {}
    for name, event in read_logdir(logdir):
        if any(v.tag == "Cost/Cost" for v in event.summary.value):
            steps.setdefault(name, []).append(event.step)
    assert steps == {"lr_0.01": list(range(20)), "lr_0.01_run2": list(range(20))}  # not 40 points in one run
    client = boto3.client("s3", endpoint_url=s3.endpoint)

    def keys() -> list:
        return [o["Key"] for o in client.list_objects_v2(Bucket="runs", Prefix=logdir[10:])["Contents"]]

    assert not [k for k in keys() if ".probe-" in k]  # the probes were removed
    old = [k for k in keys() if "/lr_0.01/" in k]
    out = run("xor", ["--logdir", logdir, "--steps", "5", "--quiet", "--overwrite"])
    assert out.returncode == 0, out.stderr
    replaced = [k for k in keys() if "/lr_0.01/" in k]
    assert old and not set(old) & set(replaced)  # --overwrite removed the old run's objects
    assert sorted({e.step for name, e in read_logdir(logdir) if name == "lr_0.01" and e.step}) == [1, 2, 3, 4]


# -- --resume ----------------------------------------------------------------------------------


def test_resume_takes_the_runs_flags_and_refuses_what_would_change_or_redo_it(tmp_path, mnist_data):
    root, sha = mnist_data
    ckpt = tmp_path / "ck.npz"
    first = run("mnist", quick(root, tmp_path / "logs", "--epochs", "2", "--save", ckpt), sha)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "logs" / "mlp_ep_2_limit_100"
    before = sorted((p.name, p.stat().st_size) for p in run_dir.iterdir())
    resume = ["--data", root, "--logdir", tmp_path / "logs", "--no-progress", "--resume", ckpt]
    cases = [
        (["--limit", "200"], "the run was trained with --limit 100, not 200; leave --limit out to continue it"),
        (["--lr", "0.01"], "the run was trained with --lr 0.001, not 0.01; leave --lr out to continue it"),
        ([], "the checkpoint has 2 epochs done, so --epochs 2 trains nothing (give --epochs 3 or more to "
             "continue); the run is left as it is"),
        (["--epochs", "1"], "the checkpoint has 2 epochs done, so --epochs 1 trains nothing (give --epochs 3 or more "
                            "to continue); the run is left as it is"),
    ]  # fmt: skip
    for more, message in cases:
        out = run("mnist", resume + more, sha)
        assert (out.returncode, out.stdout) == (1, ""), out.stderr
        assert out.stderr.splitlines() == [f"error: --resume {ckpt}: {message}"]
    assert sorted((p.name, p.stat().st_size) for p in run_dir.iterdir()) == before  # the run is untouched
    more = run("mnist", resume + ["--epochs", "3"], sha)  # --limit 100 and --test-limit 40 from the checkpoint
    assert more.returncode == 0, more.stderr
    assert "epoch 3/3:" in more.stdout and f"after 3 steps; in {run_dir};" in more.stdout


@pytest.mark.parametrize(
    "recorded, shown",
    [(123, "123"), (["a"], "['a']"), ("logs/a\0b", "'logs/a\\x00b'"), ("/", "'/'")],
)
def test_resume_refuses_a_checkpoint_whose_run_dir_is_not_a_run_name(tmp_path, recorded, shown):
    from npnn import mnist, optim

    model = mnist.MLP()
    opt = optim.Adam(model.parameters())
    ckpt = tmp_path / "bad.npz"
    mnist.save_checkpoint(str(ckpt), model, opt, {"model": "mlp", "epoch": 1, "step": 10, "run_dir": recorded})
    (tmp_path / "empty").mkdir()
    out = run("mnist", ["--resume", ckpt, "--epochs", "2", "--logdir", tmp_path / "logs", "--data", tmp_path / "empty"])
    assert (out.returncode, out.stdout) == (1, ""), out.stderr
    assert out.stderr.splitlines() == [
        f"error: --resume {ckpt}: meta: 'run_dir' is {shown}, expected a path ending in a run's name"
    ]
    assert os.listdir(tmp_path / "empty") == []  # refused before the data (which would be downloaded there)


def test_resume_writes_under_the_command_lines_logdir_not_the_checkpoints_url(tmp_path, mnist_data):
    root, sha = mnist_data
    ckpt = tmp_path / "ck.npz"
    assert run("mnist", quick(root, tmp_path / "logs", "--epochs", "1", "--save", ckpt), sha).returncode == 0
    from npnn import mnist, optim

    model = mnist.MLP()
    opt = optim.Adam(model.parameters())
    meta = mnist.load_checkpoint(str(ckpt), model, opt, "mlp")
    meta["run_dir"] = "memory://elsewhere/mlp_ep_1_limit_100"
    mnist.save_checkpoint(str(ckpt), model, opt, meta)
    out = run(
        "mnist", ["--data", root, "--logdir", tmp_path / "new", "--no-progress", "--resume", ckpt, "--epochs", "2"], sha
    )
    assert out.returncode == 0, out.stderr
    assert f"in {tmp_path / 'new' / 'mlp_ep_1_limit_100'};" in out.stdout
    assert [e.step for e in accumulator(tmp_path / "new" / "mlp_ep_1_limit_100").Scalars("test/accuracy")] == [2]
