"""A torch nn.Module traced with torch.jit.trace, as a GraphDef with one scope per submodule (the peers' layout).

Node names are scoped `Model/Sub[attr]/.../value`, inputs are `input/x`, outputs `output/output.N`;
each node carries `_output_shapes` and its JIT attributes as text, as torch.utils.tensorboard writes them.
torch is imported by the caller's call only.
"""

import contextlib

from tbwriter.proto import graph_pb2, tensor_shape_pb2


def _node(name: str, op: str, inputs, shape, attributes: str) -> graph_pb2.NodeDef:
    attr = {"attr": graph_pb2.AttrValue(s=attributes.encode("utf-8"))}
    if shape is not None:
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
        attr["_output_shapes"] = graph_pb2.AttrValue(
            list=graph_pb2.AttrValue.ListValue(shape=[tensor_shape_pb2.TensorShapeProto(dim=dims)])
        )
    return graph_pb2.NodeDef(name=name, op=op, input=list(inputs), attr=attr)


def _sizes(value):
    """The static shape of a JIT value, or None when the tracer did not record one."""
    try:
        return value.type().sizes() if value.isCompleteTensor() else None
    except RuntimeError:
        return None


@contextlib.contextmanager
def _eval_mode(model):
    """Trace in eval mode (no dropout, fixed batch norm) and restore the model's mode after."""
    training = getattr(model, "training", None)
    if training is not None:
        model.train(False)
    try:
        yield
    finally:
        if training is not None:
            model.train(training)


def graph_def(model, input_to_model, verbose: bool = False, use_strict_trace: bool = True) -> graph_pb2.GraphDef:
    """Trace model(input_to_model) and return its GraphDef; errors of the trace (wrong input size) propagate."""
    import torch

    example = tuple(input_to_model) if isinstance(input_to_model, list) else input_to_model
    with _eval_mode(model):
        trace = torch.jit.trace(model, example, strict=use_strict_trace)
    graph = trace.graph
    torch._C._jit_pass_inline(graph)
    if verbose:
        print(graph)

    def module_name(m):
        return m._name if isinstance(m, torch.jit.TracedModule) else getattr(m, "original_name", "Module")

    base = module_name(trace)
    alias = {name: f"{module_name(m)}[{name.split('.')[-1]}]" for name, m in trace.named_modules(prefix="__module")}
    scoped = {}  # JIT value name -> scoped node name
    nodes = []
    for value in graph.inputs():
        if value.uses() and value.type().kind() != "ClassType":
            scoped[value.debugName()] = name = f"input/{value.debugName()}"
            nodes.append(_node(name, "IO Node", [], _sizes(value) or [1], ""))
    attr_scope = {}
    ops = []
    for node in graph.nodes():
        scope = node.scopeName()
        if node.kind() == "prim::GetAttr":
            key, parent = node.output().debugName(), node.input().node()
            if parent.kind() == "prim::GetAttr":
                parent_scope = attr_scope[parent.output().debugName()]
                attr_scope[key] = f"{parent_scope}/{parent_scope.split('/')[-1]}.{node.s('name')}"
            else:
                attr_scope[key] = f"__module.{node.s('name')}"
            if node.output().type().kind() == "ClassType":
                continue
            scope = attr_scope[key]
        parts = [alias.get(a, a.split(".")[-1]) for a in scope.split("/")] if scope else []
        scope = base + ("/" + "/".join(parts) if any(parts) else "")
        attributes = str({k: getattr(node, node.kindOf(k))(k) for k in node.attributeNames()}).replace("'", " ")
        ops.append((node, scope, attributes))
        for out in node.outputs():
            scoped[out.debugName()] = f"{scope}/{out.debugName()}"
    # A value no node produces (a submodule object) is named after the scope of its last consumer.
    for node, scope, _ in ops:
        for i in node.inputs():
            if i.debugName() not in scoped or scoped[i.debugName()][0] == "\0":
                scoped[i.debugName()] = "\0" + scope + "/" + i.debugName()
    for node, _scope, attributes in ops:
        for out in node.outputs():
            nodes.append(
                _node(
                    scoped[out.debugName()],
                    node.kind(),
                    [scoped[i.debugName()].lstrip("\0") for i in node.inputs()],
                    _sizes(out),
                    attributes,
                )
            )
    for i, value in enumerate(graph.outputs()):
        nodes.append(_node(f"output/output.{i + 1}", "IO Node", [scoped[value.debugName()]], _sizes(value) or [1], ""))
    return graph_pb2.GraphDef(node=nodes, versions=graph_pb2.VersionDef(producer=22))
