"""Every kind SummaryWriter writes, read by a real `tensorboard --logdir` (both loaders) and EventAccumulator.

One logdir holds all kinds; one server per load_fast value serves every test of the module.
"""

import struct
import time

import numpy as np
import pytest
from tbserver import tensorboard
from test_writer import accumulator, event_files, f32, read_events

import tbwriter
from tbwriter.proto import graph_pb2

HIST_STEPS = [0, 1, 2]
LOSS = [(i, f32(1.0 / (i + 1))) for i in range(300)]
IMAGE = np.stack([np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)] * 3)  # CHW float in [0, 1]
IMAGES = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)  # NCHW uint8


def hist_values(step: int) -> np.ndarray:
    return np.array([0.5, 1.0, 2.0, -1.0], dtype=np.float32) * (step + 1)


def graph_def() -> graph_pb2.GraphDef:
    g = graph_pb2.GraphDef()
    g.node.add(name="x", op="Placeholder")
    g.node.add(name="Layer1/W", op="VariableV2")
    g.node.add(name="Layer1/MatMul", op="MatMul", input=["x", "Layer1/W"])
    return g


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    with tbwriter.SummaryWriter(root / "main") as w:
        for step, value in LOSS:
            w.add_scalar("loss", value, step)
        for step in HIST_STEPS:
            w.add_histogram("weights", hist_values(step), step)
        w.add_histogram_raw(
            "raw",
            min=-1.0,
            max=3.0,
            num=6,
            sum=5.0,
            sum_squares=15.0,
            bucket_limits=[0.0, 1.0, 3.0],
            bucket_counts=[1, 2, 3],
            global_step=4,
        )
        w.add_image("image", IMAGE, 1)
        w.add_images("images", IMAGES, 2)
        w.add_text("notes", "**hello** tbwriter", 3)
        w.add_graph(graph_def())
        w.add_pr_curve("pr", np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.9, 0.6, 0.3, 0.8]), 5, num_thresholds=5)
        w.add_custom_scalars({"Losses": {"both": ["Multiline", ["loss", "cmp"]]}})
        for i in range(3):
            w.add_scalars("cmp", {"train": i, "val": 10 + i}, i)
        w.add_hparams({"lr": 0.1, "opt": "sgd", "bn": True}, {"hp/acc": 0.9, "hp/loss": 0.25})
    with tbwriter.SummaryWriter(root / "other") as w:  # different hparam keys: both must show
        w.add_hparams({"lr": 0.2, "wd": 1e-4}, {"hp/acc": 0.8})
    with tbwriter.SummaryWriter(root / "restart") as w:
        for i in range(10):
            w.add_scalar("p", i, i)
    time.sleep(1.1)  # the restart's file name sorts after the first one's
    with tbwriter.SummaryWriter(root / "restart", purge_step=5) as w:
        for i in range(5, 8):
            w.add_scalar("p", 100 + i, i)
    return root


@pytest.fixture(scope="module", params=[True, False], ids=["load_fast", "python_loader"])
def tb(request, logdir):
    with tensorboard(logdir, load_fast=request.param) as server:
        # Wait until the last thing written in each run is served.
        server.wait_for(
            lambda: server.json("/data/plugin/scalars/tags"),
            lambda t: (
                {"hp/loss", "loss"} <= set(t.get("main", {}))
                and "hp/acc" in t.get("other", {})
                and "p" in t.get("restart", {})
            ),
        )
        yield server


def scalar_points(tb, run, tag, count):
    got = tb.wait_for(lambda: tb.json("/data/plugin/scalars/scalars", run=run, tag=tag), lambda r: len(r) >= count)
    return [(step, value) for _, step, value in got]


# --- the Python loader in process ------------------------------------------------------------


def test_event_accumulator_reads_every_kind(logdir):
    acc = accumulator(logdir / "main")
    tags = acc.Tags()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == LOSS
    assert [e.step for e in acc.Histograms("weights")] == HIST_STEPS
    h = acc.Histograms("weights")[1].histogram_value
    assert (h.min, h.max, h.num, h.sum) == (-2.0, 4.0, 4.0, 5.0)
    assert set(tags["images"]) == {"image", "images"}
    img = acc.Images("image")[0]
    assert (img.step, img.width, img.height) == (1, 5, 4)
    assert acc.Graph().node[2].name == "Layer1/MatMul"
    assert {"notes/text_summary", "pr", "_hparams_/session_start_info"} <= set(tags["tensors"])


