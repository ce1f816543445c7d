"""npnn.optim against plain NumPy re-implementations of PyTorch's documented update rules.

The references below are written straight from the algorithm boxes in torch.optim's docs
(float64, unfused, bias corrections applied to m and v), so they share no code or tricks
with npnn.optim's in-place float32 updates.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import npnn
from npnn import optim, parallel

SHAPES = [(7, 5), (5,), (3, 2, 2)]
STEPS = 6


def grads_for(step: int):
    """A fixed gradient sequence, different at every step."""
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def make_params(dtype=np.float32):
    rng = np.random.default_rng(1)
    return [npnn.Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]


def run_npnn(make_opt, steps=STEPS, dtype=np.float32):
    """Run an npnn optimizer for `steps` steps; check dtype and in-place updates each step."""
    params = make_params(dtype)
    arrays = [p.data for p in params]
    opt = make_opt(params)
    for t in range(steps):
        for p, g in zip(params, grads_for(t)):
            p.grad = g.astype(dtype)
        opt.step()
        for p, a in zip(params, arrays):
            assert p.data is a, "update must be in place"
            assert p.data.dtype == dtype
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, np.ndarray):
                assert v.dtype == dtype
    return [p.data for p in params]


# ---- references (PyTorch's documented algorithms, one parameter, float64) -------------------


def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    p = p.astype(np.float64)
    b = None
    for t, g in enumerate(grads):
        g = g.astype(np.float64)
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            b = g.copy() if t == 0 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def ref_adam(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        elif weight_decay:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            v_hat = vmax / (1 - b2**t)
        else:
            v_hat = v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_rmsprop(p, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    p = p.astype(np.float64)
    v = np.zeros_like(p)
    ga = np.zeros_like(p)
    b = np.zeros_like(p)
    for g in grads:
        g = g.astype(np.float64)
        if weight_decay:
            g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        vt = v
        if centered:
            ga = alpha * ga + (1 - alpha) * g
            vt = v - ga * ga
        if momentum:
            b = momentum * b + g / (np.sqrt(vt) + eps)
            p = p - lr * b
        else:
            p = p - lr * g / (np.sqrt(vt) + eps)
    return p


def reference(ref, **kw):
    """The reference applied to each parameter with its own gradient sequence."""
    start = [p.data for p in make_params(np.float64)]
    seqs = [[grads_for(t)[i] for t in range(STEPS)] for i in range(len(SHAPES))]
    return [ref(p, s, **kw) for p, s in zip(start, seqs)]


def assert_close(got, want, rtol=2e-5, atol=2e-6):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "kw",
    [
        dict(lr=0.1),
        dict(lr=0.1, momentum=0.9),
        dict(lr=0.05, momentum=0.8, dampening=0.3),
        dict(lr=0.1, momentum=0.9, nesterov=True),
        dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        dict(lr=0.1, weight_decay=0.1),
    ],
)
def test_sgd_matches_reference(kw):
    assert_close(run_npnn(lambda ps: optim.SGD(ps, **kw)), reference(ref_sgd, **kw))


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
        dict(lr=0.01, weight_decay=0.1),
        dict(lr=0.01, amsgrad=True),
    ],
)
def test_adam_matches_reference(kw):
    assert_close(run_npnn(lambda ps: optim.Adam(ps, **kw)), reference(ref_adam, **kw))


@pytest.mark.parametrize("kw", [dict(), dict(lr=0.01, weight_decay=0.1), dict(lr=0.01, amsgrad=True)])
def test_adamw_matches_reference(kw):
    want = reference(ref_adam, decoupled=True, **{"weight_decay": 1e-2, **kw})
    assert_close(run_npnn(lambda ps: optim.AdamW(ps, **kw)), want)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(lr=0.01, alpha=0.9, eps=1e-6),
        dict(lr=0.01, centered=True),
        dict(lr=0.01, momentum=0.9),
        dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.05),
    ],
)
def test_rmsprop_matches_reference(kw):
    assert_close(run_npnn(lambda ps: optim.RMSprop(ps, **kw)), reference(ref_rmsprop, **kw))


def test_float64_parameters_stay_float64():
    got = run_npnn(lambda ps: optim.Adam(ps, lr=0.01), dtype=np.float64)
    assert_close(got, reference(ref_adam, lr=0.01), rtol=1e-10, atol=1e-12)


def test_first_adam_step_moves_each_weight_by_lr():
    # With bias correction, step 1 is lr * g / (|g| + eps'): every weight moves by ~lr.
    p = npnn.Parameter(np.zeros(1000, dtype=np.float32))
    p.grad = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    optim.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(np.abs(p.data), 0.01, rtol=1e-4)
    assert np.all(np.sign(p.data) == -np.sign(p.grad))


def test_parameter_without_grad_is_skipped():
    a, b = npnn.Parameter(np.ones(3, np.float32)), npnn.Parameter(np.ones(3, np.float32))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = np.ones(3, np.float32)
    opt.step()
    assert np.all(a.data < 1) and np.all(b.data == 1)
    assert id(b) not in opt.state and opt.state[id(a)]["step"] == 1


def test_zero_grad_none_and_in_place():
    p = npnn.Parameter(np.ones(3, np.float32))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.ones(3, np.float32)
    buf = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is buf and np.all(buf == 0)
    opt.zero_grad()
    assert p.grad is None


def test_param_groups_have_their_own_hyperparameters():
    a, b = npnn.Parameter(np.zeros(2, np.float32)), npnn.Parameter(np.zeros(2, np.float32))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad = np.ones(2, np.float32)
    b.grad = np.ones(2, np.float32)
    opt.step()
    np.testing.assert_allclose(a.data, -0.1)
    np.testing.assert_allclose(b.data, -1.0)
    opt.param_groups[0]["lr"] = 0.5  # a scheduler's way to change the rate
    opt.step()
    np.testing.assert_allclose(a.data, -0.6)


def test_state_dict_resumes_identically():
    def run(split):
        params = make_params()
        opt = optim.Adam(params, lr=0.01)
        for t in range(STEPS):
            if t == split:
                saved = opt.state_dict()
                params2 = make_params()
                for p2, p in zip(params2, params):
                    p2.data[...] = p.data
                opt = optim.Adam(params2, lr=0.5)  # lr restored from the state dict
                opt.load_state_dict(saved)
                params = params2
            for p, g in zip(params, grads_for(t)):
                p.grad = g
            opt.step()
        return [p.data for p in params]

    np.testing.assert_array_equal(
        np.concatenate([a.ravel() for a in run(3)]), np.concatenate([a.ravel() for a in run(-1)])
    )


def test_adam_fits_a_linear_regression():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3)).astype(np.float32)
    y = x @ np.array([1.5, -2.0, 0.5], np.float32) + 0.3
    w = npnn.Parameter(np.zeros(3, np.float32))
    b = npnn.Parameter(np.zeros((), np.float32))
    opt = optim.Adam([w, b], lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss = npnn.functional.mse_loss(npnn.Tensor(x) @ w + b, y)
        loss.backward()
        opt.step()
    np.testing.assert_allclose(w.data, [1.5, -2.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(b.data, 0.3, atol=1e-3)


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda ps: optim.SGD(ps, lr=-0.1), "lr"),
        (lambda ps: optim.SGD(ps, lr=0.1, momentum=-1), "momentum"),
        (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "nesterov"),
        (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=-1), "weight_decay"),
        (lambda ps: optim.Adam(ps, lr=float("nan")), "lr"),
        (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), "betas[0]"),
        (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), "betas[1]"),
        (lambda ps: optim.Adam(ps, betas=(0.9,)), "betas"),
        (lambda ps: optim.Adam(ps, eps=-1e-8), "eps"),
        (lambda ps: optim.AdamW(ps, weight_decay=-1), "weight_decay"),
        (lambda ps: optim.RMSprop(ps, alpha=1.5), "alpha"),
        (lambda ps: optim.RMSprop(ps, momentum=-0.5), "momentum"),
        (lambda ps: optim.SGD([], lr=0.1), "params"),
        (lambda ps: optim.SGD([{"params": ps, "momentun": 0.9}], lr=0.1), "param_group"),
    ],
)
def test_bad_hyperparameters_name_the_argument(make, arg):
    with pytest.raises(ValueError) as e:
        make(make_params())
    assert str(e.value).startswith(arg + ":"), str(e.value)


def test_non_parameters_are_rejected():
    with pytest.raises(TypeError, match="params"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="params"):
        optim.SGD(npnn.Parameter(np.zeros(3, np.float32)), lr=0.1)


def test_step_counts_and_bias_correction_scalars_are_python_floats():
    # No float64 creeps in through NumPy scalars: a float32 update stays bit-for-bit float32.
    p = npnn.Parameter(np.ones(4, np.float32))
    opt = optim.Adam([p], lr=0.1)
    for _ in range(3):
        p.grad = np.full(4, 0.5, np.float32)
        opt.step()
    assert isinstance(opt.state[id(p)]["step"], int)
    assert p.data.dtype == np.float32
    assert math.isclose(float(p.data[0]), 1 - 0.3, rel_tol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.1, amsgrad=True),
        lambda ps: optim.AdamW(ps, lr=0.01),
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    ],
)
def test_two_thread_split_is_bit_identical(make, monkeypatch):
    # Large parameters are updated in two halves by two threads: elementwise, so no rounding changes.
    def run(threads):
        monkeypatch.setattr(parallel, "NUM_THREADS", threads)
        rng = np.random.default_rng(0)
        big = npnn.Parameter(rng.standard_normal((301, 300)).astype(np.float32))  # above the split size
        small = npnn.Parameter(rng.standard_normal(5).astype(np.float32))
        opt = make([big, small])
        for _ in range(3):
            big.grad = rng.standard_normal(big.shape).astype(np.float32)
            small.grad = rng.standard_normal(small.shape).astype(np.float32)
            opt.step()
        return big.data, small.data

    (b1, s1), (b2, s2) = run(1), run(2)
    assert b1.size >= parallel.MIN_SPLIT and b1.dtype == np.float32
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(s1, s2)


def test_forked_child_gets_its_own_thread_pool():
    # A child forked after a threaded step inherits the pool object but not its thread.
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method on this platform")
    p = npnn.Parameter(np.ones((300, 300), np.float32))
    opt = optim.SGD([p], lr=0.5)
    p.grad = np.ones_like(p.data)
    opt.step()  # creates the pool in this process
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(opt, p, queue))
    child.start()
    try:
        result = queue.get(timeout=60)
    finally:
        child.join(timeout=5)
        if child.is_alive():  # hung on the parent's dead pool: do not leave it behind
            child.kill()
    assert result == 0.0  # 1 - 0.5 - 0.5, done in the child with its own pool


def _child_step(opt, p, queue):
    p.grad = np.ones_like(p.data)
    opt.step()
    queue.put(float(p.data.max()))


def test_small_params_fused_path_is_bit_identical_to_per_parameter_path():
    rng = np.random.default_rng(3)
    shapes = [(2, 2), (2,), (2, 1), (1,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    fused = [npnn.Parameter(a.copy()) for a in init]
    plain = [npnn.Parameter(a.copy()) for a in init]
    opt_f, opt_p = optim.Adam(fused, lr=0.05), optim.Adam(plain, lr=0.05)
    for step in range(50):
        for pf, pp in zip(fused, plain):
            pf.grad = rng.standard_normal(pf.data.shape).astype(np.float32)
            pp.grad = pf.grad.copy()
        if step == 20:  # a state restored mid-run moves into the flat buffers
            opt_f.load_state_dict(opt_f.state_dict())
        opt_f.step()
        opt_p._step_groups(opt_p.param_groups)  # the per-parameter kernel
        assert opt_f._plans[id(opt_f.param_groups[0])].state is opt_f.state  # the fused path ran
    for pf, pp in zip(fused, plain):
        assert pf.data.dtype == np.float32
        np.testing.assert_array_equal(pf.data, pp.data)
        np.testing.assert_array_equal(opt_f.state[id(pf)]["s"], opt_p.state[id(pp)]["s"])


def _fresh_python(code: str, env_update: dict) -> str:
    """Run code in a fresh interpreter (OPENBLAS_THREAD_TIMEOUT unset unless given); its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update(env_update)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    "first, env, expected",
    [
        ("import npnn", {}, "16"),  # npnn sets the short spin before NumPy loads OpenBLAS
        ("import npnn", {"OPENBLAS_THREAD_TIMEOUT": "20"}, "20"),  # the user's value wins
        ("import numpy, npnn", {}, "None"),  # too late once NumPy is loaded: left alone
    ],
)
def test_openblas_thread_timeout_is_set_only_before_numpy(first, env, expected):
    code = f"{first}; import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    assert _fresh_python(code, env) == expected


def test_openblas_threads_stop_spinning_after_a_product():
    # The point of the setting: after a matrix product OpenBLAS's idle threads no longer burn a
    # core for ~0.1 s (which made Adam's second thread useless on 2 cores). CPU time used
    # while the main thread sleeps: ~0.13 s with OpenBLAS's default, ~0 with npnn's.
    code = """
import npnn, numpy as np, time
a = np.ones((400, 400), np.float32)
for _ in range(3):
    a @ a
c = time.process_time()
time.sleep(0.3)
print(time.process_time() - c)
"""
    spun = float(_fresh_python(code, {"OPENBLAS_NUM_THREADS": "2"}))
    assert spun < 0.05
