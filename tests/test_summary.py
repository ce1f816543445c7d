"""Summary builders: values, wire layout, and agreement with TensorBoard's own summary code.

TensorBoard's `*.summary.pb` functions import TensorFlow, which tests must not need; where they
would be called, the tests rebuild their output from TensorBoard's own TF-free pieces
(plugin `metadata` modules, `tensorboard.util.tensor_util`) and compare bytes.
"""

import struct
import time
import zlib

import numpy as np
import pytest

from tbwriter import summary as tbs
from tbwriter._convert import as_array
from tbwriter.image import decode_png, encode_png, grid, to_uint8
from tbwriter.proto import types_pb2

from tensorboard.compat.proto import summary_pb2 as tb_summary_pb2
from tensorboard.plugins.custom_scalar import layout_pb2 as tb_layout_pb2
from tensorboard.plugins.custom_scalar import metadata as tb_cs_metadata
from tensorboard.plugins.hparams import api_pb2 as tb_hp_api
from tensorboard.plugins.hparams import metadata as tb_hp_metadata
from tensorboard.plugins.pr_curve import metadata as tb_pr_metadata
from tensorboard.plugins.text import metadata as tb_text_metadata
from tensorboard.util import tensor_util


# ---------------------------------------------------------------- scalar, merge


def test_scalar_is_tf1_simple_value():
    s = tbs.scalar("loss", 0.25)
    assert (
        s.SerializeToString()
        == tb_summary_pb2.Summary(
            value=[tb_summary_pb2.Summary.Value(tag="loss", simple_value=0.25)]
        ).SerializeToString()
    )
    for v in (np.float64(1.5), np.array(1.5), np.array([1.5]), 1.5, [1.5], np.float16(1.5), True):
        assert tbs.scalar("x", v).value[0].simple_value == (1.0 if v is True else 1.5)
    assert np.isnan(tbs.scalar("x", float("nan")).value[0].simple_value)
    assert tbs.scalar("x", -np.inf).value[0].simple_value == -np.inf


def test_scalar_errors_name_the_argument():
    with pytest.raises(ValueError, match="name"):
        tbs.scalar("", 1.0)
    with pytest.raises(TypeError, match="name"):
        tbs.scalar(3, 1.0)
    with pytest.raises(ValueError, match="exactly one"):
        tbs.scalar("x", [1.0, 2.0])
    with pytest.raises(TypeError, match="value"):
        tbs.scalar("x", "1.0")


def test_merge_messages_and_bytes():
    a, b = tbs.scalar("a", 1.0), tbs.histogram("b", [1.0, 2.0])
    m = tbs.merge([a, b.SerializeToString(), tbs.text("c", "hi")])
    assert [v.tag for v in m.value] == ["a", "b", "c/text_summary"]
    assert m.value[1].histo == b.value[0].histo
    assert tbs.merge([]).value == []
    with pytest.raises(TypeError, match=r"summaries\[1\]"):
        tbs.merge([a, 3])
    with pytest.raises(ValueError, match=r"summaries\[0\]"):
        tbs.merge([b"\xff\xff\xff"])
    with pytest.raises(TypeError, match="summaries"):
        tbs.merge(a)


# ---------------------------------------------------------------- images


def test_to_uint8_scales_clips_rounds_without_wraparound():
    x = np.array([0.0, 1.0, 1.2, -0.1, 0.5, 0.499, 1 / 255, 0.998], dtype=np.float32)
    assert to_uint8(x).tolist() == [0, 255, 255, 0, 128, 127, 1, 254]
    u = np.array([0, 7, 255], dtype=np.uint8)
    assert to_uint8(u) is u
    assert to_uint8(np.array([True, False])).tolist() == [255, 0]
    assert to_uint8(np.array([np.nan, np.inf, -np.inf, 2.0])).tolist() == [0, 255, 0, 255]
    assert to_uint8(np.array([1e6], dtype=np.float64)).tolist() == [255]


