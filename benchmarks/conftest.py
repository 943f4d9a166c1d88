"""Kernel benchmark plumbing: GMAC/s bookkeeping and a summary table at the end of the run.

Benchmarks call the ``throughput`` fixture (steady-state GMAC/s of one kernel call) or the
``compile_time`` fixture (Numba JIT cost measured in fresh processes); both store their numbers
in ``benchmark.extra_info`` (so they land in ``--benchmark-json``) and here, and
``pytest_terminal_summary`` prints them as two tables after pytest-benchmark's own.
"""

from __future__ import annotations

import pytest

THROUGHPUT: list[dict] = []
COMPILE: list[dict] = []


def pytest_collect_file(file_path, parent):
    """Collect ``bench_*.py`` (pytest's default pattern is test_*.py) unless named on the command line."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture
def throughput(benchmark):
    """``measure(fn, *args, macs=, case=, variant=, shape=)``: warm up once, benchmark, record GMAC/s."""

    def measure(fn, *args, macs, case, variant, shape):
        fn(*args)  # JIT compile or cache load happens here, outside the timed rounds
        benchmark.group = case
        benchmark.extra_info.update({"case": case, "variant": variant, "shape": shape, "macs": macs})
        result = benchmark(fn, *args)
        stats = getattr(benchmark.stats, "stats", None) if benchmark.stats else None
        if stats is not None and stats.median > 0:
            row = {"case": case, "variant": variant, "shape": shape, "macs": macs, "median_s": stats.median,
                   "min_s": stats.min, "rounds": stats.rounds,
                   "gmacs_median": macs / stats.median / 1e9, "gmacs_best": macs / stats.min / 1e9}
            benchmark.extra_info.update({k: row[k] for k in ("gmacs_median", "gmacs_best")})
            THROUGHPUT.append(row)
        return result

    return measure


@pytest.fixture
def compile_time(benchmark):
    """``record(cold, warm, kernel=, variant=)``: benchmark ``cold()`` once (a fresh process with an
    empty cache), then call ``warm()`` untimed; both return dicts of numbers for the table."""

    def record(cold, warm, *, kernel, variant):
        benchmark.group = "jit-compile (fresh process, empty cache)"
        box = {}
        benchmark.pedantic(lambda: box.update(cold()), rounds=1, iterations=1)
        box.update(warm())
        row = {"kernel": kernel, "variant": variant, **box}
        benchmark.extra_info.update(row)
        COMPILE.append(row)
        return row

    return record


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def pytest_terminal_summary(terminalreporter):
    if not THROUGHPUT and not COMPILE:
        return
    import numba

    w = terminalreporter
    if THROUGHPUT:
        w.section("intsim kernel throughput")
        w.line(f"GMAC/s = MACs per call / time per call (median, and best round); numba threads: "
               f"{numba.get_num_threads()}; speedup = serial median / parallel median")
        w.line(f"{'case':<32} {'shape':<28} {'MMAC':>8} {'serial ms':>10} {'GMAC/s':>7} {'best':>6} "
               f"{'parallel ms':>12} {'GMAC/s':>7} {'best':>6} {'speedup':>8}")
        cases = {}
        for row in THROUGHPUT:
            cases.setdefault(row["case"], {})[row["variant"]] = row
        for case, variants in cases.items():
            s, p = variants.get("serial"), variants.get("parallel")
            any_row = s or p
            speedup = s["median_s"] / p["median_s"] if s and p else None
            w.line(f"{case:<32} {any_row['shape']:<28} {any_row['macs'] / 1e6:>8.1f} "
                   f"{_fmt(s and s['median_s'] * 1e3, '10.2f'):>10} {_fmt(s and s['gmacs_median'], '7.2f'):>7} "
                   f"{_fmt(s and s['gmacs_best'], '6.2f'):>6} "
                   f"{_fmt(p and p['median_s'] * 1e3, '12.2f'):>12} {_fmt(p and p['gmacs_median'], '7.2f'):>7} "
                   f"{_fmt(p and p['gmacs_best'], '6.2f'):>6} {_fmt(speedup, '7.2f') + 'x' if speedup else '-':>8}")
    if COMPILE:
        w.section("intsim JIT compile time (fresh processes, NUMBA_CACHE_DIR in a temp dir)")
        w.line("compile s: time in Numba's compiler on the first call with an empty cache (kernel and its "
               "helpers); cache load s: the same first call in a new process once the cache is written; "
               "import s: importing numba + intsim in the fresh process")
        w.line(f"{'kernel':<22} {'variant':<9} {'compile s':>10} {'cache load s':>13} {'first call s':>13} {'import s':>9}")
        for row in COMPILE:
            w.line(f"{row['kernel']:<22} {row['variant']:<9} {_fmt(row.get('compile_s'), '10.2f'):>10} "
                   f"{_fmt(row.get('cache_load_s'), '13.3f'):>13} {_fmt(row.get('first_call_s'), '13.2f'):>13} "
                   f"{_fmt(row.get('import_s'), '9.2f'):>9}")
