"""The peers' methods SummaryWriter gained, read back by a real `tensorboard --logdir` (both loaders).

Audio, video (GIF in the images plugin), figures, boxes, mesh, pr_curve_raw, custom scalar
charts, new-style scalars, embeddings through the projector's HTTP API, and a traced torch
graph. One logdir; one server per load_fast value serves every test of the module.
"""

import io
import json
import wave

import numpy as np
import pytest
from conftest import requires
from tbserver import tensorboard
from test_writer import accumulator, event_files, f32

import tbwriter
from tbwriter.proto import graph_pb2

torch = requires("torch", "peers", "the module's logdir logs torch tensors and an nn.Module's graph")
PIL = requires("PIL.Image", "media", "Pillow decodes the GIFs and boxes")
matplotlib = requires("matplotlib", "media", "add_figure draws with matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the Agg backend)

RATE = 8000
WAVE = (0.5 * np.sin(np.arange(800) * 2 * np.pi * 440 / RATE)).astype(np.float32)
CLIPS = np.random.default_rng(0).integers(0, 256, (3, 4, 3, 8, 6), dtype=np.uint8)  # N T C H W
VERTS = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=np.float32)
FACES = np.array([[[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]], dtype=np.int32)
COLORS = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]]], dtype=np.uint8)
EMB = np.random.default_rng(1).standard_normal((12, 5)).astype(np.float32)
SPRITES = np.random.default_rng(2).random((12, 3, 6, 6)).astype(np.float32)
PR_ROWS = ([3, 2, 1], [2, 1, 0], [0, 1, 2], [0, 1, 2], [0.6, 2 / 3, 1.0], [1.0, 2 / 3, 1 / 3])


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 3)
        self.out = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


OPENVINO_XML = """<?xml version="1.0"?>
<net name="tiny" version="11"><layers>
<layer id="0" name="x" type="Parameter"/><layer id="1" name="relu" type="ReLU"/><layer id="2" name="y" type="Result"/>
</layers><edges><edge from-layer="0" from-port="0" to-layer="1" to-port="0"/>
<edge from-layer="1" from-port="1" to-layer="2" to-port="0"/></edges></net>
"""


def onnx_file(path):
    """A two-operator ONNX model (MatMul then Relu), built with onnx.helper, saved to path."""
    onnx = requires("onnx", "peers", "add_onnx_graph reads .onnx files with onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 4], [0.5] * 12)],
    )
    onnx.save(helper.make_model(graph), str(path))
    return str(path)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tb")
    w = tbwriter.SummaryWriter(root / "main")
    w.add_audio("sound", torch.from_numpy(WAVE), 1, sample_rate=RATE)
    w.add_video("clip", CLIPS, 2, fps=5)
    fig = plt.figure(figsize=(2, 1.5), dpi=50)
    plt.plot([0, 1], [1, 0])
    w.add_figure("figure", fig, 3)
    w.add_figure("figures", [plt.figure(figsize=(1, 1), dpi=40) for _ in range(3)], 3, close=False)
    w.add_image_with_boxes(
        "boxes", np.zeros((3, 40, 60), np.float32), torch.tensor([[2, 3, 40, 35]]), 4, labels=["cat"]
    )
    w.add_mesh("mesh", VERTS, colors=COLORS, faces=FACES, config_dict={"camera": {"fov": 60}}, global_step=5)
    w.add_pr_curve_raw("pr_raw", *PR_ROWS, global_step=6, num_thresholds=3)
    w.add_custom_scalars_multilinechart(["new", "dbl"], category="cat1", title="lines")
    w.add_scalar("new", torch.tensor(0.25), 7, new_style=True)
    w.add_scalar("dbl", 1 / 3, 7, new_style=True, double_precision=True)
    w.add_scalar("named", 2.0, 7, display_name="A named one", summary_description="what it shows")
    w.add_tensor("tensor", torch.arange(6, dtype=torch.int32).reshape(2, 3), 8)
    w.add_images("listed", [torch.zeros(3, 4, 5), torch.ones(3, 4, 5)], 8)  # a list of CHW, as the peers take
    w.add_graph(Net(), torch.zeros(2, 4))
    w.add_embedding(
        torch.from_numpy(EMB),
        metadata=[f"p{i}" for i in range(12)],
        label_img=torch.from_numpy(SPRITES),
        global_step=9,
        tag="emb/a",
    )
    w.add_embedding(EMB[:4], metadata=[[i, f"n{i}"] for i in range(4)], metadata_header=["idx", "name"], tag="two")
    w.close()
    w.add_scalar("after_close", 1.0, 10)  # reopens a new file in the same run
    w.close()
    with tbwriter.SummaryWriter(root / "onnx") as w2:
        w2.add_onnx_graph(prototxt=onnx_file(root / "model.onnx"))  # torch's keyword; tensorboardX's positional
    (root / "model.xml").write_text(OPENVINO_XML)
    with tbwriter.SummaryWriter(root / "openvino") as w2:
        w2.add_openvino_graph(str(root / "model.xml"))
    with tbwriter.SummaryWriter(root / "margin") as w2:
        w2.add_custom_scalars_marginchart(["v", "lo", "hi"], category="cat2", title="band")
        for tag, v in (("v", 1.0), ("lo", 0.5), ("hi", 1.5)):
            w2.add_scalar(tag, v, 0)
    return root


