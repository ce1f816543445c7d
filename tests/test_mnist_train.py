"""python -m npnn.mnist: flags, checkpoints and what TensorBoard gets from a short training.

The real-data run (the first 10,000 training images for one epoch) is read back through
TensorBoard's EventAccumulator and a real `tensorboard` server; the CNN, resume and error
paths run on small fake data with their checksums injected.
"""

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from mnist_files import real_mnist_dir, skip_reason
from tbserver import tensorboard
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from npnn import mnist as program
from npnn.datasets import mnist as data

REAL_DATA = real_mnist_dir()
REAL_LIMIT = 10_000  # 100 steps of 100
REAL_RUN = "mlp_ep_1_limit_10000"  # run names show the flags that differ from the defaults
QUICK_RUN = "mlp_ep_1_limit_100"  # quick_run's
LAYERS = ["Layer1", "Layer2", "Layer3", "Layer4", "Layer5"]


def f32(x: float) -> float:
    return float(np.float32(x))


def accumulator(logdir) -> EventAccumulator:
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def png_pixels(png: bytes) -> np.ndarray:
    """Decode tbwriter's PNGs (8-bit, filter 0 rows) into an HxWxC uint8 array."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color = header[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    assert depth == 8
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels)
    assert not rows[:, 0].any()  # filter type 0 on every row
    return rows[:, 1:].reshape(h, w, channels)


def fake_data(root: Path, monkeypatch, n_train: int = 300, n_test: int = 100) -> Path:
    """A fake MNIST directory (random digits) whose checksums the loader is told to expect."""
    rng = np.random.default_rng(1)
    files = {}
    for images, labels, n in (
        (data.TRAIN_IMAGES, data.TRAIN_LABELS, n_train),
        (data.TEST_IMAGES, data.TEST_LABELS, n_test),
    ):
        files[images] = (
            bytes([0, 0, 8, 3])
            + struct.pack(">III", n, 28, 28)
            + rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes()
        )
        files[labels] = bytes([0, 0, 8, 1]) + struct.pack(">I", n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes()
    root.mkdir(parents=True, exist_ok=True)
    import hashlib

    for name, raw in files.items():
        (root / f"{name}.gz").write_bytes(gzip.compress(raw))
        monkeypatch.setitem(data.SHA256, name, hashlib.sha256(raw).hexdigest())
    return root


def run(argv) -> dict:
    """Train in process with the given flags."""
    return program.train(program.build_parser().parse_args(argv + ["--no-progress"]))


def quick_run(root, logdir, *more: str) -> list:
    """Flags for one epoch on 100 training and 40 test images of root, logging to logdir."""
    return [
        "--data",
        str(root),
        "--epochs",
        "1",
        "--limit",
        "100",
        "--test-limit",
        "40",
        "--logdir",
        str(logdir),
        *more,
    ]


# -- command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
        (["--epochs", "one"], "argument --epochs: expected an integer >= 1, got 'one'"),
        (["--lr", "fast"], "argument --lr: expected a positive number, got 'fast'"),
        (["--lr", "nan"], "argument --lr: expected a positive number, got 'nan'"),
        (["--batch-size", "-5"], "argument --batch-size: expected an integer >= 1, got '-5'"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--log-every", "0"], "argument --log-every: expected an integer >= 1, got '0'"),
        (["--limit", "all"], "argument --limit: expected an integer >= 0, got 'all'"),
        (["--test-limit", "-2"], "argument --test-limit: expected an integer >= 0, got '-2'"),
        (["--model", "rnn"], "argument --model: invalid choice: 'rnn'"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, line, capsys):
    with pytest.raises(SystemExit) as info:
        program.main(argv)
    assert info.value.code == 2
    (err,) = capsys.readouterr().err.splitlines()
    assert err.startswith(f"python -m npnn.mnist: error: {line}")


def cli(argv, cwd=None, user=None) -> subprocess.CompletedProcess:
    """python -m npnn.mnist as a user types it; as uid `user` (after the imports) when given."""
    code = (
        "import os, sys\nfrom npnn import mnist\n"
        + (f"os.setgid({user}); os.setuid({user})\n" if user is not None else "")
        + "sys.exit(mnist.main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "--no-progress"] + argv, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_progress_bars_count_images_while_training_and_evaluating(tmp_path, monkeypatch):
    root = fake_data(tmp_path / "data", monkeypatch)
    code = (
        "import sys\nfrom npnn import mnist\nfrom npnn.datasets import mnist as data\n"
        f"data.SHA256.update({dict(data.SHA256)!r})\nsys.exit(mnist.main(sys.argv[1:]))\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--data",
            str(root),
            "--epochs",
            "1",
            "--limit",
            "200",
            "--logdir",
            str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    bars = out.stderr.replace("\r", "\n")
    assert re.search(r"epoch 1/1: 100%.*200/200 .*img/s", bars), bars
    assert re.search(r"evaluating: .*img/s", bars), bars


def test_path_flags_fail_in_one_line_before_any_work(tmp_path, monkeypatch):
    root = fake_data(tmp_path / "data", monkeypatch)
    readme = tmp_path / "README.md"
    readme.write_text("a file")
    (tmp_path / "parent").mkdir()
    cases = [
        (["--logdir", str(readme)], f"argument --logdir: {readme} is a file, not a directory"),
        (
            ["--logdir", str(readme / "logs")],
            f"argument --logdir: {readme / 'logs'}: {readme} is a file, not a directory",
        ),
        (["--save", str(tmp_path)], f"argument --save: {tmp_path} is a directory, not a file"),
        (
            ["--save", str(readme / "ckpt.npz")],
            f"argument --save: {readme / 'ckpt.npz'}: {readme} is a file, not a directory",
        ),
        (["--data", str(tmp_path / "mnsit")], f"argument --data: {tmp_path / 'mnsit'}: no such directory"),
        (["--data", str(readme)], f"argument --data: {readme} is a file, not a directory"),
        (
            ["--data", str(tmp_path)],
            f"argument --data: {tmp_path} holds no MNIST files, but {root} does: use --data {root}",
        ),
    ]
    for argv, line in cases:
        out = cli(argv + ["--logdir", str(tmp_path / "logs")] * ("--logdir" not in argv), cwd=tmp_path)
        assert (out.returncode, out.stdout) == (2, ""), (argv, out.stderr)
        assert out.stderr.splitlines() == [f"python -m npnn.mnist: error: {line}"], argv
    assert sorted(os.listdir(tmp_path)) == ["README.md", "data", "parent"]  # nothing created


def test_unwritable_logdir_and_save_fail_up_front(tmp_path):
    if os.geteuid() != 0 and os.access("/", os.W_OK):
        pytest.skip("cannot make a directory unwritable for this user")
    base = tempfile.mkdtemp()  # under /tmp, so an unprivileged user can reach it
    try:
        os.chmod(base, 0o755)
        locked = os.path.join(base, "locked")
        os.mkdir(locked, 0o555)
        free = os.path.join(base, "free")
        os.mkdir(free)
        os.chmod(free, 0o777)
        user = 65534 if os.geteuid() == 0 else None  # root is never denied: run as nobody
        for flag, path in (("--logdir", os.path.join(locked, "logs")), ("--save", os.path.join(locked, "m.npz"))):
            out = cli(["--logdir", free, flag, path, "--data", base], cwd=base, user=user)
            assert out.returncode == 2, out.stderr
            assert out.stderr.splitlines() == [
                f"python -m npnn.mnist: error: argument {flag}: {path}: {locked} is not writable"
            ]
    finally:
        shutil.rmtree(base)


def test_help_lists_every_flag():
    out = subprocess.run([sys.executable, "-m", "npnn.mnist", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in (
        "--model",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--logdir",
        "--data",
        "--save",
        "--resume",
        "--log-every",
        "--limit",
    ):
        assert flag in out.stdout
    assert "logs/mnist" in out.stdout


def test_bad_data_exits_1_naming_the_file(tmp_path, monkeypatch, capsys):
    root = fake_data(tmp_path / "data", monkeypatch)
    bad = root / f"{data.TEST_LABELS}.gz"
    bad.write_bytes(gzip.compress(b"\0\0\x08\x01" + struct.pack(">I", 100) + b"\x01" * 99))
    assert program.main(["--data", str(root), "--logdir", str(tmp_path / "logs")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: truncated: 99 data bytes, expected 100")


def test_resume_errors_exit_1(tmp_path, monkeypatch, capsys):
    root = fake_data(tmp_path / "data", monkeypatch)
    common = quick_run(root, tmp_path / "logs", "--no-progress")
    assert program.main(common + ["--resume", str(tmp_path / "none.npz")]) == 1
    assert f"error: --resume {tmp_path / 'none.npz'}: " in capsys.readouterr().err
    assert program.main(common + ["--save", str(tmp_path / "mlp.npz")]) == 0
    assert program.main(common + ["--model", "cnn", "--resume", str(tmp_path / "mlp.npz")]) == 1
    assert "holds a mlp model, but --model is cnn" in capsys.readouterr().err


# -- checkpoints -----------------------------------------------------------------------------


def test_resume_continues_exactly(tmp_path, monkeypatch):
    root = fake_data(tmp_path / "data", monkeypatch)
    common = ["--data", str(root), "--limit", "200", "--test-limit", "50", "--batch-size", "50", "--log-every", "2"]
    straight = run(common + ["--epochs", "2", "--logdir", str(tmp_path / "a"), "--save", str(tmp_path / "a.npz")])
    run(common + ["--epochs", "1", "--logdir", str(tmp_path / "b"), "--save", str(tmp_path / "b.npz")])
    resumed = run(
        common
        + [
            "--epochs",
            "2",
            "--logdir",
            str(tmp_path / "b"),
            "--resume",
            str(tmp_path / "b.npz"),
            "--save",
            str(tmp_path / "b.npz"),
        ]
    )
    assert resumed["step"] == straight["step"] == 8
    assert resumed["accuracy"] == straight["accuracy"]
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        assert "model/layer1.weight" in a.files and "optim/0/m" in a.files
        for k in a.files:
            if k == "meta":  # equal but for the run directory each was saved from
                meta_a, meta_b = json.loads(str(a[k])), json.loads(str(b[k]))
                assert meta_a.pop("run_dir") == str(tmp_path / "a" / "mlp_ep_2_bs_50_limit_200")
                assert meta_b.pop("run_dir") == str(tmp_path / "b" / "mlp_ep_1_bs_50_limit_200")
                assert meta_a == meta_b
            else:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temp files
    # The resumed run's log continues the first one's: test/accuracy at both epochs.
    assert os.listdir(tmp_path / "b") == ["mlp_ep_1_bs_50_limit_200"]  # the resumed run continues its directory
    ea = accumulator(tmp_path / "b" / "mlp_ep_1_bs_50_limit_200")
    assert [e.step for e in ea.Scalars("test/accuracy")] == [4, 8]
    assert [e.step for e in ea.Scalars("train/loss")] == [2, 4, 6, 8]


def test_cnn_logs_its_layers(tmp_path, monkeypatch):
    root = fake_data(tmp_path / "data", monkeypatch)
    more = ["--model", "cnn", "--batch-size", "50", "--log-every", "1", "--save", str(tmp_path / "cnn.npz")]
    result = run(quick_run(root, tmp_path / "cnn", *more))
    assert result["step"] == 2 and 0 <= result["accuracy"] <= 1
    assert result["logdir"] == str(tmp_path / "cnn" / "cnn_ep_1_bs_50_limit_100")
    ea = accumulator(result["logdir"])
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2]
    assert [e.step for e in ea.Scalars("test/accuracy")] == [2]
    hists = {t for t in ea.Tags()["histograms"]}
    assert hists == {f"{s}/{p}" for s in ("Conv1", "Conv2", "Dense") for p in ("weight", "bias")}
    assert [e.step for e in ea.Histograms("Conv2/weight")] == [0, 2]
    assert ea.Histograms("Conv2/weight")[0].histogram_value.num == 64 * 32 * 9
    names = {n.name: n.op for n in ea.Graph().node}
    assert names["Conv1/Conv2D"] == "Conv2D" and names["Conv2/MaxPool"] == "MaxPool"
    assert names["Dense/Linear"] == "Linear" and names["Cost/SoftmaxCrossEntropy"] == "SoftmaxCrossEntropy"
    with np.load(tmp_path / "cnn.npz") as z:
        assert z["model/conv2.weight"].shape == (64, 32, 3, 3) and z["model/dense.weight"].shape == (10, 3136)


def test_rerun_is_a_new_run_with_its_own_hparams(tmp_path, monkeypatch, capsys):
    from tensorboard.plugins.hparams import metadata as hp_metadata

    root = fake_data(tmp_path / "data", monkeypatch)
    common = quick_run(root, tmp_path / "logs")
    first = run(common)
    second = run(common + ["--seed", "3"])
    third = run(common)
    assert f"logs/{QUICK_RUN} already holds a run: this one goes to" in capsys.readouterr().out
    assert [r["logdir"] for r in (first, second, third)] == [
        str(tmp_path / "logs" / name) for name in (QUICK_RUN, "mlp_ep_1_seed_3_limit_100", f"{QUICK_RUN}_run2")
    ]
    for r, seed in ((first, 0), (second, 3), (third, 0)):
        ea = accumulator(r["logdir"])
        start = hp_metadata.parse_session_start_info_plugin_data(
            ea.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
        )
        assert start.group_name == "" and start.hparams["seed"].number_value == seed
        (acc,) = ea.Scalars("test/accuracy")
        assert [e.value for e in ea.Scalars("hparam/accuracy")] == [acc.value] == [f32(r["accuracy"])]
        assert len(list(Path(r["logdir"]).glob("*tfevents*"))) == 1  # nothing appended


def test_digit_grids_have_stable_tags_and_the_labels_in_their_descriptions(tmp_path, monkeypatch):
    root = fake_data(tmp_path / "data", monkeypatch)
    d = data.load_mnist(root, download=False)
    r = run(quick_run(root, tmp_path / "logs", "--save", str(tmp_path / "m.npz")))
    model = program.MLP()
    with np.load(tmp_path / "m.npz") as z:
        model.load_state_dict({k[6:]: z[k] for k in z.files if k.startswith("model/")})
    _, _, preds = program.evaluate(model, d.test_images[:40], d.test_labels[:40])
    wrong = np.flatnonzero(preds != d.test_labels[:40])[:16]
    ea = accumulator(r["logdir"])
    assert sorted(ea.PluginTagToContent("images")) == ["misclassified", "test_digits"]

    def row(v):
        return " ".join(map(str, v))

    assert ea.SummaryMetadata("test_digits").summary_description == (
        f"Predicted: {row(preds[:16])}\n\nTrue: {row(d.test_labels[:16])}"
    )
    assert ea.SummaryMetadata("misclassified").summary_description == (
        f"Predicted: {row(preds[wrong])}\n\nTrue: {row(d.test_labels[wrong])}"
    )
    tiles = [ea.Tensors(tag)[0].tensor_proto.string_val for tag in ("test_digits", "misclassified")]
    assert [t[:2] for t in tiles] == [[b"224", b"56"], [b"224", b"56"]]  # 8x2 grids of 28x28 digits
    pixels = png_pixels(tiles[1][2])[..., 0].reshape(2, 28, 8, 28).transpose(0, 2, 1, 3).reshape(16, 28, 28)
    np.testing.assert_allclose(pixels[: len(wrong)], np.round(d.test_images[wrong].reshape(-1, 28, 28) * 255), atol=1)
    with tensorboard(tmp_path / "logs", load_fast=True) as tb:  # the fast loader keeps the descriptions
        tags = tb.wait_for(lambda: tb.json("/data/plugin/images/tags"), lambda t: len(t.get(QUICK_RUN, {})) == 2)
    assert tags[QUICK_RUN]["test_digits"]["description"].startswith(f"<p>Predicted: {row(preds[:16])}")


# -- one epoch of the MLP on real data, read back by TensorBoard -----------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    if REAL_DATA is None:
        pytest.skip(skip_reason() + "; the real-data training needs them")
    root = tmp_path_factory.mktemp("mnist")
    result = run(
        [
            "--data",
            str(REAL_DATA),
            "--limit",
            str(REAL_LIMIT),
            "--epochs",
            "1",
            "--logdir",
            str(root),
            "--save",
            str(root / "mlp.npz"),
        ]
    )
    assert result["logdir"] == str(root / REAL_RUN)
    return root, result


def test_one_epoch_on_real_data_learns(real_run):
    root, result = real_run
    assert result["step"] == REAL_LIMIT // 100
    assert result["accuracy"] > 0.9, result


def test_event_file_holds_every_summary(real_run):
    root, result = real_run
    ea = accumulator(root / REAL_RUN)
    steps = REAL_LIMIT // 100
    assert [e.step for e in ea.Scalars("train/loss")] == list(range(10, steps + 1, 10))
    losses = [e.value for e in ea.Scalars("train/loss")]
    assert losses[-1] < losses[0] < 2.5
    (acc,) = ea.Scalars("test/accuracy")
    assert acc.step == steps and acc.value == f32(result["accuracy"])
    (loss,) = ea.Scalars("test/loss")
    assert loss.step == steps and loss.value == f32(result["test_loss"])
    assert set(ea.Tags()["histograms"]) == {f"{s}/{p}" for s in LAYERS for p in ("weight", "bias")}
    for s in LAYERS:
        assert [e.step for e in ea.Histograms(f"{s}/weight")] == [0, steps]
    assert ea.Histograms("Layer1/weight")[-1].histogram_value.num == 784 * 512
    assert ea.Histograms("Layer5/bias")[-1].histogram_value.num == 10
    # The graph: one scope per layer plus the loss's.
    nodes = {n.name: n for n in ea.Graph().node}
    scopes = {name.split("/")[0] for name in nodes if "/" in name}
    assert scopes == set(LAYERS) | {"Cost"}
    assert list(nodes["Layer2/Linear"].input) == ["Layer1/Dropout", "Layer2/weight", "Layer2/bias"]
    assert list(nodes["Cost/SoftmaxCrossEntropy"].input) == ["Layer5/Linear", "y"]


def test_digit_grids_carry_the_predictions(real_run):
    root, result = real_run
    d = data.load_mnist(REAL_DATA, download=False)
    model = program.MLP()
    with np.load(root / "mlp.npz") as z:
        model.load_state_dict({k[6:]: z[k] for k in z.files if k.startswith("model/")})
    accuracy, _, preds = program.evaluate(model, d.test_images, d.test_labels)
    assert accuracy == result["accuracy"]
    ea = accumulator(root / REAL_RUN)
    first, missed = "test_digits", "misclassified"
    wrong = np.flatnonzero(preds != d.test_labels)[:16]
    assert sorted(ea.PluginTagToContent("images")) == sorted([first, missed])
    assert ea.SummaryMetadata(missed).summary_description.startswith("Predicted: " + " ".join(map(str, preds[wrong])))
    for tag, idx in ((first, np.arange(16)), (missed, wrong)):
        (img,) = ea.Tensors(tag)
        width, height, png = img.tensor_proto.string_val
        assert img.step == REAL_LIMIT // 100 and (width, height) == (b"224", b"56")
        pixels = png_pixels(png)[..., 0]
        tiles = pixels.reshape(2, 28, 8, 28).transpose(0, 2, 1, 3).reshape(16, 28, 28)
        expected = np.round(d.test_images[idx].reshape(16, 28, 28) * 255)
        np.testing.assert_allclose(tiles, expected, atol=1)


def test_tensorboard_serves_the_run(real_run):
    root, result = real_run
    steps = REAL_LIMIT // 100
    with tensorboard(root, load_fast=True) as tb:
        acc = tb.wait_for(
            lambda: tb.json("/data/plugin/scalars/scalars", run=REAL_RUN, tag="test/accuracy"), lambda r: len(r) == 1
        )
        assert acc[0][1:] == [steps, f32(result["accuracy"])]
        loss = tb.wait_for(
            lambda: tb.json("/data/plugin/scalars/scalars", run=REAL_RUN, tag="train/loss"),
            lambda r: len(r) == steps // 10,
        )
        assert [p[1] for p in loss] == list(range(10, steps + 1, 10))
        hist = tb.wait_for(
            lambda: tb.json("/data/plugin/histograms/histograms", run=REAL_RUN, tag="Layer3/weight"),
            lambda r: len(r) == 2,
        )
        assert [h[1] for h in hist] == [0, steps]
        images = tb.wait_for(lambda: tb.json("/data/plugin/images/tags"), lambda r: len(r.get(REAL_RUN, {})) == 2)
        assert images[REAL_RUN]["misclassified"]["description"].startswith("<p>Predicted: ")
        (group,) = tb.session_groups(1)
        assert group["hparams"]["model"] == "mlp" and group["hparams"]["lr"] == 0.001
        assert group["hparams"]["batch_size"] == 100 and group["hparams"]["train_images"] == REAL_LIMIT
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert metrics["hparam/accuracy"] == f32(result["accuracy"])
        graph = tb.get("/data/plugin/graphs/graph", run=REAL_RUN, conceptual="false").decode()
        for s in LAYERS:
            assert f'name: "{s}/Linear"' in graph
