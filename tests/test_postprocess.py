"""Box selection in ssd300_postprocess: the reference semantics, batched (docs/reference-semantics.md).

Both selection functions (the CPU rank sweep and the GPU-shaped fixed-point NMS) run every test
here on CPU tensors, through the ``select`` fixture, and are held to the same results. The
fixture hands them every anchor ranked by the graph's own ranking (helpers.selection.ranked);
the graph's cut at 200 candidates per class is tested on its own."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.testing import assert_close

from ssd300_build.default_boxes import dboxes300_coco
from ssd300_build.detector import CANDIDATES, SSD300Detector, top_candidates
from ssd300_build.reference import decode_batch, select_single

from .helpers.comparisons import as_set
from .helpers.images import photo_batch
from .helpers.selection import (
    DEFAULTS,
    FUNCTIONS,
    clustered,
    one_class,
    ranked,
    select_with,
    selection,
    suppression_chain,
)


@pytest.fixture(params=FUNCTIONS)
def select(request):
    """One selection function on every anchor's boxes and scores (ranked as the graph ranks
    them), with the served defaults unless a test overrides them."""

    def call(boxes, scores, **options):
        return select_with(request.param, boxes, scores, **options)

    return call


def test_overlapping_box_of_the_same_class_is_suppressed(select):
    # A = (0,0)-(1,1), B = (0.5,0)-(1.5,1): overlap 0.5, union 1.5 -> IoU 1/3 (kept at 0.45)
    # C = (0,0)-(1,0.9): overlap with A 0.9, union 1 -> IoU 0.9 (suppressed by A)
    boxes, scores = one_class([[0, 0, 1, 1], [0.5, 0, 1.5, 1], [0, 0, 1, 0.9]], [0.9, 0.8, 0.7])
    out_boxes, out_scores, out_labels, count = select(boxes, scores)
    assert count.item() == 2
    assert_close(out_scores[0, :2], torch.tensor([0.9, 0.8]))
    assert out_labels[0, :3].tolist() == [1, 1, 0]
    assert_close(out_boxes[0, 1], torch.tensor([0.5, 0.0, 1.5, 1.0]))


def test_iou_exactly_at_the_criteria_suppresses_as_the_reference_does(select):
    # A = (0,0)-(1,1), B = (0,0)-(1,0.5): IoU = 0.5 / 1 = 0.5 exactly; the reference keeps only
    # boxes with IoU < criteria, so B goes at criteria 0.5 and stays at 0.5000001.
    boxes, scores = one_class([[0, 0, 1, 1], [0, 0, 1, 0.5]], [0.9, 0.8])
    assert select(boxes, scores, iou_threshold=0.5)[3].item() == 1
    assert select(boxes, scores, iou_threshold=0.5000001)[3].item() == 2


def test_boxes_of_different_classes_never_suppress_each_other(select):
    boxes = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]], dtype=torch.float32)
    scores = torch.tensor([[[0.9, 0.0], [0.0, 0.8]]])  # anchor 0 -> class 1, anchor 1 -> class 2
    _, _out_scores, out_labels, count = select(boxes, scores)
    assert count.item() == 2 and out_labels[0, :2].tolist() == [1, 2]


def test_scores_must_exceed_the_threshold_strictly(select):
    boxes, scores = one_class([[0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6]], [0.05, 0.0501])
    _, out_scores, _, count = select(boxes, scores)
    assert count.item() == 1 and out_scores[0, 0].item() == pytest.approx(0.0501)


def test_only_the_best_candidates_per_class_enter_nms(select):
    # 300 disjoint boxes of one class: only the 200 highest scores survive the candidate cut
    boxes = [[i, 0, i + 0.5, 1] for i in range(300)]
    class_scores = [0.1 + i / 1000 for i in range(300)]
    _out_boxes, out_scores, _, count = select(*one_class(boxes, class_scores), max_detections=200)
    assert count.item() == 200
    assert out_scores[0].min().item() == pytest.approx(0.1 + 100 / 1000)
    _out_boxes, out_scores, _, count = select(*one_class(boxes, class_scores), candidates_per_class=50)
    assert count.item() == 50
    assert out_scores[0, :50].min().item() == pytest.approx(0.1 + 250 / 1000)


def test_the_graph_hands_over_each_classs_200_best_scores_highest_first():
    boxes, scores = clustered(5, batch=2, classes=3, anchors=1000)
    scores = scores + torch.rand(scores.shape, generator=torch.Generator().manual_seed(0)) / 100  # no ties
    top_boxes, top_scores = top_candidates(boxes, scores)
    assert top_boxes.shape == (2, 3, CANDIDATES, 4) and top_scores.shape == (2, 3, CANDIDATES)
    expected, anchors = scores.sort(dim=2, descending=True)
    assert torch.equal(top_scores, expected[:, :, :CANDIDATES])
    for image in range(2):
        assert torch.equal(top_boxes[image], boxes[image][anchors[image, :, :CANDIDATES]])


def test_the_graph_ranks_equal_scores_in_anchor_order():
    scores = torch.tensor([[[0.2, 0.5, 0.9, 0.5, 0.5, 0.1, 0.5]]])
    boxes = torch.arange(7.0)[None, :, None].expand(1, 7, 4)
    top_boxes, top_scores = top_candidates(boxes, scores, 5)
    assert top_scores[0, 0].tolist() == pytest.approx([0.9, 0.5, 0.5, 0.5, 0.5])
    assert top_boxes[0, 0, :, 0].tolist() == [2, 1, 3, 4, 6]


def test_max_detections_keeps_the_highest_scores_and_pads_the_rest(select):
    boxes = [[i, 0, i + 0.5, 1] for i in range(10)]
    out_boxes, out_scores, _out_labels, count = select(
        *one_class(boxes, [0.1 * (i + 1) - 0.01 for i in range(10)]), max_detections=3
    )
    assert count.item() == 3
    assert out_boxes.shape == (1, 3, 4)
    assert_close(out_scores[0], torch.tensor([0.99, 0.89, 0.79]))


def test_images_without_candidates_give_zero_detections_and_zero_padding(select):
    boxes, scores = torch.rand(2, 8732, 4), torch.full((2, 80, 8732), 0.01)
    out_boxes, out_scores, out_labels, count = select(boxes, scores)
    assert count.flatten().tolist() == [0, 0]
    assert not out_boxes.any() and not out_scores.any() and not out_labels.any()


def test_non_finite_boxes_and_scores_are_never_selected(select):
    boxes, scores = one_class([[0, 0, 1, 1], [0, 0, float("inf"), 1], [2, 2, 3, 3]], [float("nan"), 0.9, 0.8])
    out_boxes, out_scores, _out_labels, count = select(boxes, scores)
    assert count.item() == 1
    assert torch.isfinite(out_boxes).all() and torch.isfinite(out_scores).all()
    assert_close(out_boxes[0, 0], torch.tensor([2.0, 2.0, 3.0, 3.0]))


@pytest.fixture(scope="module")
def real_outputs(random_network, sample_paths):
    """Six photos through the session's network, once: its raw outputs (what NVIDIA's decode
    takes) and every anchor's box and score decoded by the graph, from the same forward pass."""
    detector = SSD300Detector(random_network[0]).eval()
    raw = []
    hook = detector.network.register_forward_hook(lambda _module, _inputs, output: raw.append(output))
    try:
        with torch.no_grad():
            boxes, scores = detector.decode(photo_batch(sample_paths, 6))
    finally:
        hook.remove()
    ((ploc, plabel),) = raw
    return ploc, plabel, boxes, scores


