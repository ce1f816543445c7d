"""npnn.summary: TF1-style summaries recorded under name scopes, evaluated when merged."""

import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import npnn
from npnn import Parameter, Tensor, summary
from tbwriter import FileWriter
from tbwriter import summary as tbs
from tbwriter.proto.summary_pb2 import Summary


@pytest.fixture(autouse=True)
def fresh_collections():
    summary.clear()
    yield
    summary.clear()


def test_tags_follow_name_scopes():
    w = Parameter(np.ones((2, 2), np.float32))
    with npnn.name_scope("Layer1"):
        op = summary.histogram("W1", w)
        with npnn.name_scope("inner"):
            summary.scalar("c", Tensor(np.float32(1.0)))
    summary.scalar("accuracy", Tensor(np.float32(0.5)))
    assert op.tag == "Layer1/W1"
    assert [o.tag for o in summary.get_collection()] == ["Layer1/W1", "Layer1/inner/c", "accuracy"]
    assert [v.tag for v in summary.merge_all().value] == ["Layer1/W1", "Layer1/inner/c", "accuracy"]


def test_values_are_read_at_merge_time_like_sess_run():
    w = Parameter(np.array([1.0, 2.0], np.float32))
    summary.histogram("w", w)
    summary.scalar("first", lambda: float(w.data[0]))  # a callable is evaluated at merge time too
    before = summary.merge_all()
    w.data += 10.0  # an optimizer updates parameters in place
    after = summary.merge_all()
    assert before.value[0].histo.max == 2.0 and after.value[0].histo.max == 12.0
    assert before.value[1].simple_value == 1.0 and after.value[1].simple_value == 11.0


def test_recording_a_tag_again_replaces_it():
    for step in range(3):  # an eager forward pass records its activations every step
        act = Tensor(np.full(3, float(step), np.float32))
        summary.histogram("act", act)
    ops = summary.get_collection()
    assert len(ops) == 1 and ops[0].tensor is act
    assert summary.merge_all().value[0].histo.sum == 6.0


def test_histogram_and_scalar_match_tbwriter_summary_bit_for_bit():
    values = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    summary.histogram("h", Tensor(values))
    summary.scalar("s", Tensor(np.float32(0.125)))
    expected = tbs.merge([tbs.histogram("h", values), tbs.scalar("s", np.float32(0.125))])
    assert summary.merge_all().SerializeToString() == expected.SerializeToString()


def test_merge_subset_and_named_collections():
    a = summary.scalar("a", 1.0)
    summary.scalar("b", 2.0, collections=["extra"])
    summary.scalar("c", 3.0)
    assert [v.tag for v in summary.merge([a]).value] == ["a"]
    assert [(v.tag, v.simple_value) for v in summary.merge_all("extra").value] == [("b", 2.0)]
    assert [v.tag for v in summary.merge_all().value] == ["a", "c"]
    summary.clear("extra")
    assert summary.merge_all("extra").value == []
    assert isinstance(a.summary(), Summary) and a.summary().value[0].simple_value == 1.0


def test_image_and_text_summaries():
    imgs = np.zeros((5, 4, 6, 3), np.float32)
    imgs[:, :, :, 0] = 1.0
    with npnn.name_scope("Input"):
        summary.image("x", Tensor(imgs), max_outputs=2)
    summary.text("note", "**XOR** lab")
    s = summary.merge_all()
    img, txt = s.value
    assert img.tag == "Input/x" and img.image.encoded_image_string.startswith(b"\x89PNG")
    assert (img.image.height, img.image.colorspace) == (4, 3) and img.image.width >= 2 * 6
    assert txt.tag == "note/text_summary" and txt.tensor.string_val == [b"**XOR** lab"]
    assert txt.metadata.plugin_data.plugin_name == "text"


