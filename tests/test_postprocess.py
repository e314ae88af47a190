"""Box selection in ssd300_postprocess: the reference semantics, batched (docs/reference-semantics.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from ssd300_build.default_boxes import dboxes300_coco
from ssd300_build.detector import SSD300Detector
from ssd300_build.reference import decode_batch
from ssd300_client import contract

from .test_export import photo_batch

SELECTION_FILE = (
    Path(__file__).resolve().parents[1] / "model_repository/ssd300_postprocess/1/detection_selection.py"
)
spec = importlib.util.spec_from_file_location("detection_selection", SELECTION_FILE)
selection = importlib.util.module_from_spec(spec)
spec.loader.exec_module(selection)

# The served defaults as select_detections arguments.
DEFAULTS = {
    argument: contract.POSTPROCESS_DEFAULTS[name] for name, (argument, _) in selection.SETTINGS.items()
}


def select(boxes, scores, **options):
    return selection.select_detections(boxes, scores, **{**DEFAULTS, **options})


def one_class(boxes, class_scores, classes=2, label=1):
    """Inputs for one image whose anchors score only for ``label``."""
    scores = torch.zeros(1, classes, len(boxes))
    scores[0, label - 1] = torch.tensor(class_scores)
    return torch.tensor([boxes], dtype=torch.float32), scores


def test_overlapping_box_of_the_same_class_is_suppressed():
    # A = (0,0)-(1,1), B = (0.5,0)-(1.5,1): overlap 0.5, union 1.5 -> IoU 1/3 (kept at 0.45)
    # C = (0,0)-(1,0.9): overlap with A 0.9, union 1 -> IoU 0.9 (suppressed by A)
    boxes, scores = one_class([[0, 0, 1, 1], [0.5, 0, 1.5, 1], [0, 0, 1, 0.9]], [0.9, 0.8, 0.7])
    out_boxes, out_scores, out_labels, count = select(boxes, scores)
    assert count.item() == 2
    assert_close(out_scores[0, :2], torch.tensor([0.9, 0.8]))
    assert out_labels[0, :3].tolist() == [1, 1, 0]
    assert_close(out_boxes[0, 1], torch.tensor([0.5, 0.0, 1.5, 1.0]))


def test_iou_exactly_at_the_criteria_suppresses_as_the_reference_does():
    # A = (0,0)-(1,1), B = (0,0)-(1,0.5): IoU = 0.5 / 1 = 0.5 exactly; the reference keeps only
    # boxes with IoU < criteria, so B goes at criteria 0.5 and stays at 0.5000001.
    boxes, scores = one_class([[0, 0, 1, 1], [0, 0, 1, 0.5]], [0.9, 0.8])
    assert select(boxes, scores, iou_threshold=0.5)[3].item() == 1
    assert select(boxes, scores, iou_threshold=0.5000001)[3].item() == 2


def test_boxes_of_different_classes_never_suppress_each_other():
    boxes = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]], dtype=torch.float32)
    scores = torch.tensor([[[0.9, 0.0], [0.0, 0.8]]])  # anchor 0 -> class 1, anchor 1 -> class 2
    _, _out_scores, out_labels, count = select(boxes, scores)
    assert count.item() == 2 and out_labels[0, :2].tolist() == [1, 2]


def test_scores_must_exceed_the_threshold_strictly():
    boxes, scores = one_class([[0, 0, 0.1, 0.1], [0.5, 0.5, 0.6, 0.6]], [0.05, 0.0501])
    _, out_scores, _, count = select(boxes, scores)
    assert count.item() == 1 and out_scores[0, 0].item() == pytest.approx(0.0501)


def test_only_the_best_candidates_per_class_enter_nms():
    # 300 disjoint boxes of one class: only the 200 highest scores survive the candidate cut
    boxes = [[i, 0, i + 0.5, 1] for i in range(300)]
    class_scores = [0.1 + i / 1000 for i in range(300)]
    _out_boxes, out_scores, _, count = select(*one_class(boxes, class_scores), max_detections=200)
    assert count.item() == 200
    assert out_scores[0].min().item() == pytest.approx(0.1 + 100 / 1000)


def test_max_detections_keeps_the_highest_scores_and_pads_the_rest():
    boxes = [[i, 0, i + 0.5, 1] for i in range(10)]
    out_boxes, out_scores, _out_labels, count = select(
        *one_class(boxes, [0.1 * (i + 1) - 0.01 for i in range(10)]), max_detections=3
    )
    assert count.item() == 3
    assert out_boxes.shape == (1, 3, 4)
    assert_close(out_scores[0], torch.tensor([0.99, 0.89, 0.79]))


def test_images_without_candidates_give_zero_detections_and_zero_padding():
    boxes, scores = torch.rand(2, 8732, 4), torch.full((2, 80, 8732), 0.01)
    out_boxes, out_scores, out_labels, count = select(boxes, scores)
    assert count.flatten().tolist() == [0, 0]
    assert not out_boxes.any() and not out_scores.any() and not out_labels.any()


def test_non_finite_boxes_and_scores_are_never_selected():
    boxes, scores = one_class([[0, 0, 1, 1], [0, 0, float("inf"), 1], [2, 2, 3, 3]], [float("nan"), 0.9, 0.8])
    out_boxes, out_scores, _out_labels, count = select(boxes, scores)
    assert count.item() == 1
    assert torch.isfinite(out_boxes).all() and torch.isfinite(out_scores).all()
    assert_close(out_boxes[0, 0], torch.tensor([2.0, 2.0, 3.0, 3.0]))


def as_set(boxes, scores, labels, digits=4):
    return sorted(
        (int(label), round(float(s), 5), *[round(float(v), digits) for v in b])
        for b, s, label in zip(boxes, scores, labels)
    )


@pytest.mark.parametrize("criteria, max_output", [(0.45, 200), (0.5, 200), (0.5, 20)])
def test_batched_selection_equals_the_per_class_reference_on_real_outputs(
    random_network, sample_paths, criteria, max_output
):
    network = random_network[0]
    detector = SSD300Detector(network).eval()
    images = photo_batch(sample_paths, 6)
    with torch.no_grad():
        ploc, plabel = network(detector.normalize(images))
        boxes, scores = detector(images)
    expected = decode_batch(ploc, plabel, dboxes300_coco(), criteria=criteria, max_output=max_output)
    out_boxes, out_scores, out_labels, counts = select(
        boxes, scores, iou_threshold=criteria, max_detections=max_output
    )
    for image, reference in enumerate(expected):
        n = counts[image].item()
        assert n == len(reference.scores)
        assert_close(out_scores[image, :n], reference.scores, rtol=0, atol=1e-5)  # both sorted high first
        assert as_set(out_boxes[image, :n], out_scores[image, :n], out_labels[image, :n]) == as_set(
            reference.boxes, reference.scores, reference.labels
        )


def test_nan_scores_do_not_crowd_out_real_candidates():
    # 250 NaN anchors would fill the 200 candidate slots of class 1 if topk ranked them first.
    boxes = [[i, 0, i + 0.5, 1] for i in range(251)]
    class_scores = [float("nan")] * 250 + [0.7]
    out_boxes, out_scores, _, count = select(*one_class(boxes, class_scores))
    assert count.item() == 1 and out_scores[0, 0].item() == pytest.approx(0.7)
    assert_close(out_boxes[0, 0], torch.tensor([250.0, 0.0, 250.5, 1.0]))
