"""Run single-op models through the TFLite Micro Python interpreter, in a process of its own.

    python -m tests.external.tflm_runner CASES.pkl RESULTS.pkl [--save-models DIR]
    python -m tests.external.tflm_runner --probe

``CASES.pkl`` is a pickled list of dicts ``{"name", "kind", "kwargs", "trials"}``: the model is built by
``tests.external.tflite_builder.build(kind, **kwargs)`` and invoked once per trial, ``trials`` being a
list of lists of input arrays (TFLite layout and dtype).  ``RESULTS.pkl`` receives
``{"version": tflite_micro.__version__, "results": {name: {"outputs": [array per trial]} or {"error": str}}}``.
A case that fails to build, prepare or invoke records its error; the others still run.

``--probe`` exits 0 if ``tflite_micro`` and ``flatbuffers`` import, printing the version (used by the
tests to skip cleanly).  The pytest process never imports ``tflite_micro`` itself: the reference
interpreter is native code that has aborted whole processes on bad models (see
shared/reference/integer-engines.md §6.1).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import traceback
from pathlib import Path

import numpy as np

ARENA_BYTES = 16 << 20


def run_cases(cases, save_dir=None):
    from tflite_micro import runtime

    from tests.external.tflite_builder import build

    results = {}
    for case in cases:
        name = case["name"]
        try:
            model = build(case["kind"], **case["kwargs"])
            if save_dir is not None:
                (Path(save_dir) / f"{name}.tflite").write_bytes(model)
            interp = runtime.Interpreter.from_bytes(model, arena_size=ARENA_BYTES)
            outputs = []
            for trial in case["trials"]:
                for i, x in enumerate(trial):
                    interp.set_input(np.ascontiguousarray(x), i)
                interp.invoke()
                outputs.append(np.array(interp.get_output(0), copy=True))
            results[name] = {"outputs": outputs}
        except Exception as exc:  # noqa: BLE001 - reported per case to the test process
            results[name] = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="?")
    parser.add_argument("results", nargs="?")
    parser.add_argument("--save-models", default=None, help="directory to write the built .tflite files to")
    parser.add_argument("--probe", action="store_true", help="check that tflite_micro and flatbuffers import")
    args = parser.parse_args(argv)
    if args.probe:
        import flatbuffers  # noqa: F401
        import tflite_micro

        print(tflite_micro.__version__)
        return 0
    if not args.cases or not args.results:
        parser.error("CASES and RESULTS are required")
    with open(args.cases, "rb") as f:
        cases = pickle.load(f)
    import tflite_micro

    out = {"version": tflite_micro.__version__, "results": run_cases(cases, args.save_models)}
    with open(args.results, "wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