def test_plugin_metadata_only_with_the_first_value(logdir):
    (path,) = event_files(logdir / "main")
    seen = {}
    for e in read_events(path):
        for v in e.summary.value:
            seen.setdefault(v.tag, []).append(v.HasField("metadata"))
    assert seen["pr"] == [True] and seen["notes/text_summary"] == [True]
    assert all(not any(flags[1:]) for flags in seen.values()), seen


def test_python_loader_in_process_purges_on_restart(logdir):
    acc = accumulator(logdir / "restart")
    assert [(e.step, e.value) for e in acc.Scalars("p")] == [(i, float(i)) for i in range(5)] + [
        (i, 100.0 + i) for i in range(5, 8)
    ]


# --- the real server, both loaders -----------------------------------------------------------


def test_runs(tb):
    runs = tb.wait_for(tb.runs, lambda r: len(r) >= 5)
    assert set(runs) == {"main", "other", "restart", "main/cmp_train", "main/cmp_val"}


def test_scalars(tb):
    assert scalar_points(tb, "main", "loss", len(LOSS)) == LOSS
    assert scalar_points(tb, "main/cmp_train", "cmp", 3) == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert scalar_points(tb, "main/cmp_val", "cmp", 3) == [(0, 10.0), (1, 11.0), (2, 12.0)]


def test_purge_step_restart(tb):
    # Python loader: the SessionLog START purges; Rust loader: a step going back evicts the later ones.
    expect = [(i, float(i)) for i in range(5)] + [(i, 100.0 + i) for i in range(5, 8)]
    got = tb.wait_for(lambda: scalar_points(tb, "restart", "p", 8), lambda r: r == expect, timeout=30)
    assert got == expect


def test_histograms(tb):
    got = tb.wait_for(
        lambda: tb.json("/data/plugin/histograms/histograms", run="main", tag="weights"),
        lambda r: len(r) == len(HIST_STEPS),
    )
    for (_, step, buckets), expect_step in zip(got, HIST_STEPS):
        values = hist_values(expect_step)
        assert step == expect_step
        assert sum(c for _, _, c in buckets) == pytest.approx(4.0)
        assert buckets[0][0] == pytest.approx(values.min(), rel=0.1)
        assert buckets[-1][1] == pytest.approx(values.max(), rel=0.1)
    raw = tb.wait_for(lambda: tb.json("/data/plugin/histograms/histograms", run="main", tag="raw"), bool)
    assert raw[0][1] == 4 and sum(c for _, _, c in raw[0][2]) == pytest.approx(6.0)


