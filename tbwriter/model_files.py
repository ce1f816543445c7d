"""GraphDefs from saved model files: ONNX (onnx imported on use) and OpenVINO IR XML."""

import os

from tbwriter.proto import graph_pb2, tensor_shape_pb2
from tbwriter.reader import _open

MAX_MODEL_BYTES = 2**31 - 1  # protobuf's limit: a larger graph could not be written as one event anyway


def _read_model_file(path, argument: str) -> bytes:
    """The bytes of a regular file (a FIFO or device is refused, never waited on), its size checked first."""
    path = os.fspath(path)
    f, size = _open(path, None)  # O_NONBLOCK + fstat: refuses FIFOs, devices, /dev/zero behind a symlink
    with f:
        n = size()
        if n > MAX_MODEL_BYTES:
            raise ValueError(f"{argument}: {path} holds {n} bytes, more than protobuf's 2 GiB limit")
        data = bytearray()
        while len(data) < n and (chunk := f.read(n - len(data))):  # one read() returns at most ~2 GiB
            data += chunk
        return bytes(data)


def onnx_graph_def(path) -> graph_pb2.GraphDef:
    """The graph of an .onnx file: inputs and outputs as Variable nodes, one node per operator."""
    try:
        import onnx
    except ImportError:
        raise ImportError("add_onnx_graph needs onnx: pip install onnx") from None
    # From bytes: the graph needs no weights, so external data files are never opened either.
    graph = onnx.load_model_from_string(_read_model_file(path, "onnx_model_file")).graph
    nodes = []
    for io in list(graph.input) + list(graph.output):
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d.dim_value) for d in io.type.tensor_type.shape.dim]
        nodes.append(
            graph_pb2.NodeDef(
                name=io.name,
                op="Variable",
                attr={
                    "dtype": graph_pb2.AttrValue(type=io.type.tensor_type.elem_type),
                    "shape": graph_pb2.AttrValue(shape=tensor_shape_pb2.TensorShapeProto(dim=dims)),
                },
            )
        )
    for op in graph.node:
        params = ", ".join(" = ".join(str(f[1]) for f in a.ListFields()) for a in op.attribute)
        nodes.append(
            graph_pb2.NodeDef(
                name=op.output[0],
                op=op.op_type,
                input=list(op.input),
                attr={"parameters": graph_pb2.AttrValue(s=params.encode("utf-8"))},
            )
        )
    return graph_pb2.GraphDef(node=nodes, versions=graph_pb2.VersionDef(producer=22))


def openvino_graph_def(xmlname) -> graph_pb2.GraphDef:
    """The graph of an OpenVINO IR .xml file: one node per layer (op = its type), inputs from the edges."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(_read_model_file(xmlname, "xmlname"))
    layers, edges = root.find("layers"), root.find("edges")
    if layers is None or edges is None:
        raise ValueError(f"xmlname: {xmlname} is not an OpenVINO IR file (no <layers> and <edges>)")
    names = {layer.attrib["id"]: layer.attrib["name"] for layer in layers}
    inputs = {}
    for edge in edges:
        inputs.setdefault(edge.attrib["to-layer"], []).append(names[edge.attrib["from-layer"]])
    return graph_pb2.GraphDef(
        node=[
            graph_pb2.NodeDef(
                name=layer.attrib["name"], op=layer.attrib.get("type", "op"), input=inputs.get(layer.attrib["id"], [])
            )
            for layer in layers
        ],
        versions=graph_pb2.VersionDef(producer=22),
    )