@pytest.fixture(scope="module")
def reference_decode(real_outputs):
    """NVIDIA's decode of ``real_outputs`` per (criteria, max_output), each worked out once."""
    ploc, plabel = real_outputs[:2]
    return functools.cache(
        lambda criteria, max_output: decode_batch(
            ploc, plabel, dboxes300_coco(), criteria=criteria, max_output=max_output
        )
    )


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("criteria, max_output", [(0.45, 200), (0.5, 200), (0.5, 20)])
def test_batched_selection_equals_the_per_class_reference_on_real_outputs(
    function, real_outputs, reference_decode, criteria, max_output
):
    boxes, scores = top_candidates(*real_outputs[2:])  # what ssd300 serves: each class's 200 best
    expected = reference_decode(criteria, max_output)
    out_boxes, out_scores, out_labels, counts = getattr(selection, function)(
        boxes, scores, **{**DEFAULTS, "iou_threshold": criteria, "max_detections": max_output}
    )
    for image, reference in enumerate(expected):
        n = counts[image].item()
        assert n == len(reference.scores)
        assert_close(out_scores[image, :n], reference.scores, rtol=0, atol=1e-5)  # both sorted high first
        assert as_set(out_boxes[image, :n], out_scores[image, :n], out_labels[image, :n]) == as_set(
            reference.boxes, reference.scores, reference.labels
        )


