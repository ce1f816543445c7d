"""name_scope, trace and GraphDef: the XOR lab's network traced, and the real TensorBoard's
graphs plugin serving it back."""

import numpy as np
import pytest
from google.protobuf import text_format
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import npnn
from npnn import Parameter, Tensor
from npnn import tensor as tensor_module
from tbwriter import FileWriter
from tbwriter.proto import graph_pb2, types_pb2
from tbserver import tensorboard


# -- name scopes -------------------------------------------------------------------------------


def test_name_scope_nests_and_names_parameters():
    with npnn.name_scope("Layer1") as scope:
        assert scope == "Layer1" and npnn.graph.current_scope() == "Layer1"
        w = Parameter(np.zeros((2, 2)), name="weight_1")
        with npnn.name_scope("inner"):
            t = Tensor([1.0], name="t")
        unnamed = Tensor([1.0])
    assert npnn.graph.current_scope() == ""
    assert w.name == "Layer1/weight_1" and t.name == "Layer1/inner/t" and unnamed.name is None
    assert Tensor([1.0], name="x").name == "x"


def test_scope_entered_twice_keeps_its_name():
    # Eager code run twice names its parameters the same (no TF graph-mode "Layer1_1").
    names = []
    for _ in range(2):
        with npnn.name_scope("Layer1"):
            names.append(Parameter([1.0], name="bias_1").name)
    assert names == ["Layer1/bias_1", "Layer1/bias_1"]


def test_name_scope_restores_on_error_and_validates():
    with pytest.raises(KeyError):
        with npnn.name_scope("A"):
            raise KeyError("boom")
    assert npnn.graph.current_scope() == ""
    with pytest.raises(ValueError, match="non-empty string"):
        npnn.name_scope("")
    with pytest.raises(ValueError, match="non-empty string"):
        npnn.name_scope(None)


# -- the XOR lab's network ---------------------------------------------------------------------


def xor_model(seed=0):
    """The lab's parameters, created under their scopes as the lab does."""
    rng = np.random.default_rng(seed)
    with npnn.name_scope("Layer1"):
        w1 = Parameter(rng.standard_normal((2, 2)).astype(np.float32), name="weight_1")
        b1 = Parameter(rng.standard_normal(2).astype(np.float32), name="bias_1")
    with npnn.name_scope("Layer2"):
        w2 = Parameter(rng.standard_normal((2, 1)).astype(np.float32), name="weight_2")
        b2 = Parameter(rng.standard_normal(1).astype(np.float32), name="bias_2")
    return w1, b1, w2, b2


def xor_forward(params, x, y):
    """The lab's forward pass: two sigmoid layers, the cross-entropy cost, the accuracy."""
    w1, b1, w2, b2 = params
    with npnn.name_scope("Layer1"):
        layer1 = npnn.sigmoid(x @ w1 + b1)
    with npnn.name_scope("Layer2"):
        hypothesis = npnn.sigmoid(layer1 @ w2 + b2)
    with npnn.name_scope("Cost"):
        cost = -(y * npnn.log(hypothesis) + (1 - y) * npnn.log(1 - hypothesis)).mean()
    predicted = (hypothesis > 0.5).float()
    accuracy = (predicted == y).float().mean()
    return cost, accuracy


def xor_inputs():
    x = Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32), name="x")
    y = Tensor(np.array([[0], [1], [1], [0]], np.float32), name="y")
    return x, y


