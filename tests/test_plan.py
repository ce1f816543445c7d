"""npnn.plan: a recorded step replays bit-identically to eager, and runs eager when replay could be wrong."""

import math

import numpy as np
import pytest
from hypothesis import Phase, event, given, settings
from hypothesis import strategies as st
from hypothesis_settings import examples

import npnn
from npnn import init, optim, plan, summary

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y = np.array([[0], [1], [1], [0]], np.float32)


def xor_setup(seed: int = 777):
    """The XOR lab's parameters (seed 777), their Adam and the lab's cost as loss_fn(x, y)."""
    npnn.manual_seed(seed)
    params = [npnn.Parameter(init.normal(s)) for s in ([2, 2], [2], [2, 1], [1])]
    W1, b1, W2, b2 = params

    def loss_fn(x, y):
        h = npnn.sigmoid(npnn.sigmoid(x @ W1 + b1) @ W2 + b2)
        return -(y * npnn.log(h) + (1 - y) * npnn.log(1 - h)).mean()

    return params, optim.Adam(params, lr=0.01), loss_fn


def eager_step(loss_fn, opt, *inputs):
    loss = loss_fn(*inputs)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def assert_twins(eager_params, plan_params, eager_loss, plan_loss):
    assert bits(eager_loss.data) == bits(plan_loss.data)
    for e, p in zip(eager_params, plan_params):
        assert bits(e.data) == bits(p.data) and bits(e.grad) == bits(p.grad)
        assert p.grad.dtype == p.data.dtype == np.float32


