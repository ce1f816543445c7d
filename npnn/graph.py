"""Name scopes and op graphs: `name_scope`, `trace(fn, *inputs) -> Graph`, `Graph.as_graph_def()`.

Eager npnn has no graph, so `trace` records one while `fn` runs: every op reports itself to the
active Graph (npnn/tensor.py checks one global per op; None when not tracing, so tracing costs
nothing otherwise). Names follow TensorFlow 1: ops get "<scope>/<OpName>" with "_1", "_2"
suffixes when taken; tensors not made by a traced op become Placeholder (inputs), VariableV2
(parameters) or Const nodes, so TensorBoard's GRAPHS tab draws scope boxes like TF1's.
"""

from __future__ import annotations

import numpy as np

from npnn import tensor as _t
from npnn.tensor import Tensor

__all__ = ["name_scope", "current_scope", "trace", "Graph", "Node"]


class name_scope:
    """Context manager prefixing "name/" to named tensors and traced ops created inside; nests.

    Entering the same scope twice reuses its name (no "Layer1_1" as TF graph mode would give):
    eager code run twice then names its parameters the same, and a traced graph draws one box.
    """

    __slots__ = ("name", "_prev")

    def __init__(self, name: str):
        if not isinstance(name, str) or not name.strip("/"):
            raise ValueError(f"name_scope: name must be a non-empty string, got {name!r}")
        self.name = name.strip("/")
        self._prev = None

    def __enter__(self) -> str:
        self._prev = _t._scope
        _t._scope = self._prev + self.name + "/"
        return _t._scope[:-1]

    def __exit__(self, *exc) -> bool:
        _t._scope = self._prev
        return False


def current_scope() -> str:
    """The active scope path without a trailing slash ("" at top level)."""
    return _t._scope[:-1]


# numpy dtype -> tbwriter.proto.types_pb2 DataType number (DT_FLOAT = 1, ...)
_DTYPES = {
    "float32": 1,
    "float64": 2,
    "int32": 3,
    "uint8": 4,
    "int16": 5,
    "int8": 6,
    "int64": 9,
    "bool": 10,
    "uint16": 17,
    "float16": 19,
    "uint32": 22,
    "uint64": 23,
}

# TF1's default node names for ops reached through Python operators.
_DEFAULT_NAMES = {"AddV2": "add", "Sub": "sub", "Mul": "mul", "RealDiv": "truediv", "Pow": "pow"}

# Names TF gives a binary op's constant operands ("Cost/sub/x" for 1 - y).
_ARG_NAMES = ("x", "y")


class Node:
    """One traced node: name, op type, input node names, output dtype and shape."""

    __slots__ = ("name", "op", "inputs", "dtype", "shape", "value")

    def __init__(self, name: str, op: str, inputs: list, dtype: np.dtype, shape: tuple, value=None):
        self.name, self.op, self.inputs = name, op, inputs
        self.dtype, self.shape, self.value = dtype, shape, value

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op!r}, inputs={self.inputs}, shape={self.shape})"