# name, op, inputs: TF1's nodes for the lab's forward pass (tf1_xor_graph_nodes.txt) with its
# ReadVariableOp hops removed; npnn reads a parameter directly.
EXPECTED = [
    ("x", "Placeholder", []),
    ("Layer1/weight_1", "VariableV2", []),
    ("Layer1/MatMul", "MatMul", ["x", "Layer1/weight_1"]),
    ("Layer1/bias_1", "VariableV2", []),
    ("Layer1/add", "AddV2", ["Layer1/MatMul", "Layer1/bias_1"]),
    ("Layer1/Sigmoid", "Sigmoid", ["Layer1/add"]),
    ("Layer2/weight_2", "VariableV2", []),
    ("Layer2/MatMul", "MatMul", ["Layer1/Sigmoid", "Layer2/weight_2"]),
    ("Layer2/bias_2", "VariableV2", []),
    ("Layer2/add", "AddV2", ["Layer2/MatMul", "Layer2/bias_2"]),
    ("Layer2/Sigmoid", "Sigmoid", ["Layer2/add"]),
    ("Cost/Log", "Log", ["Layer2/Sigmoid"]),
    ("y", "Placeholder", []),
    ("Cost/mul", "Mul", ["y", "Cost/Log"]),
    ("Cost/sub/x", "Const", []),
    ("Cost/sub", "Sub", ["Cost/sub/x", "y"]),
    ("Cost/sub_1/x", "Const", []),
    ("Cost/sub_1", "Sub", ["Cost/sub_1/x", "Layer2/Sigmoid"]),
    ("Cost/Log_1", "Log", ["Cost/sub_1"]),
    ("Cost/mul_1", "Mul", ["Cost/sub", "Cost/Log_1"]),
    ("Cost/add", "AddV2", ["Cost/mul", "Cost/mul_1"]),
    ("Cost/Mean", "Mean", ["Cost/add"]),
    ("Cost/Neg", "Neg", ["Cost/Mean"]),
    ("Greater/y", "Const", []),
    ("Greater", "Greater", ["Layer2/Sigmoid", "Greater/y"]),
    ("Cast", "Cast", ["Greater"]),
    ("Equal", "Equal", ["Cast", "y"]),
    ("Cast_1", "Cast", ["Equal"]),
    ("Mean", "Mean", ["Cast_1"]),
]


@pytest.fixture(scope="module")
def xor_graph():
    params = xor_model()
    x, y = xor_inputs()
    return npnn.trace(lambda a, b: xor_forward(params, a, b), x, y), params, x, y


def test_trace_records_the_labs_graph(xor_graph):
    graph, params, x, y = xor_graph
    got = [(n.name, n.op, n.inputs) for n in graph.nodes]
    assert got == [(name, op, inputs) for name, op, inputs in EXPECTED]


def test_trace_records_shapes_and_dtypes(xor_graph):
    graph = xor_graph[0]
    assert graph["Layer1/MatMul"].shape == (4, 2) and graph["Layer2/Sigmoid"].shape == (4, 1)
    assert graph["Cost/Neg"].shape == () and graph["Layer1/bias_1"].shape == (2,)
    assert graph["Cost/Neg"].dtype == np.float32 and graph["Greater"].dtype == np.bool_
    assert graph["Cost/sub/x"].value == 1.0 and graph["Cost/sub/x"].dtype == np.float32


def test_trace_returns_outputs_and_values_match_eager(xor_graph):
    graph, params, x, y = xor_graph
    cost, accuracy = graph.outputs
    eager_cost, eager_acc = xor_forward(params, x, y)
    assert cost.item() == eager_cost.item() and accuracy.item() == eager_acc.item()
    cost.backward()  # a traced forward still trains
    assert params[0].grad.shape == (2, 2)


def test_tracing_is_off_afterwards_and_eager_ops_are_unnamed(xor_graph):
    assert tensor_module._tracer is None
    params = xor_graph[1]
    x, y = xor_inputs()
    cost, _ = xor_forward(params, x, y)
    assert cost.name is None  # names are given to op outputs only while tracing
    assert xor_graph[0].outputs[0].name == "Cost/Neg"


def test_trace_restores_state_when_fn_raises():
    def broken(t):
        t * 2
        raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        npnn.trace(broken, Tensor([1.0]))
    assert tensor_module._tracer is None


