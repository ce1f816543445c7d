"""npnn.parallel: ops split over two threads give the bits one thread gives."""

import contextlib
import math
import threading

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis_settings import examples

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


# -- differential: hypothesis arrays around the split sizes, two threads vs one ------------------
# The split sizes are parameters (parallel.MIN_SPLIT, the max-pool chunk, conv2d's per-image
# limit, Adam's fused size), drawn around the drawn arrays' sizes so that small inputs reach
# every boundary. np.empty is filled with a byte pattern meanwhile: an element no half writes
# shows up instead of reading stale memory that may hold the right bits.


@contextlib.contextmanager
def poisoned_empty():
    """np.empty and np.empty_like fill their arrays with 0xA5 bytes while the block runs."""

    def poisoned(make):
        def empty(*args, **kwargs):
            a = make(*args, **kwargs)
            if a.flags.c_contiguous and a.dtype != object:
                a.reshape(-1).view(np.uint8).fill(0xA5)
            return a

        return empty

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(np, "empty", poisoned(np.empty))
        mp.setattr(np, "empty_like", poisoned(np.empty_like))
        yield


@st.composite
def parallel_cases(draw) -> dict:
    """An op (or an optimizer step), its input shapes and the split sizes to run it with."""
    kind = draw(st.sampled_from(("relu", "max_pool2d 2x2", "conv2d", "optimizer")))
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    h, w = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    case = {"kind": kind, "seed": draw(st.integers(0, 2**16)), "shapes": [(n, c, h, w)]}
    if kind == "relu" and draw(st.booleans()):
        case["shapes"] = [(n, c * h)]
    if kind == "conv2d":
        k, o = draw(st.integers(1, min(h, w, 3))), draw(st.integers(1, 4))
        case["stride"], case["padding"] = draw(st.integers(1, 2)), draw(st.integers(0, k // 2))
        case["shapes"] += [(o, c, k, k)] + ([(o,)] if draw(st.booleans()) else [])  # with or without a bias
    if kind == "optimizer":
        case["shapes"] = [(draw(st.integers(1, 40)),) for _ in range(draw(st.integers(1, 3)))]
        case["adam"] = draw(st.booleans())
    size = max(math.prod(s) for s in case["shapes"])
    case["min_split"] = draw(st.one_of(st.sampled_from((1, 2, size - 1, size, size + 1)), st.integers(1, 3 * size)))
    case["pool_chunk"] = draw(st.integers(1, 3 * c * h * w))  # images per max-pool chunk: 1 to all
    case["few_rows"] = draw(st.sampled_from((0, 32)))  # conv2d: one big product, or image by image
    return case


def run_case(case: dict) -> list:
    """The arrays the case computes: the op's output and input gradients, or the parameters and
    optimizer state after three steps."""
    rng = np.random.default_rng(case["seed"])
    if case["kind"] == "optimizer":
        params = [npnn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in case["shapes"]]
        opt = optim.Adam(params, lr=0.01) if case["adam"] else optim.SGD(params, lr=0.1, momentum=0.9)
        for _ in range(3):
            for p in params:
                p.grad = rng.standard_normal(p.shape).astype(np.float32)
            opt.step()
        return [p.data for p in params] + [
            a for s in opt.state.values() for a in s.values() if isinstance(a, np.ndarray)
        ]
    fn = {
        "relu": npnn.relu,
        "max_pool2d 2x2": lambda x: F.max_pool2d(x, 2),
        "conv2d": lambda x, *wb: F.conv2d(x, *wb, stride=case.get("stride"), padding=case.get("padding")),
    }[case["kind"]]
    return forward_backward(fn, case["shapes"], case["seed"])


def compare_threads(case: dict) -> None:
    """The case on one thread and on two, with its split sizes: the same bits."""
    results = {}
    with pytest.MonkeyPatch.context() as mp, poisoned_empty(), np.errstate(all="ignore"):
        mp.setattr(parallel, "MIN_SPLIT", case["min_split"])
        mp.setattr(F, "_POOL_CHUNK", case["pool_chunk"])
        mp.setattr(F, "_FEW_ROWS", case["few_rows"])
        mp.setattr(optim, "_FUSE_MAX", 0)  # every parameter through the per-parameter (split) update
        for threads in (1, 2):
            mp.setattr(parallel, "NUM_THREADS", threads)
            results[threads] = run_case(case)
    assert len(results[1]) == len(results[2])
    for one, two in zip(results[1], results[2]):
        assert one.shape == two.shape and one.dtype == two.dtype and bits(one) == bits(two), (
            f"two threads differ: {case}"
        )


@settings(max_examples=examples(60), deadline=None)
@given(parallel_cases())
def test_random_arrays_around_the_split_sizes_give_one_threads_bits(case):
    compare_threads(case)


def test_the_differential_catches_a_split_that_leaves_a_row_unwritten(monkeypatch):
    def rows(fn, n: int, size: int) -> None:  # the second half stops one row short
        if not parallel.worth(n, size):
            fn(0, n)
            return
        fn(0, n // 2)
        fn(n // 2, n - 1)

    monkeypatch.setattr(parallel, "rows", rows)
    search = settings(
        max_examples=examples(200), deadline=None, phases=[Phase.generate], database=None, derandomize=True
    )
    with pytest.raises(AssertionError, match="two threads differ"):
        search(given(parallel_cases())(compare_threads))()
