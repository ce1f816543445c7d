"""npnn.nn: Module API, layers, state dicts and files, and an MLP / CNN cross-checked against
networks written plainly in NumPy here."""

import os

import numpy as np
import pytest

import npnn
from npnn import functional as F
from npnn import nn, optim


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.act = nn.ReLU()
        self.scale = nn.Parameter(np.ones(3, np.float32))

    def forward(self, x):
        return self.act(self.fc(x)) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Block()
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 2))

    def forward(self, x):
        return self.head(self.encoder(x))


# ---- Module API -----------------------------------------------------------------------------


def test_named_parameters_are_dotted_and_in_registration_order():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    # a module's own parameters before its children's, as PyTorch orders them
    assert names == ["encoder.scale", "encoder.fc.weight", "encoder.fc.bias", "head.1.weight", "head.1.bias"]
    assert [p.shape for p in net.parameters()] == [(3,), (3, 4), (3,), (2, 3), (2,)]
    assert all(isinstance(p, nn.Parameter) and p.dtype == np.float32 for p in net.parameters())
    assert [n for n, _ in net.named_children()] == ["encoder", "head"]
    assert [n for n, _ in net.named_modules()] == [
        "",
        "encoder",
        "encoder.fc",
        "encoder.act",
        "head",
        "head.0",
        "head.1",
    ]
    assert [n for n, _ in net.encoder.named_parameters(recurse=False)] == ["scale"]
    assert nn.Parameter is npnn.Parameter


def test_setattr_registers_replaces_and_unregisters():
    b = Block()
    new = nn.Linear(4, 3)
    b.fc = new
    assert dict(b.named_parameters())["fc.weight"] is new.weight
    b.fc = None  # a registered submodule may be set to None (PyTorch allows it)
    assert [n for n, _ in b.named_parameters()] == ["scale"]
    with pytest.raises(TypeError, match="scale"):
        b.scale = np.ones(3)  # a plain array would silently stop being trained
    b.plain = 3  # ordinary attributes stay ordinary
    assert b.plain == 3 and "plain" not in dict(b.named_parameters())
    del b.scale
    assert list(b.named_parameters()) == []
    lin = nn.Linear(2, 2, bias=False)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]


def test_forgetting_super_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match="super"):
        Bad()


def test_shared_parameter_listed_once():
    a = nn.Linear(3, 3)
    seq = nn.Sequential(a, nn.ReLU(), a)
    assert len(list(seq.parameters())) == 2
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]


def test_train_eval_recursive_and_dropout_behaviour():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    x = npnn.Tensor(np.ones((1000, 50), np.float32))
    drop = nn.Dropout(0.3)
    npnn.manual_seed(0)
    y = drop(x).data
    assert abs(np.mean(y == 0) - 0.3) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    drop.eval()
    assert drop(x) is x or np.array_equal(drop(x).data, x.data)
    net.train()
    assert all(m.training for m in net.modules())


def test_sequential_indexing_and_building():
    layers = [nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and seq[0] is layers[0] and seq[-1] is layers[2]
    assert list(seq) == layers
    assert list(seq[1:]) == layers[1:]
    with pytest.raises(IndexError, match="index"):
        seq[3]
    seq.append(nn.Tanh())
    assert [n for n, _ in seq.named_children()] == ["0", "1", "2", "3"]
    from collections import OrderedDict

    named = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.ReLU()))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    with pytest.raises(TypeError, match="modules"):
        nn.Sequential(nn.ReLU(), np.tanh)
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in repr(seq)


def test_linear_layout_init_and_forward():
    npnn.manual_seed(0)
    lin = nn.Linear(300, 20)
    assert lin.weight.shape == (20, 300) and lin.bias.shape == (20,)
    bound = 1 / np.sqrt(300)
    assert np.abs(lin.weight.data).max() <= bound and np.abs(lin.weight.data).max() > 0.99 * bound
    x = np.random.default_rng(0).standard_normal((5, 300)).astype(np.float32)
    out = lin(npnn.Tensor(x))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, x @ lin.weight.data.T + lin.bias.data, rtol=1e-5, atol=1e-5)


def test_activation_and_flatten_modules():
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    t = npnn.Tensor(x)
    np.testing.assert_allclose(nn.ReLU()(t).data, np.maximum(x, 0))
    np.testing.assert_allclose(nn.Sigmoid()(t).data, 1 / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(nn.Tanh()(t).data, np.tanh(x), rtol=1e-6)
    assert nn.Flatten()(t).shape == (2, 12)
    assert nn.Flatten(0, 1)(t).shape == (6, 4)
    assert nn.Identity()(t) is t


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: nn.Linear(0, 3), "in_features"),
        (lambda: nn.Linear(3, -1), "out_features"),
        (lambda: nn.Dropout(1.5), "p"),
        (lambda: nn.Conv2d(1, 2, 0), "kernel_size"),
        (lambda: nn.Conv2d(1, 2, 3, padding=-1), "padding"),
        (lambda: nn.MaxPool2d((2, 2, 2)), "kernel_size"),
    ],
)
def test_bad_layer_arguments_name_the_argument(make, arg):
    with pytest.raises(ValueError) as e:
        make()
    assert str(e.value).startswith(arg + ":"), str(e.value)


