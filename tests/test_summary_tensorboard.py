"""tbwriter.summary's messages written the TF1 way (FileWriter.add_summary), read back by TensorBoard.

TensorBoard's Python loader (EventAccumulator) in process must see the exact protos; a real
`tensorboard --logdir` (Rust loader and Python loader, one server each for the module) must serve
the exact values: histogram buckets, decoded image pixels, rendered text, PR curves, hparams.
"""

import numpy as np
import pytest
from tbserver import tensorboard
from tensorboard.backend.event_processing import event_accumulator

import tbwriter
from tbwriter import summary as tbs
from tbwriter.image import decode_png, to_uint8

RNG = np.random.default_rng(7)
BIG = RNG.standard_normal((64, 64)).astype(np.float32) * 3  # the bit-table path
SMALL = np.array([0.1, 0.9, -0.0, 0.0], dtype=np.float32)  # the XOR lab's case, bisect path
EDGY = np.array([1e-12, -1e-12, 0.0, 1.1e-12, 1e20, -3.5, 5e-324], dtype=np.float64)
IMG_CHW = np.stack([np.linspace(-0.2, 1.2, 12).reshape(3, 4)] * 3).astype(np.float32)  # clipped at both ends
IMG_BATCH = RNG.integers(0, 256, (3, 5, 6, 1), dtype=np.uint8)  # NHWC gray
TEXT = "# Title\n\n**bold** and `code`"
LABELS = RNG.random(200) < 0.5
PREDICTIONS = np.clip(RNG.random(200) * 0.7 + LABELS * 0.3, 0, 1)
HPARAMS = {"lr": np.float32(0.5), "layers": np.int64(2), "bn": np.bool_(True), "act": "relu", "dropout": False}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("summaries")
    with tbwriter.FileWriter(str(root / "tf1")) as w:
        for step, (tag, x) in enumerate([("big", BIG), ("small", SMALL), ("edgy", EDGY)]):
            w.add_summary(tbs.merge([tbs.histogram(tag, x), tbs.scalar(f"{tag}_mean", float(x.mean()))]), step)
        w.add_summary(tbs.image("img", IMG_CHW).SerializeToString(), 1)
        w.add_summary(tbs.images("grid", IMG_BATCH, dataformats="NHWC"), 2)
        w.add_summary(tbs.text("notes", TEXT), 3)
        w.add_summary(tbs.pr_curve("pr", LABELS, PREDICTIONS, num_thresholds=11), 4)
        w.add_summary(tbs.custom_scalars({"Means": {"all": ["Multiline", ["big_mean", "small_mean"]]}}), 0)
        for s in tbs.hparams(HPARAMS, {"big_mean": 0.0}, group_name="g1", start_time_secs=1000.0):
            w.add_summary(s, 0)
    return root


@pytest.fixture(scope="module", params=[True, False], ids=["load_fast", "python_loader"])
def tb(request, logdir):
    with tensorboard(logdir, load_fast=request.param) as server:
        server.load_fast = request.param
        server.wait_for(lambda: server.json("/data/plugin/scalars/tags"), lambda t: "edgy_mean" in t.get("tf1", {}))
        yield server


def expected_buckets(x: np.ndarray, load_fast: bool) -> list:
    """What TensorBoard serves for a TF1 histogram: its loader's conversion of our HistogramProto.

    Python loader (data_compat): drop empty end buckets, then [min] + inner limits | inner limits +
    [max], as float32. Rust loader: every bucket, [min] + limits[:-1] | limits[:-1] + [max], float64."""
    h = tbs.histogram("h", x).value[0].histo
    counts, limits = list(h.bucket), list(h.bucket_limit)
    if load_fast:
        return [list(r) for r in zip([h.min] + limits[:-1], limits[:-1] + [h.max], counts)]
    nz = [i for i, c in enumerate(counts) if c > 0]
    start, end = nz[0], nz[-1]
    inner = limits[start:end]
    rows = np.array([[h.min] + inner, inner + [h.max], counts[start : end + 1]], dtype=np.float32).T
    return rows.tolist()


def test_event_accumulator_sees_exact_protos(logdir):
    acc = event_accumulator.EventAccumulator(str(logdir / "tf1"), size_guidance={"histograms": 0, "tensors": 0})
    acc.Reload()
    for tag, x in (("big", BIG), ("small", SMALL), ("edgy", EDGY)):
        (event,) = acc.Histograms(tag)
        got, want = event.histogram_value, tbs.histogram(tag, x).value[0].histo
        for field in ("min", "max", "num", "sum", "sum_squares"):
            assert np.float64(getattr(got, field)).tobytes() == np.float64(getattr(want, field)).tobytes(), field
        assert list(got.bucket_limit) == list(want.bucket_limit) and list(got.bucket) == list(want.bucket)
    img = acc.Images("img")[0]
    assert img.encoded_image_string == tbs.image("img", IMG_CHW).value[0].image.encoded_image_string
    assert {"notes/text_summary", "pr", "custom_scalars__config__", "_hparams_/session_start_info"} <= set(
        acc.Tags()["tensors"]
    )