@pytest.fixture(scope="module", params=[True, False], ids=["load_fast", "python_loader"])
def tb(request, logdir):
    with tensorboard(logdir, load_fast=request.param) as server:
        server.load_fast = request.param
        server.wait_for(
            lambda: server.json("/data/plugin/scalars/tags"),
            lambda t: "after_close" in t.get("main", {}) and "hi" in t.get("margin", {}),
        )
        yield server


def test_audio(tb):
    listing = tb.wait_for(lambda: tb.json("/data/plugin/audio/audio", run="main", tag="sound", sample=0), bool)
    assert listing[0]["step"] == 1
    body = tb.get("/data/plugin/audio/individualAudio?" + listing[0]["query"])
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    np.testing.assert_allclose(pcm / 32767, WAVE, atol=1 / 32767)


def fetch_image(tb, tag, run="main"):
    listing = tb.wait_for(lambda: tb.json("/data/plugin/images/images", run=run, tag=tag, sample=0), bool)
    body = tb.get("/data/plugin/images/individualImage?" + listing[0]["query"])
    return listing[0], PIL.open(io.BytesIO(body))


def test_video_is_an_animated_gif_of_the_tiled_clips(tb):
    meta, gif = fetch_image(tb, "clip")
    # 3 clips padded to 4, tiled as the peers do (rows = 2**((3).bit_length()-1)//2) = 1): 8 x (4*6), 4 frames
    assert meta["step"] == 2 and gif.format == "GIF" and gif.size == (24, 8) and gif.n_frames == 4
    assert gif.info["duration"] == 200
    gif.seek(2)
    frame = np.asarray(gif.convert("RGB"), dtype=np.int32)
    expect = CLIPS[1, 2].transpose(1, 2, 0).astype(np.int32)  # clip 1 sits top right
    assert np.abs(frame[:, 6:12] - expect).mean() < 24  # GIF's 256-colour palette
    assert not frame[:, 18:].any()  # the padding clip is black


