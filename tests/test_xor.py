"""python -m npnn.xor: the XOR TensorBoard lab, judged by a real TensorBoard through its HTTP API."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from tbserver import tensorboard
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from npnn import xor

STEPS = 300
LRS = ("0.1", "0.01")
HISTOGRAMS = {"Layer1/W1", "Layer1/B1", "Layer1/Layer1", "Layer2/W2", "Layer2/B2", "Layer2/Hypothesis"}


@pytest.fixture(scope="module")
def lab_logdir(tmp_path_factory):
    """Two runs of the lab (one per --lr) written by the real command line."""
    logdir = tmp_path_factory.mktemp("xor") / "logs"
    cmd = [sys.executable, "-m", "npnn.xor", "--logdir", str(logdir), "--steps", str(STEPS), "--quiet"]
    for lr in LRS:
        cmd += ["--lr", lr]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Accuracy: ") == 2
    assert f"tensorboard --logdir {logdir}" in proc.stdout
    assert "ssh -L 7007:127.0.0.1:6006" in proc.stdout
    return logdir


@pytest.fixture(scope="module", params=[True, False], ids=["load_fast", "python_loader"])
def tb(request, lab_logdir):
    with tensorboard(lab_logdir, load_fast=request.param) as server:
        yield server


def test_runs_one_per_learning_rate(tb, lab_logdir):
    runs = tb.wait_for(tb.runs, lambda r: len(r) == 2)
    assert sorted(runs) == sorted(f"lr_{lr}" for lr in LRS)
    assert sorted(os.listdir(lab_logdir)) == sorted(f"lr_{lr}" for lr in LRS)


@pytest.mark.parametrize("tag", ["Cost/Cost", "accuracy"])
def test_scalars_have_one_point_per_step(tb, tag):
    for lr in LRS:
        points = tb.wait_for(
            lambda: tb.json("/data/plugin/scalars/scalars", run=f"lr_{lr}", tag=tag),
            lambda r: isinstance(r, list) and len(r) == STEPS,
        )
        assert [p[1] for p in points] == list(range(STEPS))
        values = np.array([p[2] for p in points])
        assert np.isfinite(values).all()
        if tag == "accuracy":
            assert set(values) <= {0.0, 0.25, 0.5, 0.75, 1.0}
        else:
            assert values[-1] < values[0]  # the cost goes down
    # lr 0.1 solves XOR within 300 steps; its accuracy ends at 1.0
    last = tb.json("/data/plugin/scalars/scalars", run="lr_0.1", tag="accuracy")[-1]
    assert tag != "accuracy" or last[2] == 1.0


def test_histograms_of_both_layers(tb):
    tags = tb.wait_for(
        lambda: tb.json("/data/plugin/histograms/tags"),
        lambda r: len(r) == 2 and all(set(v) == HISTOGRAMS for v in r.values()),
    )
    assert set(tags["lr_0.1"]) == HISTOGRAMS
    # The histograms route samples ~50 of the steps for the browser; the last one is always kept.
    hist = tb.wait_for(
        lambda: tb.json("/data/plugin/histograms/histograms", run="lr_0.1", tag="Layer2/Hypothesis"),
        lambda r: isinstance(r, list) and r and r[-1][1] == STEPS - 1,
    )
    steps = [h[1] for h in hist]
    assert len(steps) >= 20 and steps == sorted(set(steps)) and set(steps) <= set(range(STEPS))
    wall, step, buckets = hist[-1]
    assert sum(b[2] for b in buckets) == pytest.approx(4.0)  # the four XOR inputs' hypotheses
    assert all(0.0 <= b[0] <= 1.0 for b in buckets if b[2] > 0)  # sigmoid outputs


def test_graph_has_the_labs_scopes(tb):
    pbtxt = tb.wait_for(
        lambda: tb.get("/data/plugin/graphs/graph", run="lr_0.01", conceptual="false").decode(), lambda r: "node" in r
    )
    names = set(re.findall(r'name: "([^"]+)"', pbtxt))
    for scope in ("Layer1/", "Layer2/", "Cost/", "Train/"):
        assert any(n.startswith(scope) for n in names), (scope, sorted(names))
    assert {
        "x",
        "y",
        "Layer1/weight_1",
        "Layer1/bias_1",
        "Layer1/Sigmoid",
        "Layer2/weight_2",
        "Layer2/Sigmoid",
        "Cost/Neg",
        "Train/Adam",
        "Layer1/W1",
        "Cost/Cost",
        "accuracy",
    } <= names
    # the accuracy ops are outside any scope, as in the TF1 lab
    assert {"Greater", "Equal", "Mean"} <= names


def test_hparams_list_the_learning_rate_per_run(tb):
    groups = tb.session_groups(2)
    by_run = {g["sessions"][0]["name"]: g for g in groups}
    assert set(by_run) == {f"lr_{lr}" for lr in LRS}
    for lr in LRS:
        g = by_run[f"lr_{lr}"]
        assert g["hparams"]["lr"] == pytest.approx(float(lr))
        assert g["hparams"]["optimizer"] == "adam"
        assert g["hparams"]["steps"] == STEPS and g["hparams"]["seed"] == 777
        assert g["sessions"][0]["status"] == "STATUS_SUCCESS"
        metrics = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert set(metrics) == {"Cost/Cost", "accuracy"}
    assert {m["name"]["tag"]: m["value"] for m in by_run["lr_0.1"]["metricValues"]}["accuracy"] == 1.0


def test_full_lab_reaches_accuracy_one(tmp_path, capsys):
    """The lab as the course runs it: seed 777, Adam 0.01, 10001 steps, logging every step."""
    results = xor.main(["--logdir", str(tmp_path / "full")])
    out = capsys.readouterr().out
    assert results[0]["accuracy"] == 1.0
    assert "Accuracy: 1.0" in out
    assert re.search(r"^10000 \d", out, re.M)  # the every-100-steps print, up to the last step
    np.testing.assert_array_equal(results[0]["predicted"], [[0], [1], [1], [0]])
    assert results[0]["cost"] < 0.01


def test_graph_train_nodes_are_fed_by_the_cost(lab_logdir):
    """The Train box as TF1 draws minimize(): gradients of the cost, the update of every weight."""
    ea = EventAccumulator(str(lab_logdir / "lr_0.1"))
    ea.Reload()
    nodes = {n.name: n for n in ea.Graph().node}
    assert nodes["Train/gradients"].op == "Gradients" and list(nodes["Train/gradients"].input) == ["Cost/Neg"]
    assert nodes["Train/Adam"].op == "ApplyAdam"
    assert list(nodes["Train/Adam"].input) == [
        "Train/gradients",
        "Layer1/weight_1",
        "Layer1/bias_1",
        "Layer2/weight_2",
        "Layer2/bias_2",
    ]


def _last_scalar(run_dir, tag: str) -> float:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return ea.Scalars(tag)[-1].value


def test_rerun_starts_a_new_run_and_hparams_stay_with_their_run(tmp_path):
    """The course's habit: run, then run again with another --lr into the same logdir."""
    logdir = tmp_path / "logs"
    first = xor.main(["--logdir", str(logdir), "--steps", "50", "--quiet"])[0]
    second = xor.main(["--logdir", str(logdir), "--steps", "50", "--quiet", "--lr", "0.01", "--lr", "0.3"])
    assert first["logdir"] == str(logdir / "lr_0.01")
    assert [r["logdir"] for r in second] == [str(logdir / "lr_0.01_run2"), str(logdir / "lr_0.3")]
    assert sorted(os.listdir(logdir)) == ["lr_0.01", "lr_0.01_run2", "lr_0.3"]
    for run in os.listdir(logdir):  # one file, one run, 50 steps each: nothing appended
        assert len(list((logdir / run).glob("*tfevents*"))) == 1
    with tensorboard(logdir, load_fast=True) as server:
        groups = server.session_groups(3)
    for g in groups:
        (session,) = g["sessions"]
        run = session["name"]
        assert g["hparams"]["lr"] == pytest.approx(float(run.split("_")[1]))
        metrics = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert metrics["Cost/Cost"] == pytest.approx(_last_scalar(logdir / run, "Cost/Cost"))
    assert _last_scalar(logdir / "lr_0.3", "Cost/Cost") != _last_scalar(logdir / "lr_0.01", "Cost/Cost")


