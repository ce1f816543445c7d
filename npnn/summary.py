"""TF1-style summaries on the eager core: record tensors by name, merge their current values.

    with npnn.name_scope("Layer1"):
        npnn.summary.histogram("W1", W1)          # recorded as "Layer1/W1"
    npnn.summary.scalar("accuracy", accuracy)
    writer.add_summary(npnn.summary.merge_all(), global_step=step)

Like a TF1 summary op, a recorded summary holds the tensor itself, not its value: merge_all()
reads each tensor's current `.data` when called, as sess.run evaluates the op. Parameters are
updated in place by the optimizers, so recording them once is enough; activations are new
tensors every step, so the forward pass records them again each step, and recording the same
tag again replaces the earlier entry (eager code runs every step: TF's "W1_1" renaming would
pile up a new tag per step). Values are built with tbwriter.summary's functions.
"""

from __future__ import annotations

import numpy as np

from npnn import tensor as _t
from npnn.tensor import Tensor
from tbwriter import summary as _tbs
from tbwriter import wire
from tbwriter.histogram import tf_histogram_bytes as _tf_histogram_bytes
from tbwriter.proto.summary_pb2 import Summary

__all__ = [
    "scalar",
    "histogram",
    "image",
    "text",
    "merge",
    "merge_all",
    "get_collection",
    "clear",
    "SummaryOp",
    "Summary",
]

_DEFAULT = "summaries"  # TF's tf.GraphKeys.SUMMARIES
_collections: dict[str, dict[str, "SummaryOp"]] = {_DEFAULT: {}}

_SCALAR, _HISTOGRAM, _IMAGE, _TEXT = "ScalarSummary", "HistogramSummary", "ImageSummary", "TensorSummary"


class SummaryOp:
    """One recorded summary: its full tag, its kind and the tensor (or value) read at merge time."""

    __slots__ = ("tag", "kind", "tensor", "options")

    def __init__(self, tag: str, kind: str, tensor, options: tuple = ()):
        self.tag, self.kind, self.tensor, self.options = tag, kind, tensor, options

    def __repr__(self) -> str:
        return f"SummaryOp({self.tag!r}, {self.kind})"

    def value(self):
        """The recorded tensor's current value as an ndarray (a callable is called first)."""
        t = self.tensor
        if callable(t) and not isinstance(t, Tensor):
            t = t()
        if isinstance(t, Tensor):
            return t.data
        return t if isinstance(t, (np.ndarray, str, bytes)) else np.asarray(t)

    def summary(self) -> Summary:
        """This summary evaluated now, as a Summary message."""
        return Summary.FromString(_evaluate((self,)))


def _record(name: str, kind: str, tensor, collections, options: tuple = ()) -> SummaryOp:
    if collections is None and _t._tracer is None and tensor is not None:
        # Hot path: the forward pass records the same tags every step; just swap the tensor.
        op = _collections[_DEFAULT].get(_t._scope + name)
        if op is not None and op.kind is kind and op.options == options:
            op.tensor = tensor
            return op
    if not isinstance(name, str) or not name.strip("/"):
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if tensor is None:
        raise TypeError(f"summary {name!r}: tensor must be a Tensor, array-like or callable, got None")
    op = SummaryOp(_t._scope + name.strip("/"), kind, tensor, options)
    collections = tuple(collections or (_DEFAULT,))
    bind([(op, tensor, collections)])
    if _t._tracer is not None:  # npnn.trace draws it; npnn.plan rebinds it at every replay
        _t._tracer.record_summary(op, collections)
    return op


def bind(entries) -> None:
    """For each (op, tensor, collections): op, reading tensor, becomes its tag's entry in each
    collection (what recording it does)."""
    for op, tensor, collections in entries:
        op.tensor = tensor
        for c in collections:
            coll = _collections.get(c)
            if coll is None:
                coll = _collections[c] = {}
            if coll.get(op.tag) is not op:
                coll[op.tag] = op


def scalar(name: str, tensor, collections=None) -> SummaryOp:
    """Record a one-element tensor as scalar `<scope>/name` (simple_value, as tf.summary.scalar)."""
    return _record(name, _SCALAR, tensor, collections)


def histogram(name: str, tensor, collections=None) -> SummaryOp:
    """Record a tensor as histogram `<scope>/name` with TensorFlow's buckets (tf.summary.histogram)."""
    return _record(name, _HISTOGRAM, tensor, collections)