@pytest.mark.parametrize("function", FUNCTIONS)
def test_nan_scores_do_not_crowd_out_real_candidates(function):
    # 250 NaN anchors would fill the 200 candidate slots of class 1 if topk ranked them first.
    boxes = [[i, 0, i + 0.5, 1] for i in range(251)]
    class_scores = [float("nan")] * 250 + [0.7]
    graph_outputs = top_candidates(*one_class(boxes, class_scores))
    out_boxes, out_scores, _, count = getattr(selection, function)(*graph_outputs, **DEFAULTS)
    assert count.item() == 1 and out_scores[0, 0].item() == pytest.approx(0.7)
    assert_close(out_boxes[0, 0], torch.tensor([250.0, 0.0, 250.5, 1.0]))


# --- exact equality with the reference on adversarial inputs ------------------------------------


def assert_equals_the_reference(outputs, boxes, scores, **options):
    """Same detections, in the same order, bit for bit, as the per-class reference, image by image."""
    options = {**DEFAULTS, **options}
    out_boxes, out_scores, out_labels, counts = outputs
    for image in range(len(boxes)):
        reference = select_single(
            boxes[image],
            scores[image],
            criteria=options["iou_threshold"],
            max_output=options["max_detections"],
            score_threshold=options["score_threshold"],
            candidates_per_class=options["candidates_per_class"],
        )
        n = int(counts[image])
        assert n == len(reference.scores), f"image {image}"
        assert torch.equal(out_scores[image, :n], reference.scores), f"image {image}"
        assert torch.equal(out_boxes[image, :n], reference.boxes), f"image {image}"
        assert torch.equal(out_labels[image, :n].long(), reference.labels), f"image {image}"
        assert not out_scores[image, n:].any() and not out_labels[image, n:].any()


def test_a_long_suppression_chain_keeps_every_other_box(select):
    boxes, scores = suppression_chain()
    outputs = select(boxes, scores)
    assert outputs[3].item() == 100
    assert_equals_the_reference(outputs, boxes, scores)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "options",
    [{}, {"iou_threshold": 0.5, "max_detections": 20}, {"candidates_per_class": 50, "score_threshold": 0.3}],
    ids=["defaults", "coco-eval", "few-candidates"],
)
def test_clustered_boxes_with_tied_scores_equal_the_reference(select, seed, options):
    boxes, scores = clustered(seed)
    assert_equals_the_reference(select(boxes, scores, **options), boxes, scores, **options)


