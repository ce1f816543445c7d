"""Meshes and point clouds for TensorBoard's mesh plugin: one float tensor per part (vertices, faces, colors)."""

import json

from tbwriter._convert import as_array
from tbwriter.proto import (
    plugins_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

_Mesh = plugins_pb2.MeshPluginData


def mesh(tag: str, vertices, colors=None, faces=None, config_dict=None) -> summary_pb2.Summary:
    """Summary of a mesh: vertices (B, N, 3), optional colors (B, N, 3) uint8, faces (B, F, 3) vertex indices."""
    parts = [(_Mesh.VERTEX, vertices, "vertices"), (_Mesh.FACE, faces, "faces"), (_Mesh.COLOR, colors, "colors")]
    arrays = {}
    for kind, value, name in parts:
        if value is None:
            continue
        arr = as_array(value, name)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"mesh {tag!r}: {name} must have shape (batch, count, 3), got {arr.shape}")
        arrays[kind] = arr
    if _Mesh.VERTEX not in arrays:
        raise ValueError(f"mesh {tag!r}: vertices are required, got None")
    n = arrays[_Mesh.VERTEX].shape[1]
    if _Mesh.COLOR in arrays and arrays[_Mesh.COLOR].shape[1] != n:
        raise ValueError(f"mesh {tag!r}: colors must have one row per vertex ({n}), got {arrays[_Mesh.COLOR].shape}")
    if (
        _Mesh.FACE in arrays
        and arrays[_Mesh.FACE].size
        and not 0 <= arrays[_Mesh.FACE].min() <= arrays[_Mesh.FACE].max() < n
    ):
        raise ValueError(f"mesh {tag!r}: faces must index the {n} vertices")
    config = "{}" if config_dict is None else json.dumps(config_dict, sort_keys=True)
    components = sum(1 << kind for kind in arrays)
    values = []
    for kind, arr in arrays.items():
        meta = _Mesh(version=0, name=tag, content_type=kind, json_config=config, shape=arr.shape, components=components)
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_content=arr.astype("<f4").tobytes(),
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in arr.shape]
            ),
        )
        values.append(
            summary_pb2.Summary.Value(
                tag=f"{tag}_{_Mesh.ContentType.Name(kind)}",
                tensor=tensor,
                metadata=summary_pb2.SummaryMetadata(
                    display_name=tag,
                    plugin_data=summary_pb2.SummaryMetadata.PluginData(
                        plugin_name="mesh", content=meta.SerializeToString()
                    ),
                ),
            )
        )
    return summary_pb2.Summary(value=values)
