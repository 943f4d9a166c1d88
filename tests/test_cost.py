"""Cost report and the greedy arena planner: hand-worked plans, brute-force optimum, CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from intsim import cost, modelfile
from intsim import inspect as ins
from intsim.cli import main
from intsim.cost import Buffer, greedy_plan, peak_live_bytes, plan_conflicts
from tests.test_golden import build_graph


def brute_force_arena(buffers, align=1):
    """The optimal arena: the best first-fit over every placement order.

    Any valid plan, re-placed first-fit in order of its offsets, moves no buffer up; so some
    order's first-fit is optimal, and the minimum over all orders is the true optimum.
    """
    return min(cost.first_fit(buffers, order, align)[1] for order in itertools.permutations(range(len(buffers))))


# --- hand-worked plans --------------------------------------------------------------------------

def test_chain_with_a_gap_reuses_memory():
    # A lives at nodes 0-1, B at 1-2, C at 2-3.  Largest first: A@0; C does not meet A -> C@0;
    # B meets A (node 1) and C (node 2), both at [0, 100) -> B@100.  Arena 150 = peak (A+B at node 1).
    bufs = [Buffer("A", 100, 0, 1), Buffer("B", 50, 1, 2), Buffer("C", 100, 2, 3)]
    offsets, arena = greedy_plan(bufs)
    assert offsets == {"A": 0, "B": 100, "C": 0} and arena == 150
    assert peak_live_bytes(bufs) == 150 == brute_force_arena(bufs)


def test_first_fit_uses_a_gap_below_a_placed_buffer():
    # Equal sizes keep list order: X@0; Y meets X -> Y@4; Z meets only Y, and the gap [0, 4) below
    # Y is free while Z lives -> Z@0; W meets Z@0 [0,4) -> W@4.  Arena 8 = peak (two buffers live).
    bufs = [Buffer("X", 4, 0, 1), Buffer("Y", 4, 1, 2), Buffer("Z", 4, 2, 3), Buffer("W", 2, 3, 3)]
    offsets, arena = greedy_plan(bufs)
    assert offsets == {"X": 0, "Y": 4, "Z": 0, "W": 4} and arena == 8
    assert peak_live_bytes(bufs) == 8 == brute_force_arena(bufs)
    # larger buffers go first whatever their list position: Q is placed before P
    bufs = [Buffer("P", 2, 0, 1), Buffer("Q", 8, 1, 1)]
    assert greedy_plan(bufs) == ({"Q": 0, "P": 8}, 10)


def test_greedy_is_not_always_optimal():
    # Sizes 2,2,1,1.  Greedy: A@0, D@0 (apart from A), B meets D -> B@2, C meets A [0,2) and
    # B [2,3) -> C@3: arena 4.  Optimal: B@0, D@1, A@0, C@2: arena 3 (= peak at nodes 1 and 3).
    bufs = [Buffer("A", 2, 1, 1), Buffer("B", 1, 2, 3), Buffer("C", 1, 1, 2), Buffer("D", 2, 3, 3)]
    offsets, arena = greedy_plan(bufs)
    assert offsets == {"A": 0, "D": 0, "B": 2, "C": 3} and arena == 4
    assert brute_force_arena(bufs) == 3 == peak_live_bytes(bufs)
    assert plan_conflicts(bufs, {"A": 0, "B": 0, "C": 2, "D": 1}) == []  # the optimal plan, checked


def test_alignment_rounds_sizes_and_offsets():
    bufs = [Buffer("a", 1, 0, 1), Buffer("b", 17, 1, 1), Buffer("c", 0, 0, 1)]
    offsets, arena = greedy_plan(bufs, align=16)
    assert offsets == {"b": 0, "a": 32, "c": 0} and arena == 48
    assert peak_live_bytes(bufs, align=16) == 48 and greedy_plan(bufs)[1] == 18
    with pytest.raises(ValueError):
        greedy_plan(bufs, align=0)


@pytest.mark.parametrize("seed", range(6))
def test_random_plans_are_valid_and_bounded(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n = int(rng.integers(1, 7))
        bufs = []
        for i in range(n):
            first = int(rng.integers(0, 5))
            bufs.append(Buffer(f"t{i}", int(rng.integers(0, 40)), first, first + int(rng.integers(0, 3))))
        align = int(rng.choice([1, 4, 16]))
        offsets, arena = greedy_plan(bufs, align)
        assert plan_conflicts(bufs, offsets, align) == []
        assert all(o % align == 0 for o in offsets.values())
        best = brute_force_arena(bufs, align)
        assert peak_live_bytes(bufs, align) <= best <= arena <= sum(cost.align_up(b.size, align) for b in bufs)


# --- cost report on a graph -----------------------------------------------------------------------

def test_cost_report_on_a_graph():
    graph = build_graph()
    report = cost.cost_report(graph, length=100, align=1)
    assert report["input_length"] == 100 and report["shape_inference"]["method"] == "dry-run"
    macs = ins.count_macs(graph, 100)
    assert [n["macs"] for n in report["nodes"]] == [n["macs"] for n in macs["per_node"]] == [2400, 0, 0, 1200, 0]
    assert [n["weight_bytes"] for n in report["nodes"]] == [24 + 4 * 16, 256, 3 * 12, 12 + 4 * 12, 12]
    assert [(n["input_bytes"], n["output_bytes"]) for n in report["nodes"]] == \
        [(200, 400), (400, 400), (800, 400), (400, 300), (300, 300)]
    assert report["totals"] == {"macs": 3600, "weight_bytes": sum(a.nbytes for a in graph.constants.values()),
                                "activation_bytes": 200 + 3 * 400 + 2 * 300}
    plan = {p["tensor"]: (p["offset"], p["bytes"], p["first"], p["last"]) for p in report["memory"]["plan"]}
    # lifetimes: x 0-0, enc/y.0 0-2 (read by the lut and the add), act/y 1-2, sum/y 2-3, out 3-4, out2 4-4.
    # largest first: enc/y.0@0, act/y@400, sum/y@800 (meets both); out@0 (meets sum/y only),
    # out2@300 (meets out), x@400 (meets enc/y.0 only).  Peak: node 2 holds 3 x 400 bytes.
    assert plan == {"x": (400, 200, 0, 0), "enc/y.0": (0, 400, 0, 2), "act/y": (400, 400, 1, 2),
                    "sum/y": (800, 400, 2, 3), "out": (0, 300, 3, 4), "out2": (300, 300, 4, 4)}
    m = report["memory"]
    assert (m["arena_bytes"], m["peak_live_bytes"], m["no_reuse_bytes"]) == (1200, 1200, 2000)
    aligned = cost.cost_report(graph, length=100)["memory"]
    assert aligned["align"] == 16 and aligned["arena_bytes"] % 16 == 0 and aligned["arena_bytes"] >= 1200


def test_static_graph_needs_no_dry_run_and_unread_outputs_live_one_node():
    graph = build_graph()
    for spec in graph.tensors.values():
        spec.shape = [50 if d is None else d for d in spec.shape]
    graph.outputs = ["out2", "act/y"]  # a graph output lives to the end
    report = cost.cost_report(graph, align=1)
    assert report["shape_inference"]["method"] == "static" and report["input_length"] is None
    lives = {p["tensor"]: (p["first"], p["last"]) for p in report["memory"]["plan"]}
    assert lives["act/y"] == (1, 4) and lives["out2"] == (4, 4)


def test_info_cost_cli(tmp_path):
    path = tmp_path / "m.npz"
    modelfile.save(build_graph(), path)
    runner = CliRunner()
    result = runner.invoke(main, ["info", str(path), "--cost", "--length", "100", "--align", "1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    expected = json.loads(json.dumps(cost.cost_report(modelfile.load(path), 100, align=1)))
    for d in (doc["cost"], expected):
        d["shape_inference"].pop("seconds")
    assert doc["cost"] == expected
    assert doc["cost"]["memory"]["arena_bytes"] == 1200 and doc["macs"]["total"] == 3600
    text = runner.invoke(main, ["info", str(path), "--cost", "-n", "100"])
    assert text.exit_code == 0 and "arena" in text.stdout and "peak live" in text.stdout and "enc/y.0" in text.stdout
    bad = runner.invoke(main, ["info", str(path), "--cost", "--no-macs"])
    assert bad.exit_code == 2 and "--no-macs" in bad.output
