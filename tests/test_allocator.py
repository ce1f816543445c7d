"""npnn.allocator: freed activation-sized arrays are reused from the heap, not faulted in anew."""

import resource
import sys

import numpy as np
import pytest

import npnn  # noqa: F401 (its import applies the setting)
from npnn import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_second_step_sized_array_takes_no_new_page_faults():
    if not allocator.keep_freed_memory():
        pytest.skip("not glibc, or MALLOC_* thresholds set in the environment")
    shape = (100, 32, 28, 28)  # MNIST conv1's activation, 10 MB
    a = np.ones(shape, np.float32)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.ones(shape, np.float32)  # written in full: fresh pages would fault 2,500 times
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert b.sum() == b.size
    assert faults < 100, f"{faults} page faults for a reused 10 MB array"


def test_user_thresholds_are_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert allocator.keep_freed_memory() is False