# ---- state dicts and files -----------------------------------------------------------------


def test_state_dict_is_a_snapshot_and_loads_in_place():
    net = Net()
    sd = net.state_dict()
    assert list(sd) == [n for n, _ in net.named_parameters()]
    w = net.encoder.fc.weight.data
    w += 1.0  # a later training step must not change the snapshot
    assert not np.array_equal(sd["encoder.fc.weight"], w)
    net.load_state_dict(sd)
    assert net.encoder.fc.weight.data is w  # loaded into the same array: optimizers keep working
    np.testing.assert_array_equal(w, sd["encoder.fc.weight"])


def test_load_state_dict_errors_name_keys_and_shapes():
    net = Net()
    sd = net.state_dict()
    bad = dict(sd)
    bad["head.1.weight"] = np.zeros((3, 3), np.float32)
    bad["encoder.fc.bias"] = np.full(3, 7.0, np.float32)
    with pytest.raises(ValueError) as e:
        net.load_state_dict(bad)
    assert "head.1.weight" in str(e.value) and "(3, 3)" in str(e.value) and "(2, 3)" in str(e.value)
    assert not np.any(net.encoder.fc.bias.data == 7.0), "a failed load must change nothing"
    missing = dict(sd)
    del missing["encoder.scale"]
    missing["decoder.weight"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError) as e:
        net.load_state_dict(missing)
    assert "missing keys ['encoder.scale']" in str(e.value)
    assert "unexpected keys ['decoder.weight']" in str(e.value)
    net.load_state_dict({"encoder.scale": np.full(3, 2.0)}, strict=False)
    assert net.encoder.scale.data.dtype == np.float32 and np.all(net.encoder.scale.data == 2.0)


