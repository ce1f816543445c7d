"""npnn.parallel: ops split over two threads give the bits one thread gives."""

import threading

import numpy as np
import pytest

import npnn
from npnn import functional as F
from npnn import optim, parallel
from npnn.mnist import MODELS


def bits(a) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def forward_backward(fn, shapes, seed):
    """fn's output and the gradients of every input, for a fixed random upstream gradient."""
    rng = np.random.default_rng(seed)
    xs = [npnn.Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in shapes]
    out = fn(*xs)
    g = rng.standard_normal(out.shape).astype(np.float32)
    (out * npnn.Tensor(g)).sum().backward()
    return [out.data] + [x.grad for x in xs]


CASES = {
    "relu": (npnn.relu, [(9, 16, 24, 24)]),
    "max_pool2d 2x2": (lambda x: F.max_pool2d(x, 2), [(9, 16, 24, 24)]),
    "max_pool2d 2x2, odd size": (lambda x: F.max_pool2d(x, 2), [(7, 16, 25, 27)]),
    "conv2d 3x3 same": (lambda x, w, b: F.conv2d(x, w, b, padding=1), [(9, 16, 24, 24), (24, 16, 3, 3), (24,)]),
    "conv2d 3x3 stride 2": (
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
        [(9, 16, 24, 24), (24, 16, 3, 3), (24,)],
    ),
    "conv2d few rows": (lambda x, w, b: F.conv2d(x, w, b, padding=1), [(9, 1, 28, 28), (32, 1, 3, 3), (32,)]),
    "conv2d 5x5 same, no bias": (lambda x, w: F.conv2d(x, w, padding=2), [(5, 8, 30, 30), (12, 8, 5, 5)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_on_two_threads_is_bit_identical(case, monkeypatch):
    fn, shapes = CASES[case]
    monkeypatch.setattr(parallel, "MIN_SPLIT", 1)  # every split runs, whatever its size
    results = {}
    for threads in (1, 2):
        monkeypatch.setattr(parallel, "NUM_THREADS", threads)
        results[threads] = forward_backward(fn, shapes, seed=len(case))
    for one, two in zip(results[1], results[2]):
        assert one.shape == two.shape and one.dtype == two.dtype and bits(one) == bits(two)
    assert np.abs(results[2][1]).sum() > 0


def test_cnn_training_steps_on_two_threads_are_bit_identical(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.random((20, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 20)
    params = {}
    for threads in (1, 2):
        monkeypatch.setattr(parallel, "NUM_THREADS", threads)
        npnn.manual_seed(3)
        model = MODELS["cnn"]()
        opt = optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(3):
            loss = F.cross_entropy(model(npnn.Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        params[threads] = [p.data.copy() for p in model.parameters()]
    assert all(bits(a) == bits(b) for a, b in zip(params[1], params[2]))


def test_omp_num_threads_caps_the_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel._threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert parallel._threads() == min(2, len(parallel.os.sched_getaffinity(0)))


def test_a_split_inside_a_half_runs_inline_instead_of_waiting_for_itself(monkeypatch):
    monkeypatch.setattr(parallel, "NUM_THREADS", 2)
    monkeypatch.setattr(parallel, "MIN_SPLIT", 1)
    done = []

    def outer(first, stop):
        parallel.rows(lambda a, b: done.append((first, a, b)), 4, 4)  # nested: the worker's half too

    runner = threading.Thread(target=parallel.rows, args=(outer, 2, 2), daemon=True)
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive(), "the nested split deadlocked"
    assert sorted(done) == [(0, 0, 2), (0, 2, 4), (1, 0, 2), (1, 2, 4)]
