"""Terminal summary of the TFLM cross-check: elements compared / mismatched per op."""

import sys


def pytest_terminal_summary(terminalreporter):
    module = sys.modules.get("tests.external.test_tflm")
    report = getattr(module, "MISMATCH_REPORT", None)
    if not report:
        return
    terminalreporter.write_sep("-", "intsim (tflm profile) vs TFLite Micro: mismatching / compared elements")
    for op in sorted(report):
        total, bad = report[op]
        terminalreporter.write_line(f"{op:<28} {bad:>7} / {total:>8} elements")
