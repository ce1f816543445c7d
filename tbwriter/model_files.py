"""GraphDefs from saved model files: ONNX (onnx imported on use) and OpenVINO IR XML."""

from tbwriter.proto import graph_pb2, tensor_shape_pb2


def onnx_graph_def(path) -> graph_pb2.GraphDef:
    """The graph of an .onnx file: inputs and outputs as Variable nodes, one node per operator."""
    try:
        import onnx
    except ImportError:
        raise ImportError("add_onnx_graph needs onnx: pip install onnx") from None
    graph = onnx.load(path).graph
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

    root = ET.parse(xmlname).getroot()
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
