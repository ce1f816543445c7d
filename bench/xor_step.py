"""The XOR training loop alone (10,001 steps, Adam lr 0.01): npnn eager, npnn plan, JAX's jit; same run.

npnn: the lab's forward, backward and Adam step, eager, as bench/xor_lab.py's training-alone
child, and the same step as an `npnn.plan` (recorded once, replayed; bit-identical). JAX
(optional, the bench extra): the same network and PyTorch's Adam rule as one jit-compiled
step called from a Python loop (the usual JAX training loop), and, for context, the whole
loop compiled into one `lax.fori_loop`. Compile time is reported apart (the first
call). Repeats alternate the programs; medians of wall and of CPU time (process_time: all the
process's threads; under load wall time also counts time waiting for a core). Also prints
npnn's per-phase split.

    python bench/xor_step.py [--steps 10001] [--repeats 5]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import npnn  # noqa: E402  (before NumPy's first use: npnn's OpenBLAS setting)
from npnn import init, optim, plan  # noqa: E402

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
Y = np.array([[0], [1], [1], [0]], np.float32)


def npnn_setup() -> tuple:
    """x, y, the four parameters (seed 777) and their Adam."""
    npnn.manual_seed(777)
    x, y = npnn.Tensor(X), npnn.Tensor(Y)
    W1, b1 = npnn.Parameter(init.normal([2, 2])), npnn.Parameter(init.normal([2]))
    W2, b2 = npnn.Parameter(init.normal([2, 1])), npnn.Parameter(init.normal([1]))
    return x, y, W1, b1, W2, b2, optim.Adam([W1, b1, W2, b2], lr=0.01)


def npnn_forward(x, y, W1, b1, W2, b2) -> tuple:
    """The lab's hypothesis and cross-entropy cost."""
    h = npnn.sigmoid(npnn.sigmoid(x @ W1 + b1) @ W2 + b2)
    return h, -(y * npnn.log(h) + (1 - y) * npnn.log(1 - h)).mean()


def npnn_loop(steps: int) -> tuple:
    """(seconds, 0 compile seconds, final cost, CPU seconds) of npnn's eager loop."""
    x, y, W1, b1, W2, b2, opt = npnn_setup()
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        cost = npnn_forward(x, y, W1, b1, W2, b2)[1]
        opt.zero_grad()
        cost.backward()
        opt.step()
    return time.perf_counter() - t, 0.0, cost.item(), time.process_time() - cpu


def npnn_plan_loop(steps: int) -> tuple:
    """The same as npnn_loop for the loop as an npnn.plan (recorded on its first call)."""
    x, y, W1, b1, W2, b2, opt = npnn_setup()

    def loss_fn(x, y):
        return npnn_forward(x, y, W1, b1, W2, b2)[1]

    step = plan.compile(loss_fn, opt)
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        cost = step(x, y)
    assert step.replaying and step.program is not None, step.refused or step.unbuffered
    return time.perf_counter() - t, 0.0, cost.item(), time.process_time() - cpu


def npnn_phases(steps: int) -> dict:
    """Median microseconds per step of forward, backward and Adam (separately timed)."""
    x, y, W1, b1, W2, b2, opt = npnn_setup()
    clock = time.perf_counter
    f, b, s = [], [], []
    for _ in range(steps):
        t0 = clock()
        cost = npnn_forward(x, y, W1, b1, W2, b2)[1]
        t1 = clock()
        opt.zero_grad()
        cost.backward()
        t2 = clock()
        opt.step()
        t3 = clock()
        f.append(t1 - t0)
        b.append(t2 - t1)
        s.append(t3 - t2)
    return {k: statistics.median(v) * 1e6 for k, v in (("forward", f), ("backward", b), ("adam", s))}


def jax_programs():
    """(jit step loop, fori_loop, version); each runner returns (seconds, compile s, final cost, CPU s)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_platforms", "cpu")
    x, y = jnp.asarray(X), jnp.asarray(Y)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8

    def cost_fn(p):
        h = jax.nn.sigmoid(jax.nn.sigmoid(x @ p[0] + p[1]) @ p[2] + p[3])
        return -jnp.mean(y * jnp.log(h) + (1 - y) * jnp.log(1 - h))

    def step(p, m, v, t):
        cost, g = jax.value_and_grad(cost_fn)(p)
        t = t + 1
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        mhat = [mi / (1 - b1**t) for mi in m]
        vhat = [vi / (1 - b2**t) for vi in v]
        p = [pi - lr * mh / (jnp.sqrt(vh) + eps) for pi, mh, vh in zip(p, mhat, vhat)]
        return p, m, v, t, cost

    def start():
        rng = np.random.default_rng(777)
        p = [jnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in ((2, 2), (2,), (2, 1), (1,))]
        return p, [jnp.zeros_like(a) for a in p], [jnp.zeros_like(a) for a in p], jnp.float32(0)

    jstep = jax.jit(step)

    def loop(steps):
        p, m, v, t = start()
        c = time.perf_counter()
        p, m, v, t, cost = jstep(p, m, v, t)  # compiles (cached after the first repeat)
        cost.block_until_ready()
        compile_s = time.perf_counter() - c
        c, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps - 1):
            p, m, v, t, cost = jstep(p, m, v, t)
        cost.block_until_ready()
        return time.perf_counter() - c, compile_s, float(cost), time.process_time() - cpu

    @jax.jit
    def whole(p, m, v, t, steps):
        def body(_, s):
            return step(*s[:4])

        return jax.lax.fori_loop(0, steps, body, (p, m, v, t, jnp.float32(0)))

    def fori(steps):
        p, m, v, t = start()
        c = time.perf_counter()
        out = whole(p, m, v, t, 1)
        out[4].block_until_ready()
        compile_s = time.perf_counter() - c
        c, cpu = time.perf_counter(), time.process_time()
        out = whole(p, m, v, t, steps)
        out[4].block_until_ready()
        return time.perf_counter() - c, compile_s, float(out[4]), time.process_time() - cpu

    return loop, fori, jax.__version__


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=10001)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    programs = {"npnn eager": npnn_loop, "npnn plan (npnn.plan.compile)": npnn_plan_loop}
    jax_ = jax_programs()
    if jax_ is None:
        print("JAX is not installed (pip install -e .[bench]): npnn alone")
    else:
        programs["JAX jit step, Python loop"] = jax_[0]
        programs["JAX fori_loop (whole loop jit)"] = jax_[1]
    print(
        f"XOR loop, {args.steps} steps, medians of {args.repeats} alternating repeats; "
        f"load {os.getloadavg()[0]:.1f}" + ("" if jax_ is None else f"; jax {jax_[2]}")
    )
    runs = {name: [] for name in programs}
    for _ in range(args.repeats):
        for name, fn in programs.items():
            runs[name].append(fn(args.steps))
    base = statistics.median(r[0] for r in runs["npnn eager"])
    base_cpu = statistics.median(r[3] for r in runs["npnn eager"])
    for name, rs in runs.items():
        secs = statistics.median(r[0] for r in rs)
        comp = statistics.median(r[1] for r in rs)
        cpu = statistics.median(r[3] for r in rs)
        print(
            f"{name:32s} {secs:7.3f} s ({secs / args.steps * 1e6:6.1f} us/step, CPU {cpu / args.steps * 1e6:6.1f})  "
            f"compile {comp:5.2f} s  final cost {rs[-1][2]:.6f}  npnn / this: {base / secs:5.2f} "
            f"(CPU {base_cpu / cpu:5.2f})"
        )
    phases = npnn_phases(args.steps)
    print("npnn per step (median us): " + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))


if __name__ == "__main__":
    main()