def test_equal_scores_rank_by_anchor_then_by_label_as_the_reference():
    # Two identical boxes with the same score in one class: the lower anchor is kept. The same
    # score in another class comes after it in the output.
    boxes = torch.tensor([[[0.0, 0, 1, 1], [0.0, 0, 1, 1], [5.0, 5, 6, 6]]])
    scores = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 0.5]]])
    for name in FUNCTIONS:
        outputs = select_with(name, boxes, scores)
        assert outputs[3].item() == 2 and outputs[2][0, :2].tolist() == [1, 2]
        assert_equals_the_reference(outputs, boxes, scores)


def test_identical_boxes_leave_one_per_class(select):
    boxes = torch.tensor([[[0.1, 0.1, 0.4, 0.5]] * 50])
    scores = torch.linspace(0.9, 0.1, 50).expand(1, 3, 50).clone()
    outputs = select(boxes, scores)
    assert outputs[3].item() == 3 and sorted(outputs[2][0, :3].tolist()) == [1, 2, 3]
    assert_equals_the_reference(outputs, boxes, scores)


def test_zero_area_duplicates_suppress_each_other_as_the_reference_does(select):
    # IoU of two identical zero-area boxes is 0/0: not below the criteria, so the second goes.
    boxes, scores = one_class(
        [[0.5, 0.5, 0.5, 0.7], [0.5, 0.5, 0.5, 0.7], [0.1, 0.1, 0.2, 0.2]], [0.9, 0.8, 0.7]
    )
    outputs = select(boxes, scores)
    assert outputs[3].item() == 2
    assert_equals_the_reference(outputs, boxes, scores)


def test_iou_equal_to_the_float32_criteria_suppresses():
    # IoU = float32(0.45) = 0.449999988...: below the number 0.45, but not below the criteria
    # compared in float32, as NVIDIA's decode compares it (and the reference now does).
    height = torch.tensor(0.45).item()
    boxes, scores = one_class([[0, 0, 1, 1], [0, 0, 1, height]], [0.9, 0.8])
    for name in FUNCTIONS:
        outputs = select_with(name, boxes, scores)
        assert outputs[3].item() == 1
        assert_equals_the_reference(outputs, boxes, scores)


def test_the_functions_agree_exactly_on_real_outputs(real_outputs):
    boxes, scores = real_outputs[2:]
    graph_outputs = top_candidates(boxes, scores)
    sweep = selection.select_detections(*graph_outputs, **DEFAULTS)
    fixed_point = selection.select_detections_gpu(*graph_outputs, **DEFAULTS)
    assert all(torch.equal(a, b) for a, b in zip(sweep, fixed_point))
    assert_equals_the_reference(sweep, boxes, scores)


def test_matrices_split_into_pieces_give_the_same_result(monkeypatch):
    boxes, scores = clustered(7, batch=2, classes=5)
    whole = select_with("select_detections_gpu", boxes, scores)
    monkeypatch.setattr(selection, "MATRIX_ELEMENTS", 3 * 200 * 200)  # 3 groups per piece: 4 pieces
    pieces = select_with("select_detections_gpu", boxes, scores)
    assert all(torch.equal(a, b) for a, b in zip(whole, pieces))
    assert_equals_the_reference(pieces, boxes, scores)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16 (as on a GPU)"])
def test_the_fixed_point_nms_equals_the_sweep(dtype):
    for boxes, scores in [suppression_chain(), clustered(3)]:
        top_boxes, top_scores = ranked(boxes, scores)
        _, top_boxes, valid = selection._candidates(top_boxes, top_scores, 200, 0.05)
        top_boxes, valid = top_boxes.flatten(0, 1), valid.flatten(0, 1)
        expected = selection.greedy_nms(top_boxes, valid, 0.45)
        assert torch.equal(selection.fixed_point_nms(top_boxes, valid, 0.45, dtype), expected)


def test_gpu_instances_run_the_fixed_point_selection():
    assert selection.selection_for(torch.device("cuda:0")) is selection.select_detections_gpu
    assert selection.selection_for(torch.device("cpu")) is selection.select_detections
