"""Values to `Summary` messages: the TF1 `tf.summary.*` API and the builders behind SummaryWriter.

Every function is pure: it returns a `summary_pb2.Summary` (hparams returns three) and writes
nothing. Bad input raises ValueError/TypeError naming the argument (and the tag).
"""

import numbers
import time

import numpy as np

from tbwriter import histogram as _histogram
from tbwriter import image as _image
from tbwriter._convert import as_array
from tbwriter.proto import histogram_pb2, hparams_pb2, plugins_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

Summary = summary_pb2.Summary

__all__ = [
    "scalar",
    "scalar_tensor",
    "tensor",
    "histogram",
    "histogram_proto",
    "histogram_raw",
    "image",
    "images",
    "described_images",
    "text",
    "pr_curve",
    "pr_curve_raw",
    "custom_scalars",
    "hparams",
    "merge",
]


def _check_tag(tag, arg: str = "name") -> str:
    if not isinstance(tag, str):
        raise TypeError(f"{arg} must be a str, got {type(tag).__name__}")
    if not tag:
        raise ValueError(f"{arg} must be a non-empty string")
    utf8(tag, arg)
    return tag


def utf8(text: str, arg: str) -> bytes:
    """text encoded as UTF-8; ValueError naming arg for text that has none (a lone surrogate)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{arg}: {text[:100]!r} is not valid Unicode text: {e.reason} at index {e.start} ({text[e.start]!r})"
        ) from None


def scalar(name: str, value) -> Summary:
    """A scalar as TF1 writes it: `simple_value` (float32 on the wire); NaN and Inf are kept."""
    _check_tag(name)
    if type(value) is not float:
        if isinstance(value, numbers.Real):
            value = float(value)
        else:
            arr = as_array(value, "value")
            if arr.size != 1:
                raise ValueError(f"scalar {name!r}: value must hold exactly one number, got shape {arr.shape}")
            value = float(arr.reshape(()))
    return Summary(value=[Summary.Value(tag=name, simple_value=value)])


def scalar_tensor(
    name: str,
    value: float,
    new_style: bool = False,
    double_precision: bool = False,
    display_name: str = "",
    summary_description: str = "",
) -> Summary:
    """A scalar as the peers' options write it: new_style as a float32 (or float64) tensor of the scalars
    plugin (torch), display_name/summary_description as metadata of a simple_value (tensorboardX)."""
    _check_tag(name)
    meta = summary_pb2.SummaryMetadata(display_name=display_name or "", summary_description=summary_description or "")
    if not new_style:
        if not (display_name or summary_description):  # no empty metadata: a plain simple_value, as the peers write
            return Summary(value=[Summary.Value(tag=name, simple_value=value)])
        return Summary(value=[Summary.Value(tag=name, simple_value=value, metadata=meta)])
    meta.plugin_data.plugin_name = "scalars"
    t = (
        tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[value])
        if double_precision
        else tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value])
    )
    return Summary(value=[Summary.Value(tag=name, tensor=t, metadata=meta)])


_TENSOR_DTYPES = {
    "float16": types_pb2.DT_HALF,
    "float32": types_pb2.DT_FLOAT,
    "float64": types_pb2.DT_DOUBLE,
    "int8": types_pb2.DT_INT8,
    "int16": types_pb2.DT_INT16,
    "int32": types_pb2.DT_INT32,
    "int64": types_pb2.DT_INT64,
    "uint8": types_pb2.DT_UINT8,
    "bool": types_pb2.DT_BOOL,
}


def _tensor_proto(arr: np.ndarray, dtype: int) -> tensor_pb2.TensorProto:
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in arr.shape]
    return tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims),
        tensor_content=np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes(),
    )


def tensor(tag: str, tensor) -> Summary:
    """A whole tensor (any shape; float, int, uint8 or bool) as torch's add_tensor writes it (plugin "tensor")."""
    _check_tag(tag, "tag")
    arr = as_array(tensor, "tensor", allow_empty=True)
    if arr.dtype.name not in _TENSOR_DTYPES:
        raise TypeError(f"tensor {tag!r}: dtype {arr.dtype} is not one of {', '.join(_TENSOR_DTYPES)}")
    if arr.nbytes >= 1 << 31:
        raise ValueError(f"tensor {tag!r}: {arr.nbytes} bytes, beyond protobuf's 2 GB message limit")
    return Summary(
        value=[
            Summary.Value(
                tag=tag, metadata=_metadata("tensor"), tensor=_tensor_proto(arr, _TENSOR_DTYPES[arr.dtype.name])
            )
        ]
    )