def test_trace_shows_summaries_as_graph_nodes():
    w = Parameter(np.ones((2, 1), np.float32), name="w")

    def f(x):
        with npnn.name_scope("Layer"):
            out = npnn.sigmoid(x @ w)
            summary.histogram("Out", out)
        return out

    g = npnn.trace(f, Tensor(np.ones((4, 2), np.float32), name="x"))
    node = g["Layer/Out"]
    assert node.op == "HistogramSummary" and node.inputs == ["Layer/Sigmoid"]
    assert {n.name for n in g.as_graph_def().node} >= {"x", "w", "Layer/MatMul", "Layer/Sigmoid", "Layer/Out"}


def test_bad_input_names_the_argument_and_tag():
    with pytest.raises(ValueError, match="name"):
        summary.scalar("", 1.0)
    with pytest.raises(TypeError, match="'t'"):
        summary.histogram("t", None)
    with pytest.raises(ValueError, match="max_outputs"):
        summary.image("i", np.zeros((1, 2, 2, 3)), max_outputs=0)
    summary.scalar("vec", Tensor(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match=r"'vec'.*shape \(3,\)"):
        summary.merge_all()
    summary.clear()
    summary.histogram("bad", Tensor(np.array([1.0, np.nan], np.float32)))
    with pytest.raises(ValueError, match="'bad'"):
        summary.merge_all()
    with pytest.raises(KeyError, match="nope"):
        summary.merge_all("nope")
    with pytest.raises(TypeError, match=r"summaries\[0\]"):
        summary.merge(["x"])


def test_merged_every_step_read_back_by_tensorboard(tmp_path):
    """The lab's pattern: record once, merge and add_summary every step; TensorBoard reads it all."""
    w = Parameter(np.array([0.5, -0.5], np.float32))
    with npnn.name_scope("Layer1"):
        summary.histogram("W1", w)
    with npnn.name_scope("Cost"):
        summary.scalar("Cost", lambda: float(np.abs(w.data).sum()))
    with FileWriter(tmp_path) as writer:
        for step in range(20):
            writer.add_summary(summary.merge_all(), global_step=step)
            w.data *= 0.5
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0}).Reload()
    costs = acc.Scalars("Cost/Cost")
    assert [e.step for e in costs] == list(range(20))
    np.testing.assert_allclose([e.value for e in costs], [0.5**s for s in range(20)], rtol=1e-6)
    hist = acc.Histograms("Layer1/W1")
    assert len(hist) == 20 and hist[3].histogram_value.max == pytest.approx(0.5**4)
    assert hist[3].histogram_value.num == 2


def test_merge_all_bytes_equal_protobuf_built_summary():
    rng = np.random.default_rng(5)
    vals = [
        rng.standard_normal((4, 2)).astype(np.float32),
        np.array([0.0, -0.0, 1e-40], np.float32),
        rng.standard_normal(1000),
        np.arange(3, dtype=np.int32),
    ]
    for i, v in enumerate(vals):
        summary.histogram(f"h{i}", v)
    summary.scalar("big", np.float64(1e300))  # beyond float32: +inf, as the protobuf setter gives
    summary.scalar("s", Tensor(np.float32(0.25)))
    summary.text("t", "hello")
    want = Summary()
    for i, v in enumerate(vals):
        want.value.extend(tbs.histogram(f"h{i}", v).value)
    want.value.add(tag="big", simple_value=1e300)
    want.value.add(tag="s", simple_value=0.25)
    want.value.extend(tbs.text("t", "hello").value)
    got = summary.merge_all()
    assert got.SerializeToString() == want.SerializeToString()
    assert got.value[4].simple_value == float("inf")


def test_import_npnn_then_npnn_summary_loads_tbwriter_only_when_used():
    code = (
        "import sys, npnn\n"
        "before = 'tbwriter' in sys.modules\n"
        "npnn.summary.scalar('c', npnn.Tensor(2.0))\n"
        "print(before, 'tbwriter' in sys.modules, npnn.summary.merge_all().value[0].simple_value)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "2.0"]
