"""Write one of each kind tbwriter writes, read it back with tbwriter's reader and TensorBoard's.

Scalars, histograms, an image, a graph (npnn.trace) and hparams, through the protobuf runtime
installed. Besides the suite's own venv, .ci/run runs this module under the oldest and the newest
protobuf that pyproject.toml admits (.ci/oldest.txt and the newest), each in a fresh venv with the
TensorBoard that pip pairs with it: the generated tbwriter/proto modules must work on all of them.
"""

import struct
import zlib

import google.protobuf
import numpy as np
import pytest
from conftest import requires

import npnn
import tbwriter
from tbwriter import reader
from tbwriter.proto import hparams_pb2

STEPS = 5
HIST = np.linspace(-1, 1, 101, dtype=np.float32)
IMAGE = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)  # CHW


def _xor_step(x, y):
    with npnn.name_scope("Layer1"):
        h = npnn.functional.sigmoid(x @ npnn.Tensor(np.ones((2, 3), np.float32), requires_grad=True))
    with npnn.name_scope("Cost"):
        return ((h.sum(axis=1, keepdims=True) - y) ** 2).mean()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    x = npnn.Tensor(np.zeros((4, 2), np.float32), name="x")
    y = npnn.Tensor(np.zeros((4, 1), np.float32), name="y")
    with tbwriter.SummaryWriter(root) as w:
        w.add_graph(npnn.trace(_xor_step, x, y))
        for step in range(STEPS):
            w.add_scalar("loss", 1 / (step + 1), step)
            w.add_histogram("weights", HIST + step, step)
        w.add_image("image", IMAGE, 0)
        w.add_hparams({"lr": 0.1, "optimizer": "adam"}, {"hp/accuracy": 0.75})
    print(f"protobuf {google.protobuf.__version__}")
    return root


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_tbwriter_reader_reads_every_kind_back(logdir):
    events = [e for _, e in reader.read_logdir(logdir)]
    assert events[0].file_version == "brain.Event:2"
    values = {}
    for e in events:
        for v in e.summary.value:
            values.setdefault(v.tag, []).append((e.step, v))
    assert [(s, v.simple_value) for s, v in values["loss"]] == [(s, pytest.approx(1 / (s + 1))) for s in range(STEPS)]
    for step, v in values["weights"]:
        assert (v.histo.num, v.histo.min, v.histo.max) == (101, step - 1, step + 1)
        assert sum(v.histo.bucket) == 101 and v.histo.sum == pytest.approx(101 * step, abs=1e-3)
    ((_, image),) = values["image"]
    assert (image.image.width, image.image.height) == _png_size(image.image.encoded_image_string) == (5, 4)
    assert zlib.decompress(image.image.encoded_image_string[41:]), "the PNG's IDAT inflates"
    graph = [e.graph_def for e in events if e.WhichOneof("what") == "graph_def"]
    assert len(graph) == 1
    nodes = {n.name: n.op for n in tbwriter.proto.graph_pb2.GraphDef.FromString(graph[0]).node}
    assert nodes["x"] == "Placeholder" and any(n.startswith("Layer1/") for n in nodes)
    assert any(n.startswith("Cost/") for n in nodes)
    ends = values["_hparams_/session_start_info"] + values["_hparams_/session_end_info"]
    plugin = {v.tag: hparams_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content) for _, v in ends}
    start = plugin["_hparams_/session_start_info"].session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(0.1)
    assert start.hparams["optimizer"].string_value == "adam"
    assert plugin["_hparams_/session_end_info"].session_end_info.status == hparams_pb2.STATUS_SUCCESS
    assert [v.simple_value for _, v in values["hp/accuracy"]] == [0.75]


def test_tensorboard_reads_every_kind_back(logdir):
    requires("tensorboard", "test", "TensorBoard is the judge of what we write")
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = pea.EventAccumulator(str(logdir), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    assert acc.Graph() is not None and {"x", "y"} <= {n.name for n in acc.Graph().node}
    loss = [(t.step, float(np.asarray(t.tensor_proto.float_val)[0])) for t in acc.Tensors("loss")]
    assert loss == [(s, pytest.approx(1 / (s + 1))) for s in range(STEPS)]
    assert [t.step for t in acc.Tensors("weights")] == list(range(STEPS))
    assert len(acc.Tensors("image")) == 1
    meta = acc.SummaryMetadata("_hparams_/session_start_info")
    info = plugin_data_pb2.HParamsPluginData.FromString(meta.plugin_data.content).session_start_info
    assert info.hparams["optimizer"].string_value == "adam"
    assert {"loss", "weights", "image"} <= set(tags["tensors"])