def test_unique_suffixes_and_unnamed_inputs():
    w = Parameter(np.ones((3, 3), np.float32))

    def f(a):
        with npnn.name_scope("Block"):
            h = a @ w
            h = h @ w
            h = npnn.relu(h) + npnn.relu(h)
        with npnn.name_scope("Block"):  # a scope entered again adds to the same box
            return h.sum(axis=0) * 2.0

    g = npnn.trace(f, Tensor(np.ones((2, 3), np.float32)))
    assert g.names() == [
        "Placeholder",
        "Variable",
        "Block/MatMul",
        "Block/MatMul_1",
        "Block/Relu",
        "Block/Relu_1",
        "Block/add",
        "Block/Sum",
        "Block/mul/y",
        "Block/mul",
    ]
    assert g["Block/MatMul_1"].inputs == ["Block/MatMul", "Variable"]


def test_trace_covers_functional_ops():
    import npnn.functional as F

    w = Parameter(np.ones((4, 3), np.float32), name="fc/weight")
    g = npnn.trace(
        lambda a: F.cross_entropy(F.linear(a, w), np.array([0, 1])), Tensor(np.ones((2, 3), np.float32), name="images")
    )
    assert [(n.name, n.op) for n in g.nodes] == [
        ("images", "Placeholder"),
        ("fc/weight", "VariableV2"),
        ("Linear", "Linear"),
        ("SoftmaxCrossEntropy/y", "Const"),
        ("SoftmaxCrossEntropy", "SoftmaxCrossEntropy"),
    ]


def test_add_node_by_hand():
    params = xor_model()
    g = npnn.trace(lambda a, b: xor_forward(params, a, b), *xor_inputs())
    grads = g.add_node("Train/gradients", "Gradients", ["Cost/Neg"])
    step = g.add_node("Train/Adam", "ApplyAdam", [grads, "Layer1/weight_1", "^Layer2/bias_2"])
    again = g.add_node("Train/Adam", "ApplyAdam", like=params[0])
    assert (grads, step, again) == ("Train/gradients", "Train/Adam", "Train/Adam_1")
    nodes = {n.name: n for n in g.as_graph_def().node}
    assert list(nodes["Train/Adam"].input) == ["Train/gradients", "Layer1/weight_1", "^Layer2/bias_2"]
    assert "_output_shapes" not in nodes["Train/Adam"].attr  # no outputs: no shapes drawn
    shapes = nodes["Train/Adam_1"].attr["_output_shapes"].list.shape
    assert [[d.size for d in s.dim] for s in shapes] == [[2, 2]]
    with pytest.raises(ValueError, match=r"\['nope'\] are not nodes"):
        g.add_node("Train/x", "NoOp", ["nope"])


def test_add_node_takes_tensors_of_the_graph():
    params = xor_model()
    g = npnn.trace(lambda a, b: xor_forward(params, a, b), *xor_inputs())
    cost, accuracy = g.outputs
    name = g.add_node("Report", "Identity", [cost, accuracy, params[0]], like=cost)
    assert g[name].inputs == ["Cost/Neg", "Mean", "Layer1/weight_1"]
    with pytest.raises(ValueError, match=r"add_node: the Tensor without a name \(shape \(2,\)\) is not a node"):
        g.add_node("Bad", "NoOp", [Tensor(np.zeros(2, np.float32))])


def train_step_graph(optimizer_class=npnn.optim.Adam):
    """Trace a training step whose optimizer was built under name_scope("Train")."""
    params = xor_model()
    with npnn.name_scope("Train"):
        opt = optimizer_class(params, lr=0.1)
    before = [p.data.copy() for p in params]

    def step(x, y):
        cost, accuracy = xor_forward(params, x, y)
        opt.zero_grad()
        cost.backward()
        opt.step()
        return cost

    graph = npnn.trace(step, *xor_inputs())
    return graph, params, before, opt


