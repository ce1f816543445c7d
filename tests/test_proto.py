"""Our proto/ files speak TensorBoard's wire format, and the committed modules are fresh."""

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor as D

from tbwriter.proto import (
    event_pb2,
    graph_pb2,
    histogram_pb2,
    hparams_pb2,
    plugins_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from tensorboard.compat.proto import event_pb2 as tb_event
from tensorboard.compat.proto import graph_pb2 as tb_graph
from tensorboard.compat.proto import histogram_pb2 as tb_histogram
from tensorboard.compat.proto import node_def_pb2 as tb_node_def
from tensorboard.compat.proto import attr_value_pb2 as tb_attr
from tensorboard.compat.proto import summary_pb2 as tb_summary
from tensorboard.compat.proto import tensor_pb2 as tb_tensor
from tensorboard.compat.proto import tensor_shape_pb2 as tb_shape
from tensorboard.compat.proto import types_pb2 as tb_types
from tensorboard.compat.proto import versions_pb2 as tb_versions
from tensorboard.plugins.custom_scalar import layout_pb2 as tb_layout
from tensorboard.plugins.hparams import api_pb2 as tb_hp_api
from tensorboard.plugins.hparams import plugin_data_pb2 as tb_hp_data
from tensorboard.plugins.histogram import plugin_data_pb2 as tb_histo_plugin
from tensorboard.plugins.image import plugin_data_pb2 as tb_image_plugin
from tensorboard.plugins.pr_curve import plugin_data_pb2 as tb_pr_plugin
from tensorboard.plugins.scalar import plugin_data_pb2 as tb_scalar_plugin
from tensorboard.plugins.text import plugin_data_pb2 as tb_text_plugin

ROOT = Path(__file__).resolve().parent.parent

PAIRS = [
    (event_pb2.Event, tb_event.Event),
    (event_pb2.LogMessage, tb_event.LogMessage),
    (event_pb2.SessionLog, tb_event.SessionLog),
    (event_pb2.TaggedRunMetadata, tb_event.TaggedRunMetadata),
    (event_pb2.SourceMetadata, tb_event.SourceMetadata),
    (summary_pb2.Summary, tb_summary.Summary),
    (summary_pb2.Summary.Value, tb_summary.Summary.Value),
    (summary_pb2.Summary.Image, tb_summary.Summary.Image),
    (summary_pb2.Summary.Audio, tb_summary.Summary.Audio),
    (summary_pb2.SummaryMetadata, tb_summary.SummaryMetadata),
    (summary_pb2.SummaryMetadata.PluginData, tb_summary.SummaryMetadata.PluginData),
    (summary_pb2.SummaryDescription, tb_summary.SummaryDescription),
    (histogram_pb2.HistogramProto, tb_histogram.HistogramProto),
    (tensor_pb2.TensorProto, tb_tensor.TensorProto),
    (tensor_shape_pb2.TensorShapeProto, tb_shape.TensorShapeProto),
    (tensor_shape_pb2.TensorShapeProto.Dim, tb_shape.TensorShapeProto.Dim),
    (graph_pb2.GraphDef, tb_graph.GraphDef),
    (graph_pb2.NodeDef, tb_node_def.NodeDef),
    (graph_pb2.AttrValue, tb_attr.AttrValue),
    (graph_pb2.AttrValue.ListValue, tb_attr.AttrValue.ListValue),
    (graph_pb2.NameAttrList, tb_attr.NameAttrList),
    (graph_pb2.VersionDef, tb_versions.VersionDef),
    (plugins_pb2.ScalarPluginData, tb_scalar_plugin.ScalarPluginData),
    (plugins_pb2.HistogramPluginData, tb_histo_plugin.HistogramPluginData),
    (plugins_pb2.ImagePluginData, tb_image_plugin.ImagePluginData),
    (plugins_pb2.TextPluginData, tb_text_plugin.TextPluginData),
    (plugins_pb2.PrCurvePluginData, tb_pr_plugin.PrCurvePluginData),
    (plugins_pb2.Layout, tb_layout.Layout),
    (plugins_pb2.Category, tb_layout.Category),
    (plugins_pb2.Chart, tb_layout.Chart),
    (plugins_pb2.MultilineChartContent, tb_layout.MultilineChartContent),
    (plugins_pb2.MarginChartContent, tb_layout.MarginChartContent),
    (plugins_pb2.MarginChartContent.Series, tb_layout.MarginChartContent.Series),
    (hparams_pb2.HParamsPluginData, tb_hp_data.HParamsPluginData),
    (hparams_pb2.SessionStartInfo, tb_hp_data.SessionStartInfo),
    (hparams_pb2.SessionEndInfo, tb_hp_data.SessionEndInfo),
    (hparams_pb2.Experiment, tb_hp_api.Experiment),
    (hparams_pb2.HParamInfo, tb_hp_api.HParamInfo),
    (hparams_pb2.Interval, tb_hp_api.Interval),
    (hparams_pb2.MetricName, tb_hp_api.MetricName),
    (hparams_pb2.MetricInfo, tb_hp_api.MetricInfo),
]

ENUMS = [
    (types_pb2.DataType, tb_types.DataType),
    (summary_pb2.DataClass, tb_summary.DataClass),
    (event_pb2.LogMessage.Level, tb_event.LogMessage.Level),
    (event_pb2.SessionLog.SessionStatus, tb_event.SessionLog.SessionStatus),
    (hparams_pb2.DataType, tb_hp_api.DataType),
    (hparams_pb2.DatasetType, tb_hp_api.DatasetType),
    (hparams_pb2.Status, tb_hp_api.Status),
]


def _field_sig(f: D.FieldDescriptor):
    sub = f.message_type or f.enum_type
    return (
        f.name,
        f.type,
        f.is_repeated,
        sub.name if sub else None,
        f.containing_oneof.name if f.containing_oneof else None,
    )


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=[p[0].DESCRIPTOR.name for p in PAIRS])
def test_fields_match_tensorboard(ours, theirs):
    """Every field we declare has TensorBoard's number, name, type, label and oneof."""
    mine = {f.number: _field_sig(f) for f in ours.DESCRIPTOR.fields}
    tb = {f.number: _field_sig(f) for f in theirs.DESCRIPTOR.fields}
    assert mine, ours
    for number, sig in mine.items():
        assert number in tb, f"{ours.DESCRIPTOR.full_name} field {sig[0]}={number} unknown to TensorBoard"
        assert sig == tb[number], f"{ours.DESCRIPTOR.full_name} field {number}: ours {sig}, TensorBoard {tb[number]}"


