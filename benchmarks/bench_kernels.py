"""Kernel throughput at Conv-TasNet shapes, serial and parallel, plus JIT compile time apart.

Run:  pytest benchmarks/ --benchmark-only        (see benchmarks/README.md)

Throughput cases (one call = one kernel invocation on preallocated buffers, tflm int8 path):

    conv1d 1x1 128->512        x[1,128,4000]  bottleneck -> hidden 1x1 conv     262.1 MMAC
    conv1d 1x1 512->128        x[1,512,4000]  hidden -> residual/skip 1x1 conv  262.1 MMAC
    depthwise k3 d64 512ch     x[1,512,4000]  depthwise conv, dilation 64, "same"   6.1 MMAC
    conv_transpose1d 512->1    x[1,512,4000]  decoder, kernel 16, stride 8       32.8 MMAC
    linear 4000x128->512       x[4000,128]    fully connected                   262.1 MMAC

Each case calls the kernel itself (``intsim.kernels.conv.conv1d``, ``conv_transpose1d``,
``intsim.kernels.matmul.linear`` and their ``_parallel`` twins) on buffers allocated once, random
int8 codes, input zero point 5, per-channel tflm requantization.  A case whose kernel does not
exist is skipped with that reason.

JIT compile time: ``python benchmarks/bench_kernels.py --probe CASE VARIANT`` runs in a fresh
process with ``NUMBA_CACHE_DIR`` pointing at a temporary directory; it times the kernel's first call
on a tiny input and records the time Numba spends holding its compiler lock (compiling the kernel
and its helpers, or loading them from the cache).  The first probe runs with an empty cache
(compile), a second in another process with the cache it wrote (cache load).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

T = 4000  # frames: 4 s at 8 kHz after Conv-TasNet's stride-8 encoder
SMALL_T = 64  # input length for compile probes (types, not sizes, decide what is compiled)


class Unavailable(Exception):
    """The kernel or op for a case does not exist (yet) or rejects every candidate layout."""


def _rq(c_out, fan_in, out_zp=-3):
    """Per-channel tflm int8 requantization putting outputs at about 30 codes rms (few saturate)."""
    from intsim.fixedpoint import quantize_multiplier
    from intsim.kernels.fixedpoint import requant_params
    from intsim.profile import PROFILES

    path = PROFILES["tflm"].int8
    real = 30.0 / (np.sqrt(fan_in) * 74.0 * 74.0)  # random int8 codes have rms about 74
    m, s = quantize_multiplier(real)
    return requant_params(np.full(c_out, m), np.full(c_out, s), np.full(c_out, real, np.float32), path.rounding_code,
                          path.mult_bits, path.acc_bits, path.acc_saturating, out_zp, -128, 127)


# --- cases: each builds (kernel, args, MACs per call, shape) for one kernel call --------------------

def _kernel(module, name, variant):
    """``intsim.kernels.<module>.<name>`` (or its ``_parallel`` twin); Unavailable if not written yet."""
    full = f"{name}_parallel" if variant == "parallel" else name
    try:
        mod = importlib.import_module(f"intsim.kernels.{module}")
    except ModuleNotFoundError:
        raise Unavailable(f"intsim.kernels.{module} is not written yet") from None
    if not hasattr(mod, full):
        raise Unavailable(f"intsim.kernels.{module}.{full} is not written yet")
    return getattr(mod, full)


def _operands(shape_x, shape_w, c_out):
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, shape_x, dtype=np.int8)
    w = rng.integers(-127, 128, shape_w, dtype=np.int8)
    bias = rng.integers(-5000, 5000, c_out).astype(np.int32)
    return x, w, bias, np.zeros(c_out, np.int64), np.zeros(c_out, np.int64)


def _conv1d_case(c_in, c_out, k, dilation, groups, pad):
    def build(variant, t):
        from intsim.kernels.conv import conv1d_output_length

        kernel = _kernel("conv", "conv1d", variant)
        x, w, bias, ovf, sat = _operands((1, c_in, t), (c_out, c_in // groups, k), c_out)
        t_out = conv1d_output_length(t, k, 1, pad[0], pad[1], dilation)
        out = np.empty((1, c_out, t_out), np.int8)
        args = (x, 5, w, bias, 1, pad[0], dilation, groups, _rq(c_out, c_in // groups * k), out, ovf, sat)
        return kernel, args, t_out * c_out * (c_in // groups) * k, f"x[1,{c_in},{t}] w[{c_out},{c_in // groups},{k}]"

    return build


def _conv_transpose1d_case(c_in, c_out, k, stride):
    def build(variant, t):
        kernel = _kernel("conv", "conv_transpose1d", variant)
        from intsim.kernels.conv import conv_transpose_output_length

        x, w, bias, ovf, sat = _operands((1, c_in, t), (c_in, c_out, k), c_out)
        out = np.empty((1, c_out, conv_transpose_output_length(t, k, stride, 0, 0, 1)), np.int8)
        args = (x, 5, w, bias, stride, 0, 1, 1, _rq(c_out, c_in * k // stride), out, ovf, sat)
        return kernel, args, t * c_in * c_out * k, f"x[1,{c_in},{t}] w[{c_in},{c_out},{k}] s{stride}"

    return build


def _linear_case(k_in, n_out):
    def build(variant, t):
        kernel = _kernel("matmul", "linear", variant)
        x, w, bias, ovf, sat = _operands((t, k_in), (n_out, k_in), n_out)
        out = np.empty((t, n_out), np.int8)
        return kernel, (x, 5, w, bias, _rq(n_out, k_in), out, ovf, sat), t * k_in * n_out, f"x[{t},{k_in}] w[{n_out},{k_in}]"

    return build


#: case -> builder(variant, t).  t = frames (rows for linear).
CASES = {
    "conv1d 1x1 128->512": _conv1d_case(128, 512, 1, 1, 1, (0, 0)),
    "conv1d 1x1 512->128": _conv1d_case(512, 128, 1, 1, 1, (0, 0)),
    "depthwise k3 d64 512ch": _conv1d_case(512, 512, 3, 64, 512, (64, 64)),
    "conv_transpose1d 512->1 k16 s8": _conv_transpose1d_case(512, 1, 16, 8),
    "linear 4000x128->512": _linear_case(128, 512),
}


def make_call(case, variant, t=T):
    """(kernel, args, MACs per call, shape description) for one case; raises Unavailable."""
    return CASES[case](variant, t)


def slug(case):
    return case.replace(" ", "_").replace("->", "to")


# --- benchmarks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["serial", "parallel"])
@pytest.mark.parametrize("case", list(CASES), ids=slug)
def test_throughput(throughput, case, variant):
    try:
        fn, args, macs, shape = make_call(case, variant)
    except Unavailable as e:
        pytest.skip(str(e))
    throughput(fn, *args, macs=macs, case=case, variant=variant, shape=shape)


#: kernel -> a case that exercises it (compiled code depends on argument types, not shapes)
COMPILE_CASES = {"conv1d": "conv1d 1x1 128->512", "conv_transpose1d": "conv_transpose1d 512->1 k16 s8",
                 "linear": "linear 4000x128->512"}


def probe_in_fresh_process(case, variant, cache_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    done = subprocess.run([sys.executable, __file__, "--probe", case, variant], env=env, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"compile probe for {case!r} ({variant}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("variant", ["serial", "parallel"])
@pytest.mark.parametrize("kernel", COMPILE_CASES)
def test_jit_compile(compile_time, kernel, variant, tmp_path):
    case = COMPILE_CASES[kernel]
    try:
        make_call(case, variant, SMALL_T)
    except Unavailable as e:
        pytest.skip(str(e))
    cache = str(tmp_path / "numba-cache")

    def cold():
        t0 = time.perf_counter()
        r = probe_in_fresh_process(case, variant, cache)
        return {"compile_s": r["jit_s"], "first_call_s": r["first_call_s"], "import_s": r["import_s"],
                "process_s": time.perf_counter() - t0}

    def warm():
        return {"cache_load_s": probe_in_fresh_process(case, variant, cache)["jit_s"]}

    compile_time(cold, warm, kernel=kernel, variant=variant)


def _probe(case, variant):
    """Body of the fresh process: import, first call (timed, JIT measured), second call."""
    t0 = time.perf_counter()
    from numba.core import event

    import intsim  # noqa: F401

    import_s = time.perf_counter() - t0
    fn, args, _, _ = make_call(case, variant, SMALL_T)
    jit = []
    with event.install_timer("numba:compiler_lock", jit.append):
        t1 = time.perf_counter()
        fn(*args)
        first = time.perf_counter() - t1
    t1 = time.perf_counter()
    fn(*args)
    second = time.perf_counter() - t1
    print(json.dumps({"jit_s": sum(jit), "first_call_s": first, "second_call_s": second, "import_s": import_s}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        _probe(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python benchmarks/bench_kernels.py --probe CASE VARIANT  (benchmarks: pytest benchmarks/)")