def test_figures_and_boxes(tb):
    meta, png = fetch_image(tb, "figure")
    assert meta["step"] == 3 and png.size == (100, 75)
    pixels = np.asarray(png)
    assert pixels.shape == (75, 100, 3) and (pixels == 255).mean() > 0.5  # mostly white, a line drawn
    assert fetch_image(tb, "figures")[1].size == (120, 40)  # three 40x40 figures side by side
    meta, listed = fetch_image(tb, "listed")
    assert meta["step"] == 8 and np.asarray(listed).shape == (4, 10, 3)
    assert not np.asarray(listed)[:, :5].any() and (np.asarray(listed)[:, 5:] == 255).all()
    meta, png = fetch_image(tb, "boxes")
    box = np.asarray(png)
    assert meta["step"] == 4 and box.shape == (40, 60, 3)
    assert tuple(box[3, 20]) == (255, 0, 0) and tuple(box[20, 40]) == (255, 0, 0)  # top and right edge
    assert not box[8, 20].any() and not box[3, 50].any()  # inside the box above its label, and outside


def test_mesh(tb):
    tags = tb.wait_for(lambda: tb.json("/data/plugin/mesh/tags"), lambda t: "mesh" in t.get("main", {}))
    assert tags["main"]["mesh"]["samples"] == 1
    meta = tb.json("/data/plugin/mesh/meshes", run="main", tag="mesh", sample=0)
    assert {m["content_type"] for m in meta} == {1, 2, 3}  # VERTEX, FACE, COLOR
    assert json.loads(meta[0]["config"]) == {"camera": {"fov": 60}} and meta[0]["step"] == 5
    for kind, expect, dtype in (("VERTEX", VERTS, "<f4"), ("FACE", FACES, "<i4"), ("COLOR", COLORS, "u1")):
        body = tb.get("/data/plugin/mesh/data", run="main", tag="mesh", sample=0, step=5, content_type=kind)
        np.testing.assert_array_equal(np.frombuffer(body, dtype).reshape(expect.shape[1:]), expect[0])


def test_pr_curve_raw(tb):
    got = tb.wait_for(
        lambda: tb.json("/data/plugin/pr_curves/pr_curves", run="main", tag="pr_raw"), lambda r: bool(r.get("main"))
    )
    (entry,) = got["main"]
    assert entry["step"] == 6 and entry["true_positives"] == PR_ROWS[0] and entry["false_negatives"] == PR_ROWS[3]
    assert entry["precision"] == pytest.approx(PR_ROWS[4], rel=1e-6)
    assert entry["recall"] == pytest.approx(PR_ROWS[5], rel=1e-6)


def test_custom_scalar_charts(tb):
    layout = tb.wait_for(
        lambda: tb.json("/data/plugin/custom_scalars/layout"), lambda r: len(r.get("category", [])) == 2
    )
    charts = {c["title"]: c["chart"][0] for c in layout["category"]}
    assert charts["cat1"] == {"title": "lines", "multiline": {"tag": ["new", "dbl"]}}
    assert charts["cat2"] == {"title": "band", "margin": {"series": [{"value": "v", "lower": "lo", "upper": "hi"}]}}


def test_new_style_and_named_scalars(tb):
    tags = tb.json("/data/plugin/scalars/tags")["main"]
    if not tb.load_fast:  # the Rust loader drops a simple_value's display name, the peers' too
        assert tags["named"]["displayName"] == "A named one" and "what it shows" in tags["named"]["description"]
    # The Rust loader serves no DT_DOUBLE scalar (torch's double_precision=True): its own limit.
    for tag, value in (("new", 0.25), ("dbl", 1 / 3), ("named", 2.0), ("after_close", 1.0)):
        if tb.load_fast and tag == "dbl":
            continue
        ((_, step, got),) = tb.json("/data/plugin/scalars/scalars", run="main", tag=tag)
        assert got == pytest.approx(value, rel=1e-15 if tag == "dbl" else 1e-7), tag
        assert step == (10 if tag == "after_close" else 7)