class Graph:
    """The ops one call of a function executed, in order, with TF-style unique names."""

    def __init__(self, inputs=()):
        self.nodes: list[Node] = []
        self.outputs = None
        self._names: set[str] = set()
        self._node_of: dict[int, str] = {}
        self._keep: list = []  # holds traced tensors so their ids stay unique while tracing
        self._input_ids = {id(t) for t in inputs if isinstance(t, Tensor)}
        self._loss = None  # the Tensor backward() was last called on while tracing

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r}; nodes: {[n.name for n in self.nodes]}")

    def names(self) -> list[str]:
        """Node names in creation order."""
        return [n.name for n in self.nodes]

    def _unique(self, name: str) -> str:
        """name, or name_1, name_2, ... whichever is free (TF's rule)."""
        if name not in self._names:
            self._names.add(name)
            return name
        i = 1
        while f"{name}_{i}" in self._names:
            i += 1
        name = f"{name}_{i}"
        self._names.add(name)
        return name

    def _add(self, name, op, inputs, data, value=None) -> str:
        data = np.asarray(data)
        self.nodes.append(Node(name, op, inputs, data.dtype, data.shape, value))
        return name

    def _input_node(self, x, op_name: str, position: int, dtype: np.dtype) -> str:
        """The node name for an op input, creating a Placeholder/VariableV2/Const leaf if new."""
        if isinstance(x, Tensor):
            name = self._node_of.get(id(x))
            if name is not None:
                return name
            if id(x) in self._input_ids or (x.name and not x.requires_grad):
                name = self._add(self._unique(x.name or "Placeholder"), "Placeholder", [], x.data)
            elif x.requires_grad:
                name = self._add(self._unique(x.name or "Variable"), "VariableV2", [], x.data)
            else:
                name = self._add(self._unique(x.name or _t._scope + "Const"), "Const", [], x.data, x.data)
            self._node_of[id(x)] = name
            self._keep.append(x)
            return name
        # A raw constant (Python number, ndarray): named like TF's "Cost/sub/x".
        arg = _ARG_NAMES[position] if position < 2 else f"Const_{position}"
        data = np.asarray(x)
        if data.dtype.kind in "iuf" and dtype.kind == "f" and not isinstance(x, np.ndarray):
            data = data.astype(dtype)  # a Python number takes the op's float type, as in npnn
        return self._add(self._unique(f"{op_name}/{arg}"), "Const", [], data, data)

    def record(self, op: str, inputs, out: Tensor) -> None:
        """Add the node for one executed op (called by npnn.tensor while tracing)."""
        name = self._unique(_t._scope + _DEFAULT_NAMES.get(op, op))
        dtype = out.data.dtype
        names = [self._input_node(x, name, i, dtype) for i, x in enumerate(inputs)]
        self._add(name, op, names, out.data)
        self._node_of[id(out)] = name
        self._keep.append(out)
        out.name = name

    def record_summary(self, op, collections: tuple) -> None:
        """Add a recorded summary as a node fed by its tensor, as TF1's graph shows "Layer1/W1" (HistogramSummary)."""
        if isinstance(op.tensor, Tensor):
            src = self._input_node(op.tensor, op.tag, 0, op.tensor.data.dtype)  # a leaf if not traced yet
            self.add_node(op.tag, op.kind, [src])

    def record_backward(self, loss: Tensor) -> None:
        """Note loss.backward() while tracing: the next optimizer step draws gradients from it."""
        self._loss = loss

    def record_step(self, optimizer) -> None:
        """Draw optimizer.step() while tracing: <scope>/gradients fed by the loss, <scope>/<Name>.

        Like TF1's minimize under name_scope("Train"): a Gradients node reading the loss that
        backward() was called on, and an Apply node reading it and every parameter.
        """
        scope = optimizer.scope + "/" if optimizer.scope else ""
        inputs = []
        if self._loss is not None:
            loss = self._input_node(self._loss, scope + "gradients", 0, self._loss.data.dtype)
            inputs.append(self.add_node(scope + "gradients", "Gradients", [loss]))
            self._loss = None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        inputs += [self._input_node(p, "", 0, p.data.dtype) for p in params]
        name = type(optimizer).__name__
        self.add_node(scope + name, "Apply" + name, inputs)

    def add_node(self, name: str, op: str, inputs=(), like=None) -> str:
        """Add a node by hand (a step npnn does not trace); return its name.

        inputs are Tensors of this graph or node names ("^name" for a control edge); like, an
        array or Tensor, gives the node's output dtype and shape (None: a node without outputs,
        like TF's NoOp).
        """
        inputs = [self._node_name(i) for i in inputs]
        missing = [i for i in inputs if i.lstrip("^") not in self._names]
        if missing:
            raise ValueError(f"add_node {name!r}: inputs {missing} are not nodes of this graph")
        unique = self._unique(name)
        if like is None:
            self.nodes.append(Node(unique, op, inputs, None, None))
            return unique
        return self._add(unique, op, inputs, like.data if isinstance(like, Tensor) else like)

    def _node_name(self, x) -> str:
        """The node name of an input given as a Tensor of this graph or as a name."""
        if not isinstance(x, Tensor):
            return x
        name = self._node_of.get(id(x), x.name)  # traced outputs and named leaves carry their node's name
        if name is None or name not in self._names:
            raise ValueError(
                f"add_node: the Tensor {x.name or 'without a name'} (shape {x.shape}) is not a node of this graph"
            )
        return name

    def as_graph_def(self):
        """The graph as a tbwriter GraphDef: attrs dtype/T and _output_shapes for TensorBoard."""
        from tbwriter.proto import graph_pb2, tensor_pb2, tensor_shape_pb2

        gd = graph_pb2.GraphDef()
        gd.versions.producer = 22
        for n in self.nodes:
            nd = gd.node.add(name=n.name, op=n.op, input=n.inputs)
            if n.dtype is None:  # a hand-made node without outputs
                continue
            dt = _DTYPES.get(n.dtype.name, 0)
            shape = tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(s)) for s in n.shape]
            )
            if n.op in ("Placeholder", "VariableV2", "Const"):
                nd.attr["dtype"].type = dt
                if n.op != "Const":
                    nd.attr["shape"].shape.CopyFrom(shape)
            else:
                nd.attr["T"].type = dt
            nd.attr["_output_shapes"].list.shape.add().CopyFrom(shape)
            if n.op == "Const" and n.value is not None and np.size(n.value) <= 16:
                v = np.asarray(n.value)
                tp = tensor_pb2.TensorProto(dtype=dt, tensor_shape=shape)
                if v.dtype.kind == "f":
                    tp.float_val.extend(v.astype(np.float32).ravel().tolist())
                elif v.dtype.kind in "iub":
                    tp.int64_val.extend(v.astype(np.int64).ravel().tolist())
                nd.attr["value"].tensor.CopyFrom(tp)
        return gd


def trace(fn, *inputs) -> Graph:
    """Run fn(*inputs) once and return the Graph of the ops it executed (outputs in .outputs).

    Tensors among inputs become Placeholder nodes named by their .name ("x", "y"); parameters
    (tensors requiring grad, not made by a traced op) become VariableV2 nodes; other leaves Const.
    """
    if _t._tracer is not None:
        raise RuntimeError("trace: already tracing (nested npnn.trace calls are not supported)")
    graph = Graph(inputs)
    _t._tracer = graph
    try:
        graph.outputs = fn(*inputs)
    finally:
        _t._tracer = None
    graph._keep = []  # tracing is over: drop the references
    graph._node_of = {}
    graph._loss = None
    return graph
