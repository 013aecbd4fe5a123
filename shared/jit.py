"""numba kernels that cost nothing until they are first called.

`@njit(cache=True, nogil=True)` here takes the same options as `numba.njit`, but importing numba
(0.4 s) and creating the dispatcher wait for the kernel's first call. A module full of kernels
(SLIC, geometry, copy-paste, the shard schema) can then be imported for its dataclasses and
constants -- which every command does to build its `--help` -- without loading numba
(docs/design.md#command-line).

On the first call of any lazy kernel, every lazy kernel named in that module's globals (its own
and those it imported) is replaced there by its real numba dispatcher, so kernels that call
other kernels compile exactly as under `numba.njit`, and later calls from inside the module skip
this wrapper. Compiled code, the on-disk cache and the results are numba's own.
"""
from __future__ import annotations

import functools
from typing import Any, Callable


class LazyKernel:
    """A Python function that becomes `numba.njit(**options)(fn)` on first use."""

    def __init__(self, fn: Callable, options: dict[str, Any]):
        functools.update_wrapper(self, fn)
        self.py_func = fn
        self.options = options
        self._dispatcher: Any = None

    def dispatcher(self) -> Any:
        if self._dispatcher is None:
            import numba

            self._dispatcher = numba.njit(**self.options)(self.py_func)
            # numba resolves the kernels this one calls from its module's globals when it compiles:
            # they must be dispatchers by then, not wrappers
            module_globals = self.py_func.__globals__
            for name, value in list(module_globals.items()):
                if isinstance(value, LazyKernel):
                    module_globals[name] = value.dispatcher()
        return self._dispatcher

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.dispatcher()(*args, **kwargs)


def njit(**options: Any) -> Callable[[Callable], LazyKernel]:
    """Decorator: `numba.njit(**options)`, created on the kernel's first call."""

    def decorate(fn: Callable) -> LazyKernel:
        return LazyKernel(fn, options)

    return decorate
