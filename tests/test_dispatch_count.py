"""Operations per postprocess call: the counter itself, the GPU selection's worst case against
the target, and the benchmark report's rows (load_tests/benchmark/dispatch_count.py)."""

from __future__ import annotations

import torch

from load_tests.benchmark import dispatch_count, report
from load_tests.benchmark.dispatch_count import TARGET_OPS_AT_64, count, total
from load_tests.benchmark.formatting import to_json

from .helpers.selection import DEFAULTS, clustered, ranked, selection, suppression_chain


def test_the_counter_counts_operations_views_and_syncs():
    def known(x):
        y = (x + 1).view(-1)  # add; view
        return y.sum().item()  # sum; item (a sync)

    counts = count(known, torch.ones(2, 3))
    assert (counts.ops, counts.views, counts.syncs) == (3, 1, 1)
    assert counts.by_name["aten.add.Tensor"] == 1 and counts.by_name["aten.view.default"] == 1


def test_the_gpu_selection_stays_within_the_target_on_the_longest_chain():
    """The operations grow with the iteration steps only, not with the batch (one matrix piece
    up to batch 64 at the default 200 candidates): a chain of 200 needs every step."""
    boxes, scores = ranked(*suppression_chain())
    counts = count(selection.select_detections_gpu, boxes, scores, **DEFAULTS)
    steps = 200
    assert counts.total <= TARGET_OPS_AT_64
    assert counts.by_name["aten.baddbmm.default"] == steps
    # One convergence check, the only host sync, even when it finds the iteration unfinished.
    assert counts.syncs == 1 and counts.by_name["aten.equal.default"] == 1
    wider = count(
        selection.select_detections_gpu, boxes.expand(64, -1, -1, -1), scores.expand(64, -1, -1), **DEFAULTS
    )
    assert wider.ops == counts.ops and wider.syncs == counts.syncs


def test_the_gpu_selection_stops_at_its_one_check_when_chains_are_short():
    boxes, scores = ranked(*clustered(1))
    counts = count(selection.select_detections_gpu, boxes, scores, **DEFAULTS)
    assert counts.syncs == 1
    assert counts.by_name["aten.baddbmm.default"] == selection.CONVERGENCE_CHECK_AT


def test_the_rank_sweep_dispatches_far_more_than_the_gpu_selection():
    boxes, scores = ranked(*clustered(0))
    sweep = count(selection.select_detections, boxes, scores, **DEFAULTS)
    fixed_point = count(selection.select_detections_gpu, boxes, scores, **DEFAULTS)
    assert sweep.total > 5 * fixed_point.total


def test_the_report_gives_the_counts_and_the_target_row():
    small = {size: ranked(*clustered(size, batch=size, classes=2, anchors=60)) for size in (1, 64)}
    measured = dispatch_count.measure(selection, DEFAULTS, small)
    # Through JSON as results.json stores it (batch sizes become strings there).
    results = {"inprocess": {"forward": {}, "dispatch": measured}, "triton": []}
    results = report.from_json(to_json(results))
    assert results["inprocess"]["dispatch"] == measured
    (name, required, shown, met, _) = report._dispatch_rows(results)[0]
    gpu = total(measured["select_detections_gpu"][64])
    assert (
        "batch 64" in name and required == "≤ 1,000" and met == (gpu <= 1000) and shown.startswith(f"{gpu:,}")
    )
    section = "\n".join(report._dispatch_section(results))
    assert section.count("| `select_detections` |") == 2 and section.count("| `select_detections_gpu` |") == 2