def test_replay_is_bit_identical_to_eager_over_many_steps():
    ep, eopt, efn = xor_setup()
    pp, popt, pfn = xor_setup()
    step = plan.compile(pfn, popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    for i in range(1500):
        e = eager_step(efn, eopt, x, y)
        p = step(x, y)
        assert_twins(ep, pp, e, p)
        if i == 0:
            first = p
    assert step.replaying and step.refused is None and p is first  # the same loss Tensor, updated
    assert step.program is not None and step.unbuffered is None  # the buffered backward and Adam ran
    assert e.item() < 0.1  # trained (from ~0.7): the check covers a whole run, not a stuck one


def test_new_input_data_and_a_shape_change_fall_back_to_eager_then_replay_again():
    ep, eopt, efn = xor_setup(1)
    pp, popt, pfn = xor_setup(1)
    step = plan.compile(pfn, popt)
    rng = np.random.default_rng(0)
    for i in range(60):
        n = 3 if 20 <= i < 30 else 4  # ten steps on another batch shape, ten in float64
        xs = npnn.Tensor(rng.random((n, 2)).astype(np.float64 if 40 <= i < 50 else np.float32))
        ys = npnn.Tensor((rng.random((n, 1)) > 0.5).astype(np.float32))
        e = eager_step(efn, eopt, xs, ys)
        p = step(xs, ys)
        assert bits(e.data) == bits(p.data)
        for a, b in zip(ep, pp):
            assert bits(a.data) == bits(b.data) and bits(a.grad) == bits(b.grad)
        assert step.replaying


def test_data_dependent_control_flow_is_refused_and_runs_eager():
    ep, eopt, efn = xor_setup(2)
    pp, popt, pfn = xor_setup(2)

    def branching(fn):
        def loss_fn(x, y):
            loss = fn(x, y)
            return loss * 2.0 if loss.item() > 0.6 else loss  # Python control flow on a value

        return loss_fn

    step = plan.compile(branching(pfn), popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    taken = set()
    for _ in range(300):
        e = eager_step(branching(efn), eopt, x, y)
        p = step(x, y)
        assert_twins(ep, pp, e, p)
        taken.add(e.item() > 0.6)
    assert not step.replaying and "item" in step.refused


@pytest.mark.parametrize("case", ["unsupported op", "constant made inside", "tensor() inside"])
def test_what_cannot_be_replayed_runs_eager(case):
    ep, eopt, efn = xor_setup(3)
    pp, popt, pfn = xor_setup(3)
    c = np.full((4, 1), 0.5, np.float32)

    def variant(fn):
        def loss_fn(x, y):
            loss = fn(x, y)
            if case == "unsupported op":
                return loss + npnn.tanh(loss) * 0.0
            if case == "constant made inside":
                return loss + (y * c).mean()  # an ndarray operand: a constant the plan cannot follow
            return loss + npnn.Tensor(np.float32(0.0))

        return loss_fn

    step = plan.compile(variant(pfn), popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    for _ in range(5):
        assert_twins(ep, pp, eager_step(variant(efn), eopt, x, y), step(x, y))
    assert not step.replaying and step.refused


def test_buffered_backward_sums_shares_in_the_engines_order_over_many_steps():
    # A node and a parameter reached three times each (shares summed in arrival order: float
    # addition is not associative), a parameter-only branch, scalar scale/divide, exp, sub.
    npnn.manual_seed(4)
    rng = np.random.default_rng(4)

    def setup():
        params = [npnn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in ([3, 3], [3], [3, 1])]
        W, b, V = params

        def loss_fn(x, y):
            h = npnn.sigmoid(x @ W + b)
            z = h * h + h / 3.0 - npnn.exp(h * 0.5)  # h reaches the loss through four shares
            out = (z @ V) + (h @ V) * 2.0  # V twice
            d = out - y
            return (d * d).mean() + (W * W).mean() * 0.01 - b.mean() * 0.0

        return params, optim.Adam(params, lr=0.05), loss_fn

    state = rng.bit_generator.state
    ep, eopt, efn = setup()
    rng.bit_generator.state = state
    pp, popt, pfn = setup()
    step = plan.compile(pfn, popt)
    x = npnn.Tensor(rng.standard_normal((5, 3)).astype(np.float32))
    y = npnn.Tensor(rng.standard_normal((5, 1)).astype(np.float32))
    losses = []
    for _ in range(400):
        e = eager_step(efn, eopt, x, y)
        assert_twins(ep, pp, e, step(x, y))
        losses.append(e.item())
    assert step.program is not None and step.unbuffered is None
    assert losses[-1] < 0.5 * losses[0]


def test_replayed_adam_follows_changed_hyperparameters_loaded_state_and_new_parameter_arrays():
    ep, eopt, efn = xor_setup(5)
    pp, popt, pfn = xor_setup(5)
    step = plan.compile(pfn, popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    saved = None
    for i in range(300):
        if i == 100:  # a learning-rate schedule and new betas, read at every replayed step
            for opt in (eopt, popt):
                opt.param_groups[0]["lr"] = 0.003
                opt.param_groups[0]["betas"] = (0.8, 0.99)
        if i == 150:
            saved = eopt.state_dict()
        if i == 200:  # new parameter arrays (same values): the replay must read these, not the old ones
            for e, p in zip(ep, pp):
                e.data, p.data = e.data.copy(), p.data.copy()
        if i == 250:  # back to step 150's moments: new state arrays the replay must not miss
            eopt.load_state_dict(saved)
            popt.load_state_dict(saved)
        assert_twins(ep, pp, eager_step(efn, eopt, x, y), step(x, y))
        for e, p in zip(ep, pp):
            s, t = eopt.state[id(e)], popt.state[id(p)]
            assert s["step"] == t["step"] and bits(s["m"]) == bits(t["m"]) and bits(s["s"]) == bits(t["s"])
    assert step.program is not None


def test_other_optimizers_replay_without_the_buffered_program():
    npnn.manual_seed(6)
    runs = []
    for _ in range(2):
        params, _, fn = xor_setup(6)
        runs.append((params, optim.SGD(params, lr=0.5, momentum=0.9), fn))
    (ep, eopt, efn), (pp, popt, pfn) = runs
    step = plan.compile(pfn, popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    for _ in range(200):
        assert_twins(ep, pp, eager_step(efn, eopt, x, y), step(x, y))
    assert step.replaying and step.program is None and "Adam" in step.unbuffered


@pytest.mark.parametrize("change", ["requires_grad off", "new shape"])
def test_a_parameter_changing_its_graph_runs_eager_from_then_on(change):
    ep, eopt, efn = xor_setup(7)
    pp, popt, pfn = xor_setup(7)
    if change == "new shape":  # Adam's moments would not fit the new shape, in eager too
        eopt, popt = optim.SGD(ep, lr=0.5), optim.SGD(pp, lr=0.5)
    step = plan.compile(pfn, popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    for i in range(60):
        if i == 30:
            for params in (ep, pp):
                if change == "requires_grad off":
                    params[1].requires_grad_(False)  # b1 frozen: no gradient, no update
                else:
                    params[1].data = params[1].data[:1].copy()  # b1 of shape (1,): broadcast differently
        e, p = eager_step(efn, eopt, x, y), step(x, y)
        assert bits(e.data) == bits(p.data)
        for a, b in zip(ep, pp):
            assert bits(a.data) == bits(b.data)
            assert (a.grad is None and b.grad is None) or bits(a.grad) == bits(b.grad)
    assert not step.replaying and "changed" in step.refused


def xor_with_summaries(seed: int, const=None):
    """xor_setup's net whose loss_fn also records histograms and scalars (the lab's kinds), an
    accuracy made of comparisons and casts, and, given const, a summary of it."""
    params, opt, _ = xor_setup(seed)
    W1, b1, W2, b2 = params

    def loss_fn(x, y):
        layer1 = npnn.sigmoid(x @ W1 + b1)
        summary.histogram("W1", W1), summary.histogram("Layer1", layer1)
        h = npnn.sigmoid(layer1 @ W2 + b2)
        cost = -(y * npnn.log(h) + (1 - y) * npnn.log(1 - h)).mean()
        summary.scalar("Cost", cost)
        summary.scalar("accuracy", ((h > 0.5).float() == y).float().mean())  # made after the cost
        summary.histogram("Hypothesis", h, collections=["outputs"])
        if const is not None:
            summary.histogram("const", const)
        return cost

    return params, opt, loss_fn


def test_summaries_recorded_by_loss_fn_merge_this_steps_values_before_the_update():
    summary.clear()
    ep, eopt, efn = xor_with_summaries(8)
    pp, popt, pfn = xor_with_summaries(8)
    step = plan.compile(pfn, popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    accuracies = set()
    for i in range(400):
        if i == 150:
            summary.clear()  # forgotten, as after a new TF graph: the next step records them again
        loss = efn(x, y)
        eopt.zero_grad()
        loss.backward()
        eager = summary.merge_all().SerializeToString()  # binds the eager tensors to the tags
        eager_outputs = summary.merge_all("outputs").SerializeToString()
        eopt.step()
        p = step.forward_backward(x, y)
        replayed = summary.merge_all()
        replayed_outputs = summary.merge_all("outputs").SerializeToString()
        step.update()
        assert replayed.SerializeToString() == eager and replayed_outputs == eager_outputs
        assert_twins(ep, pp, loss, p)
        accuracies.add(replayed.value[-1].simple_value)
    assert step.replaying and step.program is not None
    assert {v.tag for v in replayed.value} == {"W1", "Layer1", "Cost", "accuracy"}
    assert len(accuracies) >= 2  # the comparisons behind the accuracy changed their results while replayed


@pytest.mark.parametrize("const", ["constant tensor", "ndarray"])
def test_a_summary_the_plan_cannot_follow_runs_eager(const):
    summary.clear()
    value = np.ones(3, np.float32)
    made = npnn.Tensor(value) if const == "constant tensor" else value
    ep, eopt, efn = xor_with_summaries(9, made)
    pp, popt, pfn = xor_with_summaries(9, made)
    step = plan.compile(pfn, popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    for _ in range(5):
        assert_twins(ep, pp, eager_step(efn, eopt, x, y), step(x, y))
    why = "a constant tensor made outside loss_fn" if const == "constant tensor" else "not a Tensor"
    assert not step.replaying and why in step.refused


def test_update_applies_the_gradients_of_one_forward_backward():
    pp, popt, pfn = xor_setup(10)
    step = plan.compile(pfn, popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    with pytest.raises(RuntimeError, match="forward_backward"):
        step.update()
    for _ in range(3):  # eager (recording), replayed, then the buffered program
        before = [p.data.copy() for p in pp]
        step.forward_backward(x, y)
        assert all(bits(b) == bits(p.data) for b, p in zip(before, pp))  # not updated yet
        step.update()
        assert all(bits(b) != bits(p.data) for b, p in zip(before, pp))
        with pytest.raises(RuntimeError, match="once per update"):
            step.update()
    assert step.program is not None


def test_an_input_that_requires_grad_gets_its_gradient_eagerly():
    ep, eopt, efn = xor_setup(11)
    pp, popt, pfn = xor_setup(11)
    step = plan.compile(pfn, popt)
    ex, px = npnn.Tensor(X, requires_grad=True), npnn.Tensor(X, requires_grad=True)
    y = npnn.Tensor(Y)
    for _ in range(4):  # the input's gradient accumulates over the steps, as in eager
        assert_twins(ep, pp, eager_step(efn, eopt, ex, y), step(px, y))
        assert bits(ex.grad) == bits(px.grad)
    assert np.abs(px.grad).sum() > 0 and not step.replaying and "input" in step.refused


def test_a_python_number_read_from_a_dict_that_changes_is_never_replayed_stale():
    # The case: cost * cfg["w"], w from 1 to 100 at step 10; eager gives 72.1 there.
    ep, eopt, efn = xor_setup(12)
    pp, popt, pfn = xor_setup(12)
    cfg = {"w": 1}

    def weighted(fn):
        return lambda x, y: fn(x, y) * cfg["w"]

    step = plan.compile(weighted(pfn), popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    for i in range(20):
        cfg["w"] = 1 if i < 10 else 100
        e = eager_step(weighted(efn), eopt, x, y)
        assert_twins(ep, pp, e, step(x, y))
        if i == 10:
            assert e.item() > 50
    assert not step.replaying and "Mul took 1 from a variable" in step.refused


class Scaled:
    scale = 2.0


CFG = {"w": 2.0, "dtype": np.float32, "axis": None}
SCALED = Scaled()
LAM = 2.0
# loss_fn's last line, given the cost c, and whether the plan may bake its numbers and dtypes.
WRITTEN = {
    "c * 0.5": True,
    "1 - c": True,
    "c / 3": True,
    "(c > 0.5).float() * c": True,
    "(c > -0.5).astype(np.float32) * c": True,
    "c * math.pi": True,
    "c * -2": True,
    "c.mean(axis=None)": True,
    "npnn.ops.mean(c) + npnn.ops.cast(c, np.float32)": True,
    'c * CFG["w"]': False,
    "c * LAM": False,
    "c * SCALED.scale": False,
    "c * float(LAM)": False,
    'c.astype(CFG["dtype"])': False,
    'c.mean(axis=CFG["axis"])': False,
    'npnn.ops.mean(c, CFG["axis"])': False,
    "npnn.ops.mean(c, axis=None)": False,  # keywords: which one is the tensor is not told apart
    'c.mean(**{"axis": None})': False,
    '(lambda m: m(CFG["axis"]))(c.mean)': False,  # a bound method: its first argument is the axis
    "npnn.ops.mul(c, 2.0)": False,
    "sum([c, c])": False,
}


@pytest.mark.parametrize("last", sorted(WRITTEN))
def test_numbers_written_at_the_operator_replay_and_others_refuse_naming_the_op(last):
    ep, eopt, efn = xor_setup(13)
    pp, popt, pfn = xor_setup(13)

    def variant(fn):
        return eval(f"lambda x, y: (lambda c: {last})(fn(x, y))", {**globals(), "math": math, "fn": fn})

    step = plan.compile(variant(pfn), popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    for _ in range(4):
        assert_twins(ep, pp, eager_step(variant(efn), eopt, x, y), step(x, y))
    assert step.replaying is WRITTEN[last], step.refused
    assert WRITTEN[last] or "from a variable" in step.refused


def test_a_changing_factor_passed_as_a_0d_input_tensor_replays_with_each_calls_value():
    ep, eopt, efn = xor_setup(14)
    pp, popt, pfn = xor_setup(14)

    def weighted(fn):
        return lambda x, y, w: fn(x, y) * w

    step = plan.compile(weighted(pfn), popt)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    for i in range(20):
        w = npnn.Tensor(np.float32(1 if i < 10 else 100))
        assert_twins(ep, pp, eager_step(weighted(efn), eopt, x, y, w), step(x, y, w))
    assert step.replaying and step.program is not None


# -- differential: random programs through the plan and eagerly ---------------------------------
# loss_fn is generated as source text, so its numbers are real literals or real reads of a dict
# (the bytecode the plan inspects); the dict's values change between steps, and so do the
# batch size and the dtype. Every step must give eager's bits, whether replayed or not.

NUMBERS = (0.5, 2.0, -1.25, 3, 1, 0.1)
AXES = (None, (0, 1), 0)  # a mean's: the plan replays the full ones
# (template, whether the plan has a kernel for it): {a}, {b} name earlier values, {c} a number,
# {m} a mean's axis.
TEMPLATES = (
    ("npnn.sigmoid({a})", True),
    ("npnn.exp(npnn.sigmoid({a}))", True),
    ("npnn.log(npnn.sigmoid({a}))", True),
    ("-{a}", True),
    ("{a} @ V", True),
    ("{a} + {b}", True),
    ("{a} - {b}", True),
    ("{a} * {b}", True),
    ("{a} + b", True),
    ("{a} * y", True),
    ("{a} + {c}", True),
    ("{c} + {a}", True),
    ("{a} - {c}", True),
    ("{c} - {a}", True),
    ("{a} * {c}", True),
    ("{c} * {a}", True),
    ("{a} / {c}", True),
    ("({a} > {c}).float() * {b}", True),
    ("({a} <= {b}).astype(np.float32) * {a}", True),
    ("{a} * {b}.mean(axis={m})", True),
    ("npnn.tanh({a})", False),
    ("{a} / ({b} * {b} + 1)", False),
)


@st.composite
def programs(draw) -> dict:
    """A loss_fn's source over x, y, parameters W, b, V and a dict cfg, with what it uses."""
    lines, keys, supported = ["v0 = x @ W + b"], [], True

    def value(choices: tuple, literals: tuple) -> str:
        """A literal from literals, or a read of a new cfg key whose values are drawn from choices."""
        if draw(st.booleans()):
            keys.append((f"k{len(keys)}", choices))
            return f'cfg["{keys[-1][0]}"]'
        return repr(draw(st.sampled_from(literals)))

    for i in range(1, draw(st.integers(1, 6)) + 1):
        text, ok = draw(st.sampled_from(TEMPLATES))
        a, b = (f"v{draw(st.integers(0, i - 1))}" for _ in range(2))
        c = value(NUMBERS, NUMBERS) if "{c}" in text else ""
        m = value(AXES, AXES[:2]) if "{m}" in text else ""
        lines.append(f"v{i} = " + text.format(a=a, b=b, c=c, m=m))
        supported &= ok
    lines.append(f"return ((v{i} - y) * (v{i} - y)).mean()")
    steps = draw(st.integers(2, 6))
    return {
        "source": "def make(cfg, W, b, V):\n    def loss_fn(x, y):\n"
        + "".join(f"        {s}\n" for s in lines)
        + "    return loss_fn\n",
        "static": supported and not keys,
        "reads_cfg": bool(keys),
        "cfgs": [{k: draw(st.sampled_from(choices)) for k, choices in keys} for _ in range(steps)],
        "batches": [4] + [draw(st.sampled_from((4, 4, 3))) for _ in range(steps - 1)],
        "float64": [False] + [draw(st.integers(0, 5)) == 0 for _ in range(steps - 1)],
        "adam": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


def run_against_eager(program: dict, refusals: bool = True) -> None:
    """The program's steps through a plan and eagerly on a copy: the same bits every step; with
    refusals, also that the plan replays exactly the programs of literals and kernels."""
    namespace = {"npnn": npnn, "np": np}
    exec(compile(program["source"], "<generated loss_fn>", "exec"), namespace)
    rng = np.random.default_rng(program["seed"])
    start = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in ((3, 2), (2,), (2, 2))]
    cfg = {}
    runs = []
    for _ in range(2):
        params = [npnn.Parameter(a.copy()) for a in start]
        opt = optim.Adam(params, lr=0.01) if program["adam"] else optim.SGD(params, lr=0.01)
        runs.append((params, opt, namespace["make"](cfg, *params)))
    (ep, eopt, efn), (pp, popt, pfn) = runs
    step = plan.compile(pfn, popt)
    with np.errstate(all="ignore"):  # a program may overflow: eager's inf and NaN must come out too
        for k, (values, n, wide) in enumerate(zip(program["cfgs"], program["batches"], program["float64"])):
            cfg.update(values)
            dtype = np.float64 if wide else np.float32
            x = npnn.Tensor(rng.standard_normal((n, 3)).astype(dtype))
            y = npnn.Tensor(rng.standard_normal((n, 2)).astype(dtype))
            e, p = eager_step(efn, eopt, x, y), step(x, y)
            differs = f"step {k} differs from eager:\n{program['source']}"
            assert e.data.dtype == p.data.dtype and bits(e.data) == bits(p.data), differs
            for a, b in zip(ep, pp):
                assert bits(a.data) == bits(b.data), differs
                assert (a.grad is None and b.grad is None) or bits(a.grad) == bits(b.grad), differs
    why = step.refused or ""
    event("replayed" if step.replaying else "eager: " + ("a number from cfg" if "variable" in why else why[:30]))
    if refusals and program["static"]:  # literals and kernels only: replayed, not refused
        assert step.replaying, (step.refused, program["source"])
    if refusals and program["reads_cfg"]:  # a number from the dict: never replayed
        assert not step.replaying, f"replays a number read from cfg:\n{program['source']}"


@settings(max_examples=examples(40), deadline=None)
@given(programs())
def test_random_programs_replay_eagers_bits_or_run_eagerly(program):
    run_against_eager(program)


def caught(broken_examples: int) -> AssertionError:
    """The AssertionError the bit-for-bit comparison raises on some generated program."""
    search = settings(
        max_examples=broken_examples, deadline=None, phases=[Phase.generate], database=None, derandomize=True
    )
    with pytest.raises(AssertionError) as failure:
        search(given(programs())(lambda program: run_against_eager(program, refusals=False)))()
    return failure.value


def test_the_differential_catches_a_plan_that_bakes_numbers_read_from_a_dict(monkeypatch):
    monkeypatch.setattr(plan, "_written_at_the_call", lambda op, value=None: True)  # every number baked
    assert "differs from eager" in str(caught(examples(200)))  # a stale number from the dict


def test_the_differential_catches_a_replay_kernel_off_by_one_ulp(monkeypatch):
    def multiply(a, b, out):
        np.multiply(a, b, out=out)
        np.nextafter(out, np.inf, out=out)

    multiply.nin = 2  # read by the plan as a ufunc's
    monkeypatch.setitem(plan._UFUNCS, "Mul", multiply)
    assert "differs from eager" in str(caught(examples(200)))
