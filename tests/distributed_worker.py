"""Run by test_distributed.py, alone or under mpiexec: python -m npnn.mnist with test hooks.

Hooks (environment): NPNN_TEST_SHA256, a JSON {file: sha256} for the fake MNIST files;
NPNN_TEST_NO_DROPOUT=1, models without dropout; NPNN_TEST_FAIL="rank:call", that rank raises
RuntimeError in that call of cross_entropy. --save PATH writes PATH.<epoch> each epoch.
`reference ROOT SEED OUT` instead writes the first step of two ranks computed in one process.
"""

import functools
import json
import os
import sys

import numpy as np

import npnn
from npnn import distributed, mnist, optim
from npnn.datasets import mnist as data
from npnn.tensor import Tensor


def reference(root: str, seed: int, out: str) -> int:
    """The first step of a 2-rank job without MPI: the halves' gradients, each weighted 50/100,
    summed in rank order (what MPI_SUM over two ranks computes), then the same Adam step."""
    npnn.manual_seed(seed)
    d = data.load_mnist(root, download=False, progress=False)
    model = mnist.MLP(drop=0.0)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=1e-3)
    idx = np.random.default_rng([seed, 0]).permutation(100)  # npnn.mnist's shuffle of epoch 0
    total = None
    for r in range(2):
        share = distributed.shard(idx, r, 2)
        opt.zero_grad()
        mnist.F.cross_entropy(model(Tensor(d.train_images[share])), d.train_labels[share]).backward()
        grads = [p.grad * np.float32(0.5) for p in params]
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
    for p, g in zip(params, total):
        p.grad = g
    opt.step()
    np.savez(out, **{f"model/{k}": v for k, v in model.state_dict().items()})
    return 0


def main(argv: list) -> int:
    data.SHA256.update(json.loads(os.environ.get("NPNN_TEST_SHA256", "{}")))
    if argv[0] == "reference":
        return reference(argv[1], int(argv[2]), argv[3])
    if os.environ.get("NPNN_TEST_NO_DROPOUT"):
        mnist.MODELS = {k: functools.partial(v, drop=0.0) for k, v in mnist.MODELS.items()}
    save = mnist.save_checkpoint
    mnist.save_checkpoint = lambda path, *a: save(f"{path}.{a[-1]['epoch']}", *a)
    if os.environ.get("NPNN_TEST_FAIL"):
        fail_rank, fail_call = map(int, os.environ["NPNN_TEST_FAIL"].split(":"))
        loss, calls = mnist.F.cross_entropy, [0]

        def failing(*args, **kwargs):
            calls[0] += 1
            if distributed.rank() == fail_rank and calls[0] == fail_call:
                raise RuntimeError(f"injected failure in call {fail_call}")
            return loss(*args, **kwargs)

        mnist.F.cross_entropy = failing  # npnn.functional's: the training loop calls it
    return mnist.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