def check_bins(bins, tag: str) -> None:
    """Raise ValueError naming tag unless bins is 'tensorflow', an int >= 1, a numpy estimator name or edges."""
    if isinstance(bins, str) and bins == "tensorflow":
        return
    if isinstance(bins, bool) or not (isinstance(bins, (str, numbers.Integral)) or np.ndim(bins) == 1):
        raise ValueError(
            f"histogram {tag!r}: bins must be 'tensorflow', an int, a numpy estimator name "
            f"or a 1-D sequence of edges, got {bins!r}"
        )
    if isinstance(bins, numbers.Integral) and bins < 1:
        raise ValueError(f"histogram {tag!r}: bins must be >= 1, got {bins}")


def _histogram_into(out, values, bins, max_bins, tag: str) -> None:
    arr = values if type(values) is np.ndarray and values.size else as_array(values, "values")
    if isinstance(bins, str) and bins == "tensorflow":
        _histogram.tf_histogram(arr, tag, out)
        return
    check_bins(bins, tag)
    out.CopyFrom(_histogram.numpy_histogram(arr, bins, tag, max_bins))


def histogram_proto(values, bins="tensorflow", max_bins=None, tag: str = "") -> histogram_pb2.HistogramProto:
    """HistogramProto of `values`: TF's default buckets for bins="tensorflow", else numpy's `bins`."""
    out = histogram_pb2.HistogramProto()
    _histogram_into(out, values, bins, max_bins, tag)
    return out


def histogram(name: str, values, bins="tensorflow", max_bins=None) -> Summary:
    """A histogram; with bins="tensorflow" identical to tf.compat.v1.summary.histogram's."""
    _check_tag(name)
    summary = Summary()
    _histogram_into(summary.value.add(tag=name).histo, values, bins, max_bins, name)
    return summary


def histogram_raw(name: str, min, max, num, sum, sum_squares, bucket_limits, bucket_counts) -> Summary:
    """A histogram from precomputed statistics; bucket_limits[i] is the right edge of bucket_counts[i]."""
    _check_tag(name)
    limits = as_array(bucket_limits, "bucket_limits").reshape(-1)
    counts = as_array(bucket_counts, "bucket_counts").reshape(-1)
    if limits.size != counts.size:
        raise ValueError(
            f"histogram {name!r}: bucket_limits and bucket_counts must have the same length, "
            f"got {limits.size} and {counts.size}"
        )
    histo = histogram_pb2.HistogramProto(
        min=float(min),
        max=float(max),
        num=float(num),
        sum=float(sum),
        sum_squares=float(sum_squares),
        bucket_limit=limits.astype(np.float64).tolist(),
        bucket=counts.astype(np.float64).tolist(),
    )
    return Summary(value=[Summary.Value(tag=name, histo=histo)])


# protobuf refuses messages over 2 GiB; an Event also holds the tag and a few framing bytes.
_MAX_ENCODED_IMAGE = (1 << 31) - 1 - (1 << 20)


def check_image_size(name: str, hwc: np.ndarray) -> np.ndarray:
    """hwc, if its PNG is sure to fit in a protobuf message; else a one-line ValueError before any encoding."""
    h, w, c = hwc.shape
    raw = h * (1 + w * c)  # PNG scanlines; zlib's compressBound is the most they can encode to
    bound = raw + (raw >> 12) + (raw >> 14) + (raw >> 25) + 13 + 57
    if bound > _MAX_ENCODED_IMAGE:
        raise ValueError(
            f"image {name!r}: {h}x{w}x{c} pixels may encode to {bound} bytes, beyond protobuf's "
            f"2 GiB message limit; log a smaller image (about 700 megapixels of RGB at most)"
        )
    return hwc


