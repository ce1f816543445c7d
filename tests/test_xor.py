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
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


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
        points = tb.wait_for(lambda: tb.json("/data/plugin/scalars/scalars", run=f"lr_{lr}", tag=tag),
                             lambda r: isinstance(r, list) and len(r) == STEPS)
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
    tags = tb.wait_for(lambda: tb.json("/data/plugin/histograms/tags"),
                       lambda r: len(r) == 2 and all(set(v) == HISTOGRAMS for v in r.values()))
    assert set(tags["lr_0.1"]) == HISTOGRAMS
    # The histograms route samples ~50 of the steps for the browser; the last one is always kept.
    hist = tb.wait_for(lambda: tb.json("/data/plugin/histograms/histograms", run="lr_0.1", tag="Layer2/Hypothesis"),
                       lambda r: isinstance(r, list) and r and r[-1][1] == STEPS - 1)
    steps = [h[1] for h in hist]
    assert len(steps) >= 20 and steps == sorted(set(steps)) and set(steps) <= set(range(STEPS))
    wall, step, buckets = hist[-1]
    assert sum(b[2] for b in buckets) == pytest.approx(4.0)  # the four XOR inputs' hypotheses
    assert all(0.0 <= b[0] <= 1.0 for b in buckets if b[2] > 0)  # sigmoid outputs


def test_graph_has_the_labs_scopes(tb):
    pbtxt = tb.wait_for(lambda: tb.get("/data/plugin/graphs/graph", run="lr_0.01", conceptual="false").decode(),
                        lambda r: "node" in r)
    names = set(re.findall(r'name: "([^"]+)"', pbtxt))
    for scope in ("Layer1/", "Layer2/", "Cost/", "Train/"):
        assert any(n.startswith(scope) for n in names), (scope, sorted(names))
    assert {"x", "y", "Layer1/weight_1", "Layer1/bias_1", "Layer1/Sigmoid", "Layer2/weight_2",
            "Layer2/Sigmoid", "Cost/Neg", "Train/Adam", "Layer1/W1", "Cost/Cost", "accuracy"} <= names
    # the accuracy ops are outside any scope, as in the TF1 lab
    assert {"Greater", "Equal", "Mean"} <= names


def test_hparams_list_the_learning_rate_per_run(tb):
    body = {"experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [], "startIndex": 0,
            "sliceSize": 100}
    groups = tb.wait_for(lambda: tb.post_json("/data/plugin/hparams/session_groups", body),
                         lambda r: len(r.get("sessionGroups", [])) == 2)["sessionGroups"]
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


def test_existing_run_is_appended_unless_overwrite(tmp_path):
    run = tmp_path / "run"
    xor.main(["--logdir", str(run), "--steps", "3", "--quiet"])
    xor.main(["--logdir", str(run), "--steps", "3", "--quiet"])
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    xor.main(["--logdir", str(run), "--steps", "3", "--quiet", "--overwrite"])
    assert len(list(run.glob("events.out.tfevents.*"))) == 1


def test_sgd_and_log_every(tmp_path):
    r = xor.main(["--logdir", str(tmp_path), "--steps", "10", "--optimizer", "sgd", "--log-every", "5",
                  "--quiet"])[0]
    assert 0.0 <= r["accuracy"] <= 1.0
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in acc.Scalars("Cost/Cost")] == [0, 5]


@pytest.mark.parametrize("flags, flag", [
    (["--lr", "0"], "--lr"),
    (["--lr", "0.1", "--lr", "-1"], "--lr"),
    (["--steps", "0"], "--steps"),
    (["--log-every", "0"], "--log-every"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, flags, flag):
    with pytest.raises(SystemExit) as e:
        xor.main(["--logdir", str(tmp_path / "x")] + flags)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]
    assert not (tmp_path / "x").exists()  # nothing written before the flags are checked


def test_unwritable_logdir_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")  # a file in the way: unwritable even for root
    proc = subprocess.run([sys.executable, "-m", "npnn.xor", "--logdir", str(blocker / "logs"), "--steps", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "--logdir" in err[0] and str(blocker / "logs") in err[0]
    assert proc.stdout == ""