def test_traced_training_step_draws_the_train_scope_fed_by_the_cost():
    graph, params, before, opt = train_step_graph()
    assert opt.scope == "Train"
    assert [(n.name, n.op, n.inputs) for n in graph.nodes[len(EXPECTED) :]] == [
        ("Train/gradients", "Gradients", ["Cost/Neg"]),
        (
            "Train/Adam",
            "ApplyAdam",
            ["Train/gradients", "Layer1/weight_1", "Layer1/bias_1", "Layer2/weight_2", "Layer2/bias_2"],
        ),
    ]
    for p, b in zip(params, before):  # tracing draws the step, as TF1 builds minimize(): no update
        np.testing.assert_array_equal(p.data, b)
        assert p.grad is None
    sgd_graph = train_step_graph(npnn.optim.SGD)[0]
    assert sgd_graph.names()[-2:] == ["Train/gradients", "Train/SGD"]


def test_tensorboard_reads_the_train_nodes(tmp_path):
    writer = FileWriter(tmp_path)
    writer.add_graph(train_step_graph()[0])
    writer.close()
    ea = EventAccumulator(str(tmp_path))
    ea.Reload()
    nodes = {n.name: n for n in ea.Graph().node}
    assert list(nodes["Train/gradients"].input) == ["Cost/Neg"]
    assert list(nodes["Train/Adam"].input)[:2] == ["Train/gradients", "Layer1/weight_1"]
    assert nodes["Train/Adam"].op == "ApplyAdam"


def test_graph_def_has_types_and_output_shapes(xor_graph):
    gd = xor_graph[0].as_graph_def()
    assert isinstance(gd, graph_pb2.GraphDef)
    nodes = {n.name: n for n in gd.node}
    assert len(nodes) == len(EXPECTED)
    assert nodes["x"].attr["dtype"].type == types_pb2.DT_FLOAT
    assert [d.size for d in nodes["x"].attr["shape"].shape.dim] == [4, 2]
    assert nodes["Layer1/weight_1"].attr["dtype"].type == types_pb2.DT_FLOAT
    assert nodes["Layer1/MatMul"].attr["T"].type == types_pb2.DT_FLOAT
    assert nodes["Greater"].attr["T"].type == types_pb2.DT_BOOL
    shapes = nodes["Layer1/MatMul"].attr["_output_shapes"].list.shape
    assert [[d.size for d in s.dim] for s in shapes] == [[4, 2]]
    assert list(nodes["Cost/sub/x"].attr["value"].tensor.float_val) == [1.0]
    assert list(nodes["Layer2/MatMul"].input) == ["Layer1/Sigmoid", "Layer2/weight_2"]


# -- the real TensorBoard draws it --------------------------------------------------------------


def parse_pbtxt_nodes(text: str) -> dict:
    """{name: (op, [inputs], [[dims] of each output shape])} from the plugin's pbtxt GraphDef."""
    gd = text_format.Parse(text, graph_pb2.GraphDef(), allow_unknown_field=True)
    return {
        n.name: (n.op, list(n.input), [[d.size for d in s.dim] for s in n.attr["_output_shapes"].list.shape])
        for n in gd.node
    }


def test_tensorboard_graphs_plugin_serves_the_traced_graph(tmp_path, xor_graph):
    writer = FileWriter(tmp_path / "xor")
    writer.add_graph(xor_graph[0])  # FileWriter takes any object with as_graph_def()
    writer.close()
    with tensorboard(tmp_path, load_fast=True) as tb:
        info = tb.wait_for(
            lambda: tb.json("/data/plugin/graphs/info"), lambda r: "xor" in r and r["xor"].get("run_graph")
        )
        assert info["xor"]["run_graph"] is True
        text = tb.get("/data/plugin/graphs/graph", run="xor", conceptual="false").decode()
    nodes = parse_pbtxt_nodes(text)
    assert set(nodes) == {name for name, _, _ in EXPECTED}
    for name, op, inputs in EXPECTED:
        assert nodes[name][0] == op and nodes[name][1] == inputs, name
    scopes = {name.split("/")[0] for name in nodes if "/" in name}
    assert scopes == {"Layer1", "Layer2", "Cost", "Greater"}  # Greater/y: TF names it the same
    assert nodes["Layer1/MatMul"][2] == [[4, 2]]
    assert nodes["Layer2/Sigmoid"][2] == [[4, 1]]