@pytest.mark.parametrize("ours,theirs", ENUMS, ids=[e[0].DESCRIPTOR.name for e in ENUMS])
def test_enums_match_tensorboard(ours, theirs):
    """Our enum values are a subset of TensorBoard's, with the same numbers."""
    tb = {v.name: v.number for v in theirs.DESCRIPTOR.values}
    for v in ours.DESCRIPTOR.values:
        assert tb.get(v.name) == v.number, f"{ours.DESCRIPTOR.full_name}.{v.name}"


def test_messages_round_trip_through_tensorboard():
    """An Event we serialize parses in TensorBoard's Event with the same content."""
    ev = event_pb2.Event(wall_time=1.5, step=7)
    v = ev.summary.value.add(tag="loss", simple_value=0.25)
    v.metadata.plugin_data.plugin_name = "scalars"
    h = ev.summary.value.add(tag="h").histo
    h.min, h.max, h.num = -1.0, 2.0, 3
    h.bucket_limit.extend([0.0, 2.0])
    h.bucket.extend([1.0, 2.0])
    back = tb_event.Event.FromString(ev.SerializeToString())
    assert back.step == 7 and back.wall_time == 1.5
    assert back.summary.value[0].simple_value == 0.25
    assert back.summary.value[0].metadata.plugin_data.plugin_name == "scalars"
    assert list(back.summary.value[1].histo.bucket) == [1.0, 2.0]
    assert back.SerializeToString() == ev.SerializeToString()


def test_generated_modules_are_fresh():
    """tbwriter/proto/*_pb2.py equal what tools/gen_proto.py makes from proto/ now."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_proto.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "up to date" in r.stdout