def test_torch_graph_has_one_scope_per_submodule(tb):
    body = tb.wait_for(lambda: tb.get("/data/plugin/graphs/graph", run="main", conceptual="false"), bool)
    from google.protobuf import text_format

    g = text_format.Parse(body.decode(), graph_pb2.GraphDef())
    ops = {n.name: n.op for n in g.node}
    assert [n for n, op in ops.items() if op == "aten::linear"] == [
        "Net/Linear[hidden]/input",
        "Net/Linear[out]/7",
    ] or {n.rsplit("/", 1)[0] for n, op in ops.items() if op == "aten::linear"} == {
        "Net/Linear[hidden]",
        "Net/Linear[out]",
    }
    assert "input/x" in ops and "output/output.1" in ops and "aten::relu" in ops.values()
    shapes = {
        n.name: [d.size for d in n.attr["_output_shapes"].list.shape[0].dim]
        for n in g.node
        if n.attr["_output_shapes"].list.shape
    }
    assert shapes["input/x"] == [2, 4] and shapes["output/output.1"] == [2, 2]


def test_projector_config_tensor_metadata_and_sprite(tb, logdir):
    assert "main" in tb.wait_for(lambda: tb.json("/data/plugin/projector/runs"), lambda r: "main" in r)
    info = tb.json("/data/plugin/projector/info", run="main")
    emb = {e["tensorName"]: e for e in info["embeddings"]}
    assert set(emb) == {"emb/a:00009", "two:00000"}
    assert emb["emb/a:00009"]["sprite"]["singleImageDim"] == [6, 6]
    got = np.frombuffer(tb.get("/data/plugin/projector/tensor", run="main", name="emb/a:00009"), "<f4")
    np.testing.assert_array_equal(got.reshape(12, 5), EMB)
    meta = tb.get("/data/plugin/projector/metadata", run="main", name="emb/a:00009").decode().splitlines()
    assert meta == [f"p{i}" for i in range(12)]
    meta = tb.get("/data/plugin/projector/metadata", run="main", name="two:00000").decode().splitlines()
    assert meta == ["idx\tname"] + [f"{i}\tn{i}" for i in range(4)]
    sprite = np.asarray(
        PIL.open(io.BytesIO(tb.get("/data/plugin/projector/sprite_image", run="main", name="emb/a:00009")))
    )
    assert sprite.shape == (24, 24, 3)  # ceil(sqrt(12*36)/6) = 4 per row, padded square
    np.testing.assert_array_equal(sprite[6:12, 0:6], np.rint(SPRITES[4].transpose(1, 2, 0) * 255))


# --- in process: what the HTTP API does not serve, and what writes nothing ----------------------


def test_add_tensor_read_by_event_accumulator(logdir):
    (t,) = accumulator(logdir / "main").Tensors("tensor")
    from tensorboard.util import tensor_util

    assert t.step == 8
    np.testing.assert_array_equal(tensor_util.make_ndarray(t.tensor_proto), np.arange(6).reshape(2, 3))


