"""Every parallel kernel is a twin of its serial kernel with its own Numba cache entry."""

import importlib

import pytest

MODULES = ["conv", "matmul", "norm", "elementwise", "table", "framing", "fqss"]


def _pairs():
    for name in MODULES:
        module = importlib.import_module(f"intsim.kernels.{name}")
        for attr in dir(module):
            if attr.endswith("_parallel") and hasattr(module, attr[: -len("_parallel")]):
                yield f"{name}.{attr[:-9]}", getattr(module, attr[:-9]), getattr(module, attr)


PAIRS = list(_pairs())


def test_every_module_has_twins():
    assert {p[0].split(".")[0] for p in PAIRS} == set(MODULES)


@pytest.mark.parametrize("name, serial, parallel", PAIRS, ids=[p[0] for p in PAIRS])
def test_twin_has_own_cache_entry(name, serial, parallel):
    # Numba's disk cache is keyed by qualname and source line, not by parallel=True.
    assert serial.py_func.__qualname__ != parallel.py_func.__qualname__
    assert not serial.targetoptions.get("parallel")
    if parallel.targetoptions.get("parallel"):
        # compiled from the same loop: identical bytecode
        assert serial.py_func.__code__.co_code == parallel.py_func.__code__.co_code
    else:
        # a serial driver around parallel inner loops (conv1d, conv_transpose1d)
        assert parallel.py_func.__name__.endswith("_parallel")
