"""Compiling a kernel twice: a serial and a parallel dispatcher from one Python function.

Numba's on-disk cache is keyed by the function's qualified name and source position, not by the
``parallel`` flag, so ``njit(cache=True)(f)`` and ``njit(cache=True, parallel=True)(f)`` would
share one cache entry and one build could silently serve both.  The parallel twin is therefore
compiled from a copy of ``f`` renamed ``<name>_parallel``: same bytecode, its own cache entry.
In the serial build ``prange`` is plain ``range``; tests assert both give the same bits.
"""

import types

from numba import njit


def renamed(fn, suffix: str):
    """A copy of plain function ``fn`` whose name (and Numba cache entry) ends in ``suffix``."""
    name = fn.__name__ + suffix
    code = fn.__code__.replace(co_name=name, co_qualname=fn.__qualname__ + suffix)
    copy = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    return copy


def serial_and_parallel(fn):
    """``(serial, parallel)`` cached, nogil Numba dispatchers of ``fn`` (no fast-math flags: integer semantics are exact)."""
    serial = njit(cache=True, nogil=True)(fn)
    parallel = njit(cache=True, nogil=True, parallel=True)(renamed(fn, "_parallel"))
    return serial, parallel