def test_same_step_and_tag_embedding_is_kept_not_overwritten(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        w.add_embedding(np.eye(3), global_step=1)
        w.add_embedding(2 * np.eye(3), global_step=1)
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "default:00001"' in config and 'tensor_name: "default_1:00001"' in config
    assert (tmp_path / "00001" / "default_1" / "tensors.tsv").read_text().startswith("2.0\t0.0\t0.0\n")


def test_write_to_disk_false_writes_nothing(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path / "none", write_to_disk=False)
    w.add_scalar("a", 1.0, 1)
    w.add_scalars("m", {"x": 1.0}, 1)
    w.add_embedding(np.eye(2))
    w.add_hparams({"lr": 0.1}, {"m": 1.0}, run_name="sub")
    w.flush()
    w.close()
    w.add_scalar("a", 1.0, 2)
    assert not (tmp_path / "none").exists()


def test_use_metadata_and_export_scalars_to_json(tmp_path):
    with tbwriter.SummaryWriter(logdir=tmp_path, keep_scalars_for_json=True) as w:  # tensorboardX's keyword
        with w.use_metadata(global_step=42, walltime=1000.5):
            w.add_scalar("s", 1.0)
            w.add_scalars("m", {"a": 2.0})
            w.add_text("t", "x")
        w.add_scalar("s", 3.0, 43)
        w.export_scalars_to_json(tmp_path / "all.json")
    acc = accumulator(tmp_path)
    assert [(e.step, e.wall_time, e.value) for e in acc.Scalars("s")] == [
        (42, 1000.5, 1.0),
        (43, pytest.approx(acc.Scalars("s")[1].wall_time), 3.0),
    ]
    assert acc.Tensors("t/text_summary")[0].step == 42
    assert json.loads((tmp_path / "all.json").read_text()) == {f"{tmp_path}/m_a": [[1000.5, 42, 2.0]]}


def test_hparams_name_keyword_and_positional_name(tmp_path):
    with tbwriter.SummaryWriter(tmp_path) as w:
        w.add_hparams({"lr": 0.1}, {"hp/m": 0.5}, name="kw")  # tensorboardX keyword
        w.add_hparams({"lr": 0.2}, {"hp/m": 0.7}, "pos")  # tensorboardX positional third argument
        w.add_hparams({"lr": 0.3}, {"hp/m": 0.9}, run_name="torch")
        with pytest.raises(ValueError, match="name='a' and run_name='b'"):
            w.add_hparams({"lr": 0.3}, {"hp/m": 0.9}, run_name="b", name="a")
    for run, value in (("kw", 0.5), ("pos", 0.7), ("torch", 0.9)):
        assert [e.value for e in accumulator(tmp_path / run).Scalars("hp/m")] == [f32(value)]


def test_graph_of_wrong_input_size_raises_the_peers_error(tmp_path):
    w = tbwriter.SummaryWriter(tmp_path)
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        w.add_graph(Net(), torch.zeros(2, 5))
    w.close()
    assert len(event_files(tmp_path)) == 1


@pytest.mark.parametrize(
    "run, expect",
    [
        ("onnx", {("x", "Variable", ()), ("y", "Variable", ()), ("h", "MatMul", ("x", "w")), ("y", "Relu", ("h",))}),
        ("openvino", {("x", "Parameter", ()), ("relu", "ReLU", ("x",)), ("y", "Result", ("relu",))}),
    ],
)
def test_onnx_and_openvino_graphs(tb, run, expect):
    from google.protobuf import text_format

    body = tb.wait_for(lambda: tb.get("/data/plugin/graphs/graph", run=run, conceptual="false"), bool)
    g = text_format.Parse(body.decode(), graph_pb2.GraphDef())
    assert {(n.name, n.op, tuple(n.input)) for n in g.node} == expect


def test_import_and_numpy_only_calls_load_no_optional_library(tmp_path):
    code = (
        "import sys, numpy as np, tbwriter\n"
        "w = tbwriter.SummaryWriter(sys.argv[1])\n"
        "w.add_scalar('s', 1.0, 1); w.add_audio('a', np.zeros(10), 1); w.add_mesh('m', np.zeros((1, 3, 3)))\n"
        "w.add_embedding(np.eye(4), label_img=np.zeros((4, 1, 2, 2))); w.add_tensor('t', np.ones(2))\n"
        "w.add_pr_curve_raw('p', *[[1, 0]] * 6, num_thresholds=2); w.close()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'PIL', 'matplotlib', 'onnx'}))\n"
    )
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_add_figure_closes_the_figure_unless_told_not_to(tmp_path):
    fig_closed, fig_kept = plt.figure(), plt.figure()
    with tbwriter.SummaryWriter(tmp_path) as w:
        w.add_figure("closed", fig_closed, 1)
        w.add_figure("kept", [fig_kept], 1, close=False)
    assert not plt.fignum_exists(fig_closed.number) and plt.fignum_exists(fig_kept.number)
    plt.close(fig_kept)
    assert {e.step for tag in ("closed", "kept") for e in accumulator(tmp_path).Images(tag)} == {1}
