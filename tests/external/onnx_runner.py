"""Run ONNX models in ONNX Runtime, in a process of its own.

Usage: ``python tests/external/onnx_runner.py WORKDIR``

``WORKDIR/manifest.json`` lists cases ``[{"name": ..., "model": "file.onnx", "inputs": "file.npz"}]``
(paths relative to WORKDIR).  For each case the model runs on the CPU execution provider with every
graph optimization disabled (``ORT_DISABLE_ALL``: the QDQ fusions of the optimizer change numerics on
rounding ties) and one intra-op thread; the outputs are written to ``WORKDIR/<name>.out.npz`` keyed
by output name.  ``WORKDIR/result.json`` receives the ORT version and, per case, ``"ok"`` or the
error text.  Exit status 0 unless the manifest cannot be read or onnxruntime cannot be imported (3).

The test process never imports onnxruntime: a native crash here cannot take pytest down with it.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[1])
    cases = json.loads((work / "manifest.json").read_text())
    try:
        import onnxruntime as ort
    except ImportError as e:
        (work / "result.json").write_text(json.dumps({"error": f"cannot import onnxruntime: {e}"}))
        return 3
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    results = {}
    for case in cases:
        name = case["name"]
        try:
            session = ort.InferenceSession(str(work / case["model"]), options, providers=["CPUExecutionProvider"])
            with np.load(work / case["inputs"], allow_pickle=False) as data:
                feeds = {k: data[k] for k in data.files}
            names = [o.name for o in session.get_outputs()]
            outs = session.run(names, feeds)
            np.savez(work / f"{name}.out.npz", **dict(zip(names, outs)))
            results[name] = "ok"
        except Exception:  # noqa: BLE001 - reported to the test, which fails on it
            results[name] = traceback.format_exc(limit=3)
    (work / "result.json").write_text(json.dumps({"ort_version": ort.__version__, "cases": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
