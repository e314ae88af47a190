"""Operations per postprocess call (tests/helpers/dispatch_count.py): the counter itself, and the
GPU selection within its bound of 1,000 operations per call at batch 64 with exactly one host
sync (its figures on real images, 2026-11-30: docs/decisions.md)."""

from __future__ import annotations

import torch

from .helpers.dispatch_count import count
from .helpers.selection import DEFAULTS, clustered, ranked, selection, suppression_chain

# At most this many operations (views included) per call of select_detections_gpu at batch 64:
# a tenth of the ~9,800 the rank sweep dispatched when the bound was set.
TARGET_OPS_AT_64 = 1000


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
    assert wider.ops == counts.ops and wider.syncs == counts.syncs == 1
    assert wider.total <= TARGET_OPS_AT_64


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