def image(name: str, tensor, max_outputs: int = 3, dataformats: str = "NHWC", collections=None) -> SummaryOp:
    """Record a batch of images (NHWC like tf.summary.image; uint8, or floats in [0, 1]) as one grid."""
    if isinstance(max_outputs, bool) or not isinstance(max_outputs, int) or max_outputs < 1:
        raise ValueError(f"max_outputs: expected an int >= 1, got {max_outputs!r}")
    return _record(name, _IMAGE, tensor, collections, (max_outputs, dataformats))


def text(name: str, tensor, collections=None) -> SummaryOp:
    """Record a str (or a callable returning one) as markdown text `<scope>/name`."""
    return _record(name, _TEXT, tensor, collections)


_PREFIXES: dict = {}  # (tag, kind) -> the serialized start of its Summary.Value


def _prefix(tag: str, kind: str) -> bytes:
    """Value.tag and the key of the value field: histo (5) or, for scalars, the whole entry head."""
    key = (tag, kind)
    b = _PREFIXES.get(key)
    if b is None:
        if len(_PREFIXES) > 4096:
            _PREFIXES.clear()
        if kind is _SCALAR:  # Summary.value entry, Value.tag, simple_value key: 4 float bytes follow
            b = wire.scalar_value_prefix(tag)
        else:
            b = wire.value_tag(tag) + wire.VALUE_HISTO
        _PREFIXES[key] = b
    return b


def _evaluate(ops) -> bytes:
    """Every op's current value as a serialized Summary; the per-step hot loop of merge_all.

    A Summary's bytes are its Values' entries one after the other, so the Values are encoded
    here directly (histograms by tbwriter.histogram, the rest by tbwriter.summary) and joined:
    protobuf's Python field setters would cost more than the histograms themselves.
    """
    chunks = []
    append = chunks.append
    varint = wire.varint
    for op in ops:
        kind = op.kind
        t = op.tensor
        data = t.data if type(t) is Tensor or isinstance(t, Tensor) else op.value()
        if kind is _HISTOGRAM:
            h = _tf_histogram_bytes(data, op.tag)
            prefix = _prefix(op.tag, kind)
            hn = varint(len(h))
            append(wire.SUMMARY_VALUE)
            append(varint(len(prefix) + len(hn) + len(h)))
            append(prefix)
            append(hn)
            append(h)
        elif kind is _SCALAR:
            if type(data) is not np.ndarray:
                data = np.asarray(data)
            if data.size != 1:
                raise ValueError(f"scalar {op.tag!r}: tensor must hold exactly one value, got shape {data.shape}")
            x = data.item() if data.dtype.kind == "f" else float(data.reshape(()))
            f = wire.float32(x)  # finite but beyond float32: +-inf, as protobuf's float field
            append(_prefix(op.tag, kind))
            append(f)
        elif kind is _IMAGE:
            max_outputs, fmt = op.options
            data = np.asarray(data)
            if data.ndim == len(fmt) and fmt[0] == "N":
                data = data[:max_outputs]
            append(_tbs.images(op.tag, data, dataformats=fmt).SerializeToString())
        else:
            if not isinstance(data, (str, bytes)):
                data = np.asarray(data).reshape(-1)[0] if np.size(data) == 1 else data
                data = data.decode() if isinstance(data, bytes) else data
            append(_tbs.text(op.tag, data if isinstance(data, (str, bytes)) else str(data)).SerializeToString())
    return b"".join(chunks)


def merge(summaries) -> Summary:
    """One Summary holding the current values of the given SummaryOps (tf.summary.merge)."""
    ops = list(summaries)
    for i, op in enumerate(ops):
        if not isinstance(op, SummaryOp):
            raise TypeError(f"summaries[{i}]: expected a SummaryOp (from npnn.summary.*), got {type(op).__name__}")
    return Summary.FromString(_evaluate(ops))


def merge_all(key: str = _DEFAULT) -> Summary:
    """One Summary holding the current value of every summary recorded in collection `key`."""
    ops = _collections.get(key)
    if ops is None:
        raise KeyError(f"key: no summary collection named {key!r}; known: {sorted(_collections)}")
    return Summary.FromString(_evaluate(ops.values()))


def get_collection(key: str = _DEFAULT) -> list:
    """The SummaryOps recorded in collection `key`, in recording order."""
    return list(_collections.get(key, {}).values())


def clear(key: str | None = None) -> None:
    """Forget the summaries of collection `key` (all collections when None), like a new TF graph."""
    if key is None:
        _collections.clear()
        _collections[_DEFAULT] = {}
    else:
        _collections.get(key, {}).clear()