def _image_value(name: str, hwc: np.ndarray) -> Summary:
    check_image_size(name, hwc)
    pixels = _image.to_uint8(hwc)
    h, w, c = pixels.shape
    img = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=_image.encode_png(pixels))
    return Summary(value=[Summary.Value(tag=name, image=img)])


def image(name: str, tensor, dataformats: str = "CHW") -> Summary:
    """One image (CHW, HWC or HW; uint8 as is, other numbers as [0, 1]) as a PNG Summary.Image."""
    _check_tag(name)
    return _image_value(name, _image.to_hwc(as_array(tensor, "tensor"), dataformats))


def images(name: str, tensor, dataformats: str = "NCHW") -> Summary:
    """A batch of images (NCHW, NHWC or NHW) tiled into one grid image, 8 per row, like tensorboardX."""
    _check_tag(name)
    return _image_value(name, _image.grid(as_array(tensor, "tensor"), dataformats))


def described_images(name: str, tensor, description: str, dataformats: str = "NCHW") -> Summary:
    """images()' grid with a markdown description, as TF2's tf.summary.image writes it.

    A string tensor [width, height, png] under the images plugin: TensorBoard's fast (Rust)
    loader keeps the description only in this form, not on a TF1 Summary.Image.
    """
    img = images(name, tensor, dataformats).value[0].image
    meta = _metadata("images")
    meta.summary_description = description
    data = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        string_val=[str(img.width).encode(), str(img.height).encode(), img.encoded_image_string],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=3)]),
    )
    return Summary(value=[Summary.Value(tag=name, metadata=meta, tensor=data)])


def _string_tensor(data: bytes) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=tensor_shape_pb2.TensorShapeProto(), string_val=[data]
    )


def _metadata(plugin: str, content: bytes = b"", display_name: str = "") -> summary_pb2.SummaryMetadata:
    return summary_pb2.SummaryMetadata(
        display_name=display_name,
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=content),
    )


def text(name: str, text) -> Summary:
    """Markdown text for the text plugin, as tensorboard.plugins.text.summary.pb writes it (tag name/text_summary)."""
    _check_tag(name)
    if isinstance(text, bytes):
        data = text
    elif isinstance(text, str):
        data = text.encode("utf-8")
    else:
        raise TypeError(f"text {name!r}: text must be a str, got {type(text).__name__}")
    meta = _metadata("text", plugins_pb2.TextPluginData(version=0).SerializeToString(), display_name=name)
    return Summary(value=[Summary.Value(tag=f"{name}/text_summary", metadata=meta, tensor=_string_tensor(data))])


_MINIMUM_COUNT = 1e-7  # TensorBoard's pr_curve floor for precision and recall denominators


def pr_curve(tag: str, labels, predictions, num_thresholds: int = 127, weights=None) -> Summary:
    """A precision-recall curve: float32 tensor [6, num_thresholds] (TP, FP, TN, FN, precision, recall)."""
    _check_tag(tag, "tag")
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, numbers.Integral) or num_thresholds < 2:
        raise ValueError(f"pr_curve {tag!r}: num_thresholds must be an int >= 2, got {num_thresholds!r}")
    num_thresholds = int(num_thresholds)
    labels = as_array(labels, "labels").reshape(-1)
    predictions = as_array(predictions, "predictions").reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"pr_curve {tag!r}: labels and predictions must have the same size, "
            f"got {labels.size} and {predictions.size}"
        )
    if not np.all((predictions >= 0) & (predictions <= 1)):
        raise ValueError(f"pr_curve {tag!r}: predictions must lie in [0, 1] (NaN is not allowed)")
    w = 1.0 if weights is None else as_array(weights, "weights").reshape(-1).astype(np.float64)
    if weights is not None and w.size not in (1, labels.size):
        raise ValueError(
            f"pr_curve {tag!r}: weights must be a scalar or match labels' size {labels.size}, got {w.size}"
        )
    # The same arithmetic as tensorboard.plugins.pr_curve.summary.pb, vectorized with bincount.
    buckets = np.floor(predictions * (num_thresholds - 1)).astype(np.int32)
    positive = labels.astype(np.float64)
    tp_buckets = np.bincount(buckets, weights=np.broadcast_to(positive * w, buckets.shape), minlength=num_thresholds)
    fp_buckets = np.bincount(
        buckets, weights=np.broadcast_to((1.0 - positive) * w, buckets.shape), minlength=num_thresholds
    )
    tp = np.cumsum(tp_buckets[::-1])[::-1]
    fp = np.cumsum(fp_buckets[::-1])[::-1]
    tn = fp[0] - fp
    fn = tp[0] - tp
    precision = tp / np.maximum(_MINIMUM_COUNT, tp + fp)
    recall = tp / np.maximum(_MINIMUM_COUNT, tp + fn)
    return pr_curve_raw(tag, (tp, fp, tn, fn, precision, recall), num_thresholds)