def test_histogram_buckets_served(tb):
    for tag, x in (("big", BIG), ("small", SMALL), ("edgy", EDGY)):
        got = tb.wait_for(lambda: tb.json("/data/plugin/histograms/histograms", run="tf1", tag=tag), bool)
        ((_, _, buckets),) = got
        assert buckets == expected_buckets(x, tb.load_fast)
        assert sum(c for _, _, c in buckets) == x.size


def test_image_pixels_served(tb):
    for tag, step, want in (
        ("img", 1, to_uint8(IMG_CHW.transpose(1, 2, 0))),
        ("grid", 2, np.concatenate(list(IMG_BATCH), axis=1)),
    ):
        listing = tb.wait_for(lambda: tb.json("/data/plugin/images/images", run="tf1", tag=tag, sample=0), bool)
        assert listing[0]["step"] == step
        png = tb.get("/data/plugin/images/individualImage?" + listing[0]["query"])
        assert np.array_equal(decode_png(png), want)
    assert want.shape == (5, 18, 1)
    gray = to_uint8(IMG_CHW.transpose(1, 2, 0))[..., 0].reshape(-1).tolist()
    assert gray[0] == 0 and gray[-1] == 255 and gray == sorted(gray)  # -0.2 -> 0, 1.2 -> 255: no wrap-around


def test_text_rendered(tb):
    got = tb.wait_for(lambda: tb.json("/data/plugin/text/text", run="tf1", tag="notes/text_summary"), bool)
    assert [g["step"] for g in got] == [3]
    assert got[0]["text"] == "<h1>Title</h1>\n<p><strong>bold</strong> and <code>code</code></p>"


def test_pr_curve_served(tb):
    got = tb.wait_for(
        lambda: tb.json("/data/plugin/pr_curves/pr_curves", run="tf1", tag="pr"), lambda r: bool(r.get("tf1"))
    )
    (entry,) = got["tf1"]
    want = np.frombuffer(
        tbs.pr_curve("pr", LABELS, PREDICTIONS, 11).value[0].tensor.tensor_content, dtype="<f4"
    ).reshape(6, 11)
    # The plugin cuts trailing thresholds where TP + FP == 0.
    end = int(np.flatnonzero(want[0] + want[1])[-1]) + 1
    assert entry["step"] == 4 and 1 <= end <= 11
    assert entry["true_positives"] == want[0, :end].tolist() and entry["false_positives"] == want[1, :end].tolist()
    assert entry["true_negatives"] == want[2, :end].tolist() and entry["false_negatives"] == want[3, :end].tolist()
    assert entry["precision"] == want[4, :end].tolist() and entry["recall"] == want[5, :end].tolist()
    assert entry["true_positives"][0] == LABELS.sum()


def test_custom_scalars_layout_served(tb):
    layout = tb.wait_for(lambda: tb.json("/data/plugin/custom_scalars/layout"), bool)
    assert layout["category"][0]["title"] == "Means"
    assert layout["category"][0]["chart"][0]["multiline"]["tag"] == ["big_mean", "small_mean"]


def test_hparams_served_with_types(tb):
    exp = tb.wait_for(
        lambda: tb.post_json("/data/plugin/hparams/experiment", {"experimentName": ""}),
        lambda e: len(e.get("hparamInfos", [])) == len(HPARAMS),
    )
    types = {i["name"]: i["type"] for i in exp["hparamInfos"]}
    assert types == {
        "lr": "DATA_TYPE_FLOAT64",
        "layers": "DATA_TYPE_FLOAT64",
        "bn": "DATA_TYPE_BOOL",
        "act": "DATA_TYPE_STRING",
        "dropout": "DATA_TYPE_BOOL",
    }
    (group,) = tb.session_groups(1)
    assert group["name"] == "g1"
    assert group["hparams"] == {"lr": 0.5, "layers": 2.0, "bn": True, "act": "relu", "dropout": False}
    (session,) = group["sessions"]
    assert session["startTimeSecs"] == 1000.0 and session["status"] == "STATUS_SUCCESS"
    assert {m["name"]["tag"]: m["value"] for m in group["metricValues"]}["big_mean"] == pytest.approx(
        float(BIG.mean()), rel=1e-6
    )