def test_png_round_trip_and_structure():
    rng = np.random.default_rng(0)
    for c in (1, 2, 3, 4):
        img = rng.integers(0, 256, (5, 7, c), dtype=np.uint8)
        png = encode_png(img)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR" and png.endswith(b"IEND\xaeB`\x82")
        w, h, depth, color = struct.unpack(">IIBB", png[16:26])
        assert (w, h, depth, color) == (7, 5, 8, {1: 0, 2: 4, 3: 2, 4: 6}[c])
        assert np.array_equal(decode_png(png), img)


def test_image_dataformats_agree():
    rng = np.random.default_rng(1)
    hwc = rng.random((4, 6, 3)).astype(np.float32)
    want = decode_png(tbs.image("i", hwc, dataformats="HWC").value[0].image.encoded_image_string)
    assert np.array_equal(want, to_uint8(hwc))
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    for tensor, fmt in [(chw, "CHW"), (chw, "chw"), (hwc.transpose(1, 0, 2), "WHC")]:
        if fmt == "WHC":
            with pytest.raises(ValueError, match="dataformats"):
                tbs.image("i", tensor, dataformats=fmt)
            continue
        img = tbs.image("i", tensor, dataformats=fmt).value[0].image
        assert (img.height, img.width, img.colorspace) == (4, 6, 3)
        assert np.array_equal(decode_png(img.encoded_image_string), want)
    gray = tbs.image("g", np.array([[0, 128], [255, 7]], dtype=np.uint8), dataformats="HW").value[0].image
    assert gray.colorspace == 1 and decode_png(gray.encoded_image_string)[..., 0].tolist() == [[0, 128], [255, 7]]
    rgba = tbs.image("a", np.ones((4, 2, 2)), dataformats="CHW").value[0].image
    assert rgba.colorspace == 4 and decode_png(rgba.encoded_image_string).min() == 255


def test_image_errors_name_the_argument():
    with pytest.raises(ValueError, match="dimensions"):
        tbs.image("i", np.zeros((2, 3)), dataformats="CHW")
    with pytest.raises(ValueError, match="channels"):
        tbs.image("i", np.zeros((5, 3, 3)), dataformats="CHW")
    with pytest.raises(ValueError, match="dataformats"):
        tbs.image("i", np.zeros((3, 3, 3)), dataformats="NCHW")
    with pytest.raises(TypeError, match="dataformats"):
        tbs.image("i", np.zeros((3, 3, 3)), dataformats=None)
    with pytest.raises(ValueError, match="tensor"):
        tbs.image("i", np.zeros((0, 3, 3)))
    with pytest.raises(TypeError, match="tensor"):
        tbs.image("i", np.array([["a"]]))
    with pytest.raises(ValueError, match="name"):
        tbs.image("", np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="dataformats"):
        tbs.images("i", np.zeros((2, 3, 4, 4)), dataformats="CHW")


def test_images_grid_like_tensorboardx_make_grid():
    n, c, h, w = 11, 3, 2, 3
    batch = np.arange(n * c * h * w, dtype=np.float64).reshape(n, c, h, w) % 256
    batch = batch.astype(np.uint8)
    canvas = np.zeros((c, h * 2, w * 8), dtype=np.uint8)  # tensorboardX: 8 per row, rows as needed
    for i in range(n):
        y, x = divmod(i, 8)
        canvas[:, y * h : (y + 1) * h, x * w : (x + 1) * w] = batch[i]
    want = canvas.transpose(1, 2, 0)
    assert np.array_equal(grid(batch, "NCHW"), want)
    assert np.array_equal(grid(np.ascontiguousarray(batch.transpose(0, 2, 3, 1)), "NHWC"), want)
    img = tbs.images("b", batch).value[0].image
    assert (img.height, img.width, img.colorspace) == (4, 24, 3)
    assert np.array_equal(decode_png(img.encoded_image_string), want)
    assert grid(batch[:3, 0], "NHW").shape == (2, 9, 1)


# ---------------------------------------------------------------- text


def tb_text_pb(name: str, data: str) -> bytes:
    """tensorboard.plugins.text.summary.pb without TensorFlow."""
    meta = tb_text_metadata.create_summary_metadata(display_name=name, description=None)
    s = tb_summary_pb2.Summary()
    s.value.add(
        tag=f"{name}/text_summary",
        metadata=meta,
        tensor=tensor_util.make_tensor_proto(data.encode(), dtype=types_pb2.DT_STRING),
    )
    return s.SerializeToString()


def test_text_matches_tensorboard_pb():
    for txt in ("hello **world**", "ünïcode ✓\n\n| a | b |\n|---|---|\n| 1 | 2 |", ""):
        assert tbs.text("notes", txt).SerializeToString() == tb_text_pb("notes", txt)
    with pytest.raises(TypeError, match="text"):
        tbs.text("notes", 3)
    with pytest.raises(ValueError, match="name"):
        tbs.text("", "x")


# ---------------------------------------------------------------- pr curves


def tb_pr_curve_pb(name, labels, predictions, num_thresholds, weights=None) -> tb_summary_pb2.Summary:
    """tensorboard.plugins.pr_curve.summary.pb's arithmetic, without TensorFlow (tag without /pr_curves)."""
    if weights is None:
        weights = 1.0
    bucket_indices = np.int32(np.floor(predictions * (num_thresholds - 1)))
    float_labels = labels.astype(float)
    histogram_range = (0, num_thresholds - 1)
    tp_buckets, _ = np.histogram(
        bucket_indices, bins=num_thresholds, range=histogram_range, weights=float_labels * weights
    )
    fp_buckets, _ = np.histogram(
        bucket_indices, bins=num_thresholds, range=histogram_range, weights=(1.0 - float_labels) * weights
    )
    tp = np.cumsum(tp_buckets[::-1])[::-1]
    fp = np.cumsum(fp_buckets[::-1])[::-1]
    tn = fp[0] - fp
    fn = tp[0] - tp
    precision = tp / np.maximum(1e-7, tp + fp)
    recall = tp / np.maximum(1e-7, tp + fn)
    meta = tb_pr_metadata.create_summary_metadata(display_name=name, description="", num_thresholds=num_thresholds)
    data = np.stack((tp, fp, tn, fn, precision, recall))
    s = tb_summary_pb2.Summary()
    s.value.add(
        tag=name, metadata=meta, tensor=tensor_util.make_tensor_proto(np.float32(data), dtype=types_pb2.DT_FLOAT)
    )
    return s


@pytest.mark.parametrize("num_thresholds", [2, 11, 127, 200])
def test_pr_curve_matches_tensorboard(num_thresholds):
    rng = np.random.default_rng(num_thresholds)
    labels = rng.random(500) < 0.4
    predictions = np.clip(rng.random(500) * 0.6 + labels * 0.4, 0, 1)
    predictions[:3] = [0.0, 1.0, 0.5]
    weights = rng.random(500)
    for w in (None, weights):
        ours = tbs.pr_curve("pr", labels, predictions, num_thresholds=num_thresholds, weights=w)
        want = tb_pr_curve_pb("pr", labels, predictions, num_thresholds, weights=w)
        assert ours.value[0].metadata.SerializeToString() == want.value[0].metadata.SerializeToString()
        got = tensor_util.make_ndarray(tb_summary_pb2.Summary.FromString(ours.SerializeToString()).value[0].tensor)
        assert got.dtype == np.float32 and got.shape == (6, num_thresholds)
        assert np.array_equal(got, tensor_util.make_ndarray(want.value[0].tensor))
    tp, fp = got[0], got[1]
    assert tp[0] == np.float32((weights * labels).sum()) and fp[0] == np.float32((weights * ~labels).sum())


def test_pr_curve_errors():
    with pytest.raises(ValueError, match="same size"):
        tbs.pr_curve("pr", [1, 0], [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tbs.pr_curve("pr", [1, 0], [0.5, 1.5])
    with pytest.raises(ValueError, match="num_thresholds"):
        tbs.pr_curve("pr", [1, 0], [0.5, 0.2], num_thresholds=1)
    with pytest.raises(ValueError, match="weights"):
        tbs.pr_curve("pr", [1, 0], [0.5, 0.2], weights=[1, 2, 3])
    with pytest.raises(ValueError, match="labels"):
        tbs.pr_curve("pr", [], [])
    with pytest.raises(ValueError, match="tag"):
        tbs.pr_curve("", [1], [0.5])


# ---------------------------------------------------------------- custom scalars


def test_custom_scalars_layout():
    layout = {
        "Losses": {"both": ["Multiline", ["loss/train", "loss/test"]], "band": ["Margin", ["acc", "acc_lo", "acc_hi"]]},
        "Other": {"lr": ["Multiline", ["lr"]]},
    }
    s = tbs.custom_scalars(layout)
    v = s.value[0]
    assert v.tag == tb_cs_metadata.CONFIG_SUMMARY_TAG
    assert v.metadata.SerializeToString() == tb_cs_metadata.create_summary_metadata().SerializeToString()
    parsed = tb_layout_pb2.Layout.FromString(
        tensor_util.make_ndarray(tb_summary_pb2.Summary.FromString(s.SerializeToString()).value[0].tensor).item()
    )
    assert [c.title for c in parsed.category] == ["Losses", "Other"]
    both, band = parsed.category[0].chart
    assert both.title == "both" and list(both.multiline.tag) == ["loss/train", "loss/test"]
    assert (band.margin.series[0].value, band.margin.series[0].lower, band.margin.series[0].upper) == (
        "acc",
        "acc_lo",
        "acc_hi",
    )
    for bad in ({}, {"c": {"t": ["Margin", ["a", "b"]]}}, {"c": {"t": ["Pie", ["a"]]}}, {"c": ["x"]}, [1]):
        with pytest.raises(ValueError, match="layout"):
            tbs.custom_scalars(bad)


# ---------------------------------------------------------------- hparams


def test_hparams_messages_parse_with_tensorboard():
    hp = {
        "lr": 0.01,
        "layers": np.int64(3),
        "use_bn": True,
        "np_bool": np.bool_(False),
        "opt": "adam",
        "momentum": np.float32(0.5),
    }
    before = time.time()
    exp, start, end = tbs.hparams(hp, {"accuracy": 0.9, "loss": 0.1}, group_name="run-a", start_time_secs=1234.5)
    tags = [s.value[0].tag for s in (exp, start, end)]
    assert tags == [
        tb_hp_metadata.EXPERIMENT_TAG,
        tb_hp_metadata.SESSION_START_INFO_TAG,
        tb_hp_metadata.SESSION_END_INFO_TAG,
    ]
    for s in (exp, start, end):
        v = s.value[0]
        assert v.metadata.plugin_data.plugin_name == tb_hp_metadata.PLUGIN_NAME
        assert v.tensor.SerializeToString() == tb_hp_metadata.NULL_TENSOR.SerializeToString()
    e = tb_hp_metadata.parse_experiment_plugin_data(exp.value[0].metadata.plugin_data.content)
    types = {i.name: i.type for i in e.hparam_infos}
    assert types == {
        "lr": tb_hp_api.DATA_TYPE_FLOAT64,
        "layers": tb_hp_api.DATA_TYPE_FLOAT64,
        "use_bn": tb_hp_api.DATA_TYPE_BOOL,
        "np_bool": tb_hp_api.DATA_TYPE_BOOL,
        "opt": tb_hp_api.DATA_TYPE_STRING,
        "momentum": tb_hp_api.DATA_TYPE_FLOAT64,
    }
    assert [m.name.tag for m in e.metric_infos] == ["accuracy", "loss"] and e.time_created_secs == 1234.5
    si = tb_hp_metadata.parse_session_start_info_plugin_data(start.value[0].metadata.plugin_data.content)
    assert si.group_name == "run-a" and si.start_time_secs == 1234.5
    assert si.hparams["use_bn"].bool_value is True and si.hparams["np_bool"].WhichOneof("kind") == "bool_value"
    assert si.hparams["layers"].number_value == 3.0 and si.hparams["opt"].string_value == "adam"
    assert si.hparams["momentum"].number_value == 0.5
    ei = tb_hp_metadata.parse_session_end_info_plugin_data(end.value[0].metadata.plugin_data.content)
    assert ei.status == tb_hp_api.STATUS_SUCCESS and ei.end_time_secs >= before


def test_hparams_errors_name_the_key():
    with pytest.raises(TypeError, match="'bad'"):
        tbs.hparams({"ok": 1, "bad": [1, 2]}, {"m": 1.0})
    with pytest.raises(TypeError, match="'none'"):
        tbs.hparams({"none": None}, {})
    with pytest.raises(TypeError, match="hparam_dict"):
        tbs.hparams([("a", 1)], {})
    with pytest.raises(TypeError, match="metric_dict"):
        tbs.hparams({"a": 1}, ["m"])
    with pytest.raises(ValueError, match="metric_dict key"):
        tbs.hparams({"a": 1}, {"": 1.0})


def test_hparams_default_start_time_is_now():
    t = time.time()
    _, start, _ = tbs.hparams({"a": 1}, {})
    si = tb_hp_metadata.parse_session_start_info_plugin_data(start.value[0].metadata.plugin_data.content)
    assert t - 1 <= si.start_time_secs <= time.time() + 1


# ---------------------------------------------------------------- as_array


class FakeGradTensor:
    """Duck-types a PyTorch tensor that requires grad: no __array__ until detached."""

    def __init__(self, data, requires_grad=True, device="cpu"):
        self.data, self.requires_grad, self.device = np.asarray(data), requires_grad, device

    def __array__(self, dtype=None, copy=None):
        if self.requires_grad or self.device != "cpu":
            raise RuntimeError("Can't call numpy() on Tensor that requires grad")
        return self.data

    def detach(self):
        return FakeGradTensor(self.data, False, self.device)

    def cpu(self):
        return FakeGradTensor(self.data, self.requires_grad, "cpu")

    def numpy(self):
        return self.__array__()


class ArrayOnly:
    """Duck-types a JAX array: only the __array__ protocol."""

    def __init__(self, data):
        self.data = np.asarray(data)

    def __array__(self, dtype=None, copy=None):
        return self.data


def test_as_array_accepts_array_likes():
    assert as_array([1, 2], "x").tolist() == [1, 2]
    assert as_array(3.5, "x").item() == 3.5
    assert as_array(FakeGradTensor([1.0, 2.0], device="cuda:0"), "x").tolist() == [1.0, 2.0]
    assert as_array(ArrayOnly([[1, 2]]), "x").shape == (1, 2)
    assert tbs.histogram("h", FakeGradTensor([1.0, 2.0])).value[0].histo.num == 2
    assert tbs.scalar("s", FakeGradTensor([2.0])).value[0].simple_value == 2.0


class FakeTorch:
    """The slice of the torch API the test below uses, over FakeGradTensor; bfloat16 has no numpy dtype."""

    float32 = "float32"
    bfloat16 = "bfloat16"

    class _BFloat16(FakeGradTensor):
        def numpy(self):
            raise TypeError("Got unsupported ScalarType BFloat16")

        def detach(self):
            return FakeTorch._BFloat16(self.data, False, self.device)

        def cpu(self):
            return FakeTorch._BFloat16(self.data, self.requires_grad, "cpu")

        def float(self):
            return FakeGradTensor(self.data.astype(np.float32), self.requires_grad, self.device)

    @staticmethod
    def full(shape, value, dtype="float32", requires_grad=False):
        cls = FakeTorch._BFloat16 if dtype == "bfloat16" else FakeGradTensor
        return cls(np.full(shape, value, dtype=np.float32), requires_grad)


def _torch_likes():
    """The stand-in always (CI has no torch), and real torch too when it is installed."""
    yield FakeTorch
    try:
        import torch
    except ImportError:
        return
    yield torch


def test_as_array_takes_torch_tensors_that_require_grad_or_are_bfloat16():
    checked = []
    for torch in _torch_likes():
        t = torch.full((2, 3), 0.5, requires_grad=True)
        assert as_array(t, "x").tolist() == [[0.5] * 3] * 2
        bf16 = as_array(torch.full((2,), 1.0, dtype=torch.bfloat16, requires_grad=True), "x")
        assert bf16.dtype == np.float32 and bf16.tolist() == [1.0, 1.0]
        img = tbs.image("i", torch.full((3, 2, 2), 1.0, requires_grad=True)).value[0].image
        assert decode_png(img.encoded_image_string).min() == 255
        checked.append(torch.__name__)
    print(f"checked against: {', '.join(checked)}")


def test_as_array_rejections_name_the_argument():
    with pytest.raises(TypeError, match="values"):
        as_array(np.array([1 + 2j]), "values")
    with pytest.raises(TypeError, match="values"):
        as_array("abc", "values")
    with pytest.raises(TypeError, match="values"):
        as_array([object()], "values")
    with pytest.raises(ValueError, match="values"):
        as_array([[1, 2], [3]], "values")
    with pytest.raises(ValueError, match="values"):
        as_array([], "values")
    assert as_array([], "values", allow_empty=True).size == 0


def test_png_crc_is_zlib_crc32():
    png = encode_png(np.zeros((1, 1, 1), dtype=np.uint8))
    ihdr = png[8 : 8 + 25]
    assert struct.unpack(">I", ihdr[-4:])[0] == zlib.crc32(ihdr[4:-4])