_PR_ROWS = (
    "true_positive_counts",
    "false_positive_counts",
    "true_negative_counts",
    "false_negative_counts",
    "precision",
    "recall",
)


def pr_curve_raw(tag: str, rows, num_thresholds: int = 127) -> Summary:
    """A precision-recall curve from its six rows (TP, FP, TN, FN, precision, recall; each of one length)."""
    _check_tag(tag, "tag")
    if len(rows) != len(_PR_ROWS):
        raise ValueError(f"pr_curve_raw {tag!r}: expected the six rows {', '.join(_PR_ROWS)}, got {len(rows)}")
    rows = [as_array(v, n).reshape(-1) for v, n in zip(rows, _PR_ROWS)]
    if len({r.size for r in rows}) != 1:
        raise ValueError(
            f"pr_curve_raw {tag!r}: the six rows must have one length, got "
            + ", ".join(f"{n}={r.size}" for n, r in zip(_PR_ROWS, rows))
        )
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, numbers.Integral) or num_thresholds < 2:
        raise ValueError(f"pr_curve_raw {tag!r}: num_thresholds must be an int >= 2, got {num_thresholds!r}")
    data = np.stack(rows).astype(np.float32)
    content = plugins_pb2.PrCurvePluginData(version=0, num_thresholds=int(num_thresholds)).SerializeToString()
    return Summary(
        value=[
            Summary.Value(
                tag=tag,
                metadata=_metadata("pr_curves", content, display_name=tag),
                tensor=_tensor_proto(data, types_pb2.DT_FLOAT),
            )
        ]
    )


def custom_scalars(layout: dict) -> Summary:
    """The custom scalars dashboard layout from tensorboardX's dict:
    {category: {chart title: ["Multiline", [tags...]] or ["Margin", [value, lower, upper]]}}."""
    if not isinstance(layout, dict) or not layout:
        raise ValueError(f"layout must be a non-empty dict {{category: {{title: [kind, tags]}}}}, got {layout!r}")
    categories = []
    for cat_name, charts in layout.items():
        if not isinstance(charts, dict):
            raise ValueError(f"layout[{cat_name!r}] must be a dict {{title: [kind, tags]}}, got {charts!r}")
        chart_pbs = []
        for title, spec in charts.items():
            if not (
                isinstance(spec, (list, tuple))
                and len(spec) == 2
                and isinstance(spec[1], (list, tuple))
                and all(isinstance(t, str) for t in spec[1])
            ):
                raise ValueError(f"layout[{cat_name!r}][{title!r}] must be [kind, [tag, ...]], got {spec!r}")
            kind, tags = spec
            if kind == "Margin":
                if len(tags) != 3:
                    raise ValueError(
                        f"layout[{cat_name!r}][{title!r}]: a Margin chart takes 3 tags "
                        f"[value, lower, upper], got {list(tags)}"
                    )
                series = plugins_pb2.MarginChartContent.Series(value=tags[0], lower=tags[1], upper=tags[2])
                chart_pbs.append(plugins_pb2.Chart(title=title, margin=plugins_pb2.MarginChartContent(series=[series])))
            elif kind == "Multiline":
                chart_pbs.append(plugins_pb2.Chart(title=title, multiline=plugins_pb2.MultilineChartContent(tag=tags)))
            else:
                raise ValueError(f"layout[{cat_name!r}][{title!r}]: kind must be 'Multiline' or 'Margin', got {kind!r}")
        categories.append(plugins_pb2.Category(title=cat_name, chart=chart_pbs))
    data = plugins_pb2.Layout(category=categories).SerializeToString()
    return Summary(
        value=[
            Summary.Value(
                tag="custom_scalars__config__", metadata=_metadata("custom_scalars"), tensor=_string_tensor(data)
            )
        ]
    )