def test_overwrite_replaces_the_run(tmp_path, capsys):
    xor.main(["--logdir", str(tmp_path), "--steps", "3", "--quiet"])
    xor.main(["--logdir", str(tmp_path), "--steps", "3", "--quiet", "--overwrite"])
    assert os.listdir(tmp_path) == ["lr_0.01"]
    assert len(list((tmp_path / "lr_0.01").glob("*tfevents*"))) == 1
    assert "already holds a run" not in capsys.readouterr().out


def test_sgd_and_log_every(tmp_path):
    r = xor.main(["--logdir", str(tmp_path), "--steps", "10", "--optimizer", "sgd", "--log-every", "5", "--quiet"])[0]
    assert 0.0 <= r["accuracy"] <= 1.0
    acc = EventAccumulator(str(tmp_path / "lr_0.01_sgd"), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in acc.Scalars("Cost/Cost")] == [0, 5]


@pytest.mark.parametrize(
    "flags, line",
    [
        (["--lr", "0"], "argument --lr: expected a positive number, got '0'"),
        (["--lr", "0.1", "--lr", "-1"], "argument --lr: expected a positive number, got '-1'"),
        (["--lr", "fast"], "argument --lr: expected a positive number, got 'fast'"),
        (["--steps", "0"], "argument --steps: expected an integer >= 1, got '0'"),
        (["--steps", "one"], "argument --steps: expected an integer >= 1, got 'one'"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--log-every", "0"], "argument --log-every: expected an integer >= 1, got '0'"),
        (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, flags, line):
    with pytest.raises(SystemExit) as e:
        xor.main(["--logdir", str(tmp_path / "x")] + flags)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"python -m npnn.xor: error: {line}")
    assert not (tmp_path / "x").exists()  # nothing written before the flags are checked


def test_logdir_errors_through_the_command_line(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("a file")
    cases = [
        (readme, f"{readme} is a file, not a directory"),
        (readme / "logs", f"{readme / 'logs'}: {readme} is a file, not a directory"),
    ]
    for logdir, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "npnn.xor", "--logdir", str(logdir), "--steps", "2"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.splitlines() == [f"python -m npnn.xor: error: argument --logdir: {message}"]


def _series(run_dir) -> dict:
    """Every scalar and histogram the real TensorBoard reads from a run, wall times aside."""
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    out = {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
    for tag in ea.Tags()["histograms"]:
        out[tag] = [(e.step, e.histogram_value) for e in ea.Histograms(tag)]
    return out


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_replayed_lab_writes_what_the_eager_loop_writes(tmp_path, monkeypatch, optimizer):
    """The lab replays its step (npnn.plan); the same lab with the plan refused runs every step
    eagerly (forward, merge_all, backward, step): both runs hold the same values bit for bit."""
    made = []
    real_compile = xor.plan.compile

    def compile_and_keep(loss_fn, opt):
        made.append(real_compile(loss_fn, opt))
        return made[-1]

    monkeypatch.setattr(xor.plan, "compile", compile_and_keep)
    replayed = xor.lab(str(tmp_path / "replayed"), 0.05, steps=400, optimizer=optimizer, quiet=True)
    assert made[-1].replaying and made[-1].refused is None
    assert (made[-1].program is not None) == (optimizer == "adam")  # the fused program is Adam's

    def compile_refused(loss_fn, opt):
        p = real_compile(loss_fn, opt)
        p.refused = "eager reference"
        made.append(p)
        return p

    monkeypatch.setattr(xor.plan, "compile", compile_refused)
    eager = xor.lab(str(tmp_path / "eager"), 0.05, steps=400, optimizer=optimizer, quiet=True)
    assert made[-1].kernels is None  # never recorded: every step ran eagerly
    a, b = _series(tmp_path / "replayed"), _series(tmp_path / "eager")
    assert set(a) == HISTOGRAMS | {"Cost/Cost", "accuracy"} and a == b
    assert all(len(points) == 400 for points in a.values())
    assert replayed["cost"] == eager["cost"] and replayed["accuracy"] == eager["accuracy"]
    assert a["Cost/Cost"][-1][1] < a["Cost/Cost"][0][1]  # it trained


def test_two_students_runs_gathered_under_one_parent_are_two_rows(tmp_path, monkeypatch):
    """Each student ran `python -m npnn.xor` (logs/xor_logs/lr_0.01) in a folder; the class views them together."""
    for student, seed in (("ann", "1"), ("bob", "2")):
        (tmp_path / student).mkdir()
        monkeypatch.chdir(tmp_path / student)
        xor.main(["--steps", "30", "--quiet", "--seed", seed])
    with tensorboard(tmp_path, load_fast=True) as server:
        groups = server.session_groups(2)
    rows = {g["name"]: g for g in groups}
    assert sorted(rows) == ["ann/logs/xor_logs/lr_0.01", "bob/logs/xor_logs/lr_0.01"]  # the Trial ID column
    for name, g in rows.items():
        (session,) = g["sessions"]  # not blended with the other student's run
        assert session["name"] == name
        metrics = {m["name"]["tag"]: m["value"] for m in g["metricValues"]}
        assert metrics["Cost/Cost"] == pytest.approx(_last_scalar(tmp_path / name, "Cost/Cost"))
    assert _last_scalar(tmp_path / "ann/logs/xor_logs/lr_0.01", "Cost/Cost") != _last_scalar(
        tmp_path / "bob/logs/xor_logs/lr_0.01", "Cost/Cost"
    )