def test_save_load_round_trip(tmp_path):
    npnn.manual_seed(1)
    a = Net()
    path = tmp_path / "model.npz"
    a.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temp file left behind
    with np.load(path) as z:
        assert sorted(z.files) == sorted(n for n, _ in a.named_parameters())
    b = Net()
    assert not np.array_equal(a.head[1].weight.data, b.head[1].weight.data)
    assert b.load(path) is b
    for (n, p), (m, q) in zip(a.named_parameters(), b.named_parameters()):
        assert n == m and q.dtype == np.float32
        np.testing.assert_array_equal(p.data, q.data)
    x = npnn.Tensor(np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(a.eval()(x).data, b.eval()(x).data)
    # saving again replaces the file atomically; an unwritable target leaves nothing behind
    a.encoder.scale.data[...] = 5.0
    a.save(str(path))
    assert np.all(np.load(path)["encoder.scale"] == 5.0)
    with pytest.raises(OSError):
        a.save(tmp_path / "no_such_dir" / "m.npz")
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    with pytest.raises(ValueError, match="missing keys"):
        nn.Linear(2, 2).load(path)


# ---- cross-checks against plain NumPy --------------------------------------------------------


def numpy_mlp(x, labels, ws, bs):
    """Forward and backward of Linear-ReLU-...-Linear + softmax cross-entropy, by hand (float64)."""
    acts = [x.astype(np.float64)]
    for i, (w, b) in enumerate(zip(ws, bs)):
        z = acts[-1] @ w.T.astype(np.float64) + b
        acts.append(np.maximum(z, 0) if i < len(ws) - 1 else z)
    logits = acts[-1]
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(p[np.arange(n), labels]).mean()
    g = p.copy()
    g[np.arange(n), labels] -= 1
    g /= n
    gws, gbs = [], []
    for i in reversed(range(len(ws))):
        gws.insert(0, g.T @ acts[i])
        gbs.insert(0, g.sum(axis=0))
        g = g @ ws[i].astype(np.float64)
        if i > 0:
            g = g * (acts[i] > 0)
    return loss, gws, gbs


def test_mlp_forward_backward_matches_numpy():
    npnn.manual_seed(3)
    sizes = [20, 16, 16, 5]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(0.3)]
    model = nn.Sequential(*layers).eval()  # dropout off: the reference has none
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 20)).astype(np.float32)
    labels = rng.integers(0, 5, 8)
    loss = F.cross_entropy(model(npnn.Tensor(x)), labels)
    loss.backward()
    lins = [m for m in model if isinstance(m, nn.Linear)]
    want_loss, gws, gbs = numpy_mlp(x, labels, [m.weight.data for m in lins], [m.bias.data for m in lins])
    np.testing.assert_allclose(loss.item(), want_loss, rtol=1e-5)
    for m, gw, gb in zip(lins, gws, gbs):
        assert m.weight.grad.dtype == np.float32 and m.weight.grad.shape == m.weight.shape
        np.testing.assert_allclose(m.weight.grad, gw, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(m.bias.grad, gb, rtol=1e-4, atol=1e-6)


def numpy_cnn(x, w1, b1, w2, b2):
    """conv 3x3 pad 1 -> ReLU -> maxpool 2 -> flatten -> linear, with explicit loops (float64)."""
    n, c, h, wd = x.shape
    o = w1.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((n, o, h, wd))
    for i in range(h):
        for j in range(wd):
            patch = xp[:, :, i : i + 3, j : j + 3]
            conv[:, :, i, j] = np.tensordot(patch, w1, axes=([1, 2, 3], [1, 2, 3])) + b1
    r = np.maximum(conv, 0)
    pooled = r.reshape(n, o, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
    return pooled.reshape(n, -1) @ w2.T + b2


def test_cnn_forward_matches_numpy_and_gradients_match_finite_differences():
    npnn.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4)
    )
    assert model[0].weight.shape == (3, 2, 3, 3)
    x = np.random.default_rng(1).standard_normal((2, 2, 6, 6))
    want = numpy_cnn(x, model[0].weight.data, model[0].bias.data, model[4].weight.data, model[4].bias.data)
    got = model(npnn.Tensor(x.astype(np.float32)))
    assert got.shape == (2, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got.data, want, rtol=1e-4, atol=1e-5)

    # float64 copy of the parameters for a central-difference check through every layer
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    labels = np.array([1, 3])
    xt = npnn.Tensor(x)
    F.cross_entropy(model(xt), labels).backward()
    rng = np.random.default_rng(2)
    for name, p in model.named_parameters():
        assert p.grad.dtype == np.float64 and p.grad.shape == p.shape, name
        for idx in [tuple(rng.integers(0, s) for s in p.shape) for _ in range(4)]:
            old = p.data[idx]
            p.data[idx] = old + 1e-6
            up = F.cross_entropy(model(xt), labels).item()
            p.data[idx] = old - 1e-6
            down = F.cross_entropy(model(xt), labels).item()
            p.data[idx] = old
            np.testing.assert_allclose(p.grad[idx], (up - down) / 2e-6, rtol=1e-4, atol=1e-8, err_msg=f"{name}{idx}")


def test_xor_trains_with_modules_and_sgd():
    npnn.manual_seed(0)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([[0], [1], [1], [0]], np.float32)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid())
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    xt = npnn.Tensor(x)
    for _ in range(500):
        opt.zero_grad()
        loss = F.binary_cross_entropy(model(xt), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert np.array_equal(model(xt).data > 0.5, y > 0.5)


def test_deepcopy_and_pickle_keep_structure_and_values():
    import copy
    import pickle

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert [n for n, _ in clone.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
        for p, q in zip(model.parameters(), clone.parameters()):
            assert p.data is not q.data
            np.testing.assert_array_equal(p.data, q.data)
        clone[0].weight = nn.Parameter(np.zeros((4, 3), np.float32))  # registration still works
        assert dict(clone.named_parameters())["0.weight"] is clone[0].weight


def test_parameters_created_in_a_name_scope_get_scoped_names():
    with npnn.name_scope("Layer1"):
        lin = nn.Linear(2, 2)
    assert lin.weight.name == "Layer1/weight" and lin.bias.name == "Layer1/bias"
    assert [n for n, _ in nn.Sequential(lin).named_parameters()] == ["0.weight", "0.bias"]


def test_module_list_registers_children():
    class Deep(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(3, 3) for _ in range(n))

        def forward(self, x):
            for layer in self.layers:
                x = F.relu(layer(x))
            return x

    deep = Deep(3)
    assert len(deep.layers) == 3 and deep.layers[-1] is list(deep.layers)[2]
    assert [n for n, _ in deep.named_parameters()][:3] == ["layers.0.weight", "layers.0.bias", "layers.1.weight"]
    deep.layers.extend([nn.Linear(3, 3)])
    assert len(list(deep.parameters())) == 8 and isinstance(deep.layers[1:], nn.ModuleList)
    assert deep(npnn.Tensor(np.ones((2, 3), np.float32))).shape == (2, 3)
    with pytest.raises(TypeError, match="module"):
        deep.layers.append(np.tanh)
    with pytest.raises(NotImplementedError):
        deep.layers(npnn.Tensor(np.ones(3, np.float32)))
