"""shared.jit: numba kernels created on first call behave as `numba.njit` ones, including a kernel
that calls another one before that one was ever called."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from shared.jit import LazyKernel, njit


@njit(nogil=True)
def _double(x):
    return x * 2


@njit(nogil=True)
def _double_plus_one(a):
    out = np.empty_like(a)
    for i in range(a.shape[0]):
        out[i] = _double(a[i]) + 1
    return out


def test_a_kernel_calling_a_lazy_kernel_compiles_and_runs():
    assert isinstance(globals()["_double"], LazyKernel)  # nothing compiled or imported yet
    np.testing.assert_array_equal(_double_plus_one(np.arange(4)), [1, 3, 5, 7])
    # the first call replaced both names here by numba's dispatchers
    import numba

    for name in ("_double", "_double_plus_one"):
        assert isinstance(globals()[name], numba.core.registry.CPUDispatcher), name


def test_importing_kernel_modules_does_not_import_numba():
    code = ("import sys; import shared.geometry, shared.shard_schema; "
            "print('numba' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