_HPARAMS_NULL_TENSOR = tensor_pb2.TensorProto(
    dtype=types_pb2.DT_FLOAT,
    tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=0)]),
)


def _hparams_summary(tag: str, data: hparams_pb2.HParamsPluginData) -> Summary:
    data.version = 0
    return Summary(
        value=[
            Summary.Value(tag=tag, metadata=_metadata("hparams", data.SerializeToString()), tensor=_HPARAMS_NULL_TENSOR)
        ]
    )


def _hparam_value(key, value):
    """(DataType, python value) of one hyperparameter: bools stay bools, numbers become float64."""
    if hasattr(value, "item") and getattr(value, "size", 1) == 1 and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars, 0-d arrays, one-element tensors
    if isinstance(value, bool):
        return hparams_pb2.DATA_TYPE_BOOL, value
    if isinstance(value, numbers.Real):
        return hparams_pb2.DATA_TYPE_FLOAT64, float(value)
    if isinstance(value, str):
        return hparams_pb2.DATA_TYPE_STRING, value
    raise TypeError(f"hparam_dict[{key!r}] must be a bool, number or str, got {type(value).__name__}: {value!r}")


def hparams(hparam_dict: dict, metric_dict: dict, group_name: str = "", start_time_secs=None):
    """(experiment, session_start_info, session_end_info) summaries for the HPARAMS dashboard."""
    if not isinstance(hparam_dict, dict) or not hparam_dict:
        raise TypeError(f"hparam_dict must be a non-empty dict, got {hparam_dict!r}")
    if not isinstance(metric_dict, dict):
        raise TypeError(f"metric_dict must be a dict {{tag: value}}, got {type(metric_dict).__name__}")
    for key in metric_dict:
        _check_tag(key, f"metric_dict key {key!r}")
    if not isinstance(group_name, str):
        raise TypeError(f"group_name must be a str, got {type(group_name).__name__}")
    start = time.time() if start_time_secs is None else float(start_time_secs)
    start_info = hparams_pb2.SessionStartInfo(group_name=group_name, start_time_secs=start)
    infos = []
    for key, value in hparam_dict.items():
        _check_tag(key, f"hparam_dict key {key!r}")
        dtype, v = _hparam_value(key, value)
        if dtype == hparams_pb2.DATA_TYPE_BOOL:
            start_info.hparams[key].bool_value = v
        elif dtype == hparams_pb2.DATA_TYPE_FLOAT64:
            start_info.hparams[key].number_value = v
        else:
            start_info.hparams[key].string_value = v
        infos.append(hparams_pb2.HParamInfo(name=key, type=dtype))
    experiment = hparams_pb2.Experiment(
        time_created_secs=start,
        hparam_infos=infos,
        metric_infos=[hparams_pb2.MetricInfo(name=hparams_pb2.MetricName(tag=k)) for k in metric_dict],
    )
    end_info = hparams_pb2.SessionEndInfo(status=hparams_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    return (
        _hparams_summary("_hparams_/experiment", hparams_pb2.HParamsPluginData(experiment=experiment)),
        _hparams_summary("_hparams_/session_start_info", hparams_pb2.HParamsPluginData(session_start_info=start_info)),
        _hparams_summary("_hparams_/session_end_info", hparams_pb2.HParamsPluginData(session_end_info=end_info)),
    )


def merge(summaries) -> Summary:
    """One Summary holding the values of all `summaries` (Summary messages or their serialized bytes)."""
    if isinstance(summaries, (Summary, bytes)):
        raise TypeError("summaries must be a list of Summary messages or bytes, got a single one")
    merged = Summary()
    for i, s in enumerate(summaries):
        if isinstance(s, (bytes, bytearray, memoryview)):
            try:
                s = Summary.FromString(bytes(s))
            except Exception as e:  # protobuf's DecodeError
                raise ValueError(f"summaries[{i}] is not a serialized Summary ({e})") from None
        elif not isinstance(s, Summary):
            raise TypeError(f"summaries[{i}] must be a Summary or bytes, got {type(s).__name__}")
        merged.value.extend(s.value)
    return merged