def test_images(tb, logdir):
    acc = accumulator(logdir / "main")
    for tag, step, (w, h) in (("image", 1, (5, 4)), ("images", 2, (10, 4))):
        listing = tb.wait_for(lambda: tb.json("/data/plugin/images/images", run="main", tag=tag, sample=0), bool)
        assert listing[0]["step"] == step
        png = tb.get("/data/plugin/images/individualImage?" + listing[0]["query"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", png[16:24]) == (w, h)
        assert png == acc.Images(tag)[0].encoded_image_string


def test_text(tb):
    got = tb.wait_for(lambda: tb.json("/data/plugin/text/text", run="main", tag="notes/text_summary"), bool)
    assert [(g["step"], g["text"]) for g in got] == [(3, "<p><strong>hello</strong> tbwriter</p>")]


def test_graph(tb):
    body = tb.wait_for(lambda: tb.get("/data/plugin/graphs/graph", run="main", conceptual="false"), bool)
    g = graph_pb2.GraphDef()
    from google.protobuf import text_format

    text_format.Parse(body.decode(), g)
    assert [(n.name, n.op, list(n.input)) for n in g.node] == [(n.name, n.op, list(n.input)) for n in graph_def().node]


def test_pr_curve(tb):
    got = tb.wait_for(
        lambda: tb.json("/data/plugin/pr_curves/pr_curves", run="main", tag="pr"), lambda r: bool(r.get("main"))
    )
    (entry,) = got["main"]
    assert entry["step"] == 5
    # thresholds 0, .25, .5, .75, 1: positives are 0.9, 0.6, 0.8; negatives 0.1, 0.3
    assert entry["true_positives"][:4] == [3, 3, 3, 2]
    assert entry["false_positives"][:4] == [2, 1, 0, 0]


def test_custom_scalars(tb):
    layout = tb.wait_for(lambda: tb.json("/data/plugin/custom_scalars/layout"), bool)
    (category,) = layout["category"]
    assert category["title"] == "Losses"
    assert category["chart"][0]["multiline"]["tag"] == ["loss", "cmp"]


def test_hparams(tb):
    exp = tb.wait_for(
        lambda: tb.post_json("/data/plugin/hparams/experiment", {"experimentName": ""}),
        lambda e: len(e.get("hparamInfos", [])) == 4,
    )
    infos = {i["name"]: i for i in exp["hparamInfos"]}
    assert set(infos) == {"lr", "opt", "bn", "wd"}
    assert infos["bn"]["type"] == "DATA_TYPE_BOOL" and infos["bn"]["domainDiscrete"] == [True]
    assert infos["opt"]["type"] == "DATA_TYPE_STRING"
    assert infos["lr"]["type"] == "DATA_TYPE_FLOAT64"
    assert {"hp/acc", "hp/loss"} <= {m["name"]["tag"] for m in exp["metricInfos"]}
    groups = tb.session_groups(2)
    by_run = {g["sessions"][0]["name"]: g for g in groups}
    main, other = by_run["main"], by_run["other"]
    assert main["hparams"] == {"lr": 0.1, "opt": "sgd", "bn": True}
    assert other["hparams"] == {"lr": 0.2, "wd": 1e-4}
    metrics = {m["name"]["tag"]: m["value"] for m in main["metricValues"]}
    assert metrics["hp/acc"] == f32(0.9) and metrics["hp/loss"] == 0.25
    assert {m["name"]["tag"]: m["value"] for m in other["metricValues"]}["hp/acc"] == f32(0.8)
    session = main["sessions"][0]
    assert session["status"] == "STATUS_SUCCESS" and session["startTimeSecs"] > 1e9
    assert (main["name"], other["name"]) == ("main", "other")  # one row per run, named after it


def test_hparams_one_row_per_run_also_for_runs_typed_alike_and_a_resumed_run(tmp_path, monkeypatch):
    """Two machines' SummaryWriter("runs/exp") gathered under one parent, one of them resumed: two rows."""
    for machine, lr, metric in (("m1", 0.1, 0.5), ("m2", 0.2, 0.75)):
        (tmp_path / machine).mkdir()
        monkeypatch.chdir(tmp_path / machine)
        with tbwriter.SummaryWriter("runs/exp") as w:
            w.add_scalar("loss", metric, 1)
            w.add_hparams({"lr": lr}, {"hp/metric": metric})
    monkeypatch.chdir(tmp_path / "m1")
    with tbwriter.SummaryWriter("runs/exp", purge_step=2) as w:  # m1's run resumed at step 2
        w.add_hparams({"lr": 0.1}, {"hp/metric": 0.625}, global_step=2)
    with tensorboard(tmp_path, load_fast=False) as tb:
        groups = tb.session_groups(2)
    rows = {g["name"]: g for g in groups}
    assert sorted(rows) == ["m1/runs/exp", "m2/runs/exp"]
    for name, lr, loss, metric in (("m1/runs/exp", 0.1, 0.5, 0.625), ("m2/runs/exp", 0.2, 0.75, 0.75)):
        (session,) = rows[name]["sessions"]  # not blended with the other machine's run
        assert session["name"] == name and rows[name]["hparams"] == {"lr": lr}
        metrics = {m["name"]["tag"]: m["value"] for m in rows[name]["metricValues"]}
        assert metrics == {"hp/metric": metric, "loss": loss}  # the resumed run's last value
