"""The reference decode and NMS of NVIDIA's SSD300, written plainly (docs/reference-semantics.md).

This is the yardstick the served postprocess is tested and benchmarked against: one image at a
time, one class at a time, greedy NMS in a Python loop. It decodes the raw network outputs
itself, so it also checks the decode baked into the exported graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .default_boxes import SCALE_WH, SCALE_XY

SCORE_THRESHOLD = 0.05
CANDIDATES_PER_CLASS = 200


@dataclass
class ReferenceDetections:
    boxes: torch.Tensor  # [K, 4] (x1, y1, x2, y2) in [0, 1] of the 300×300 input
    scores: torch.Tensor  # [K], highest first
    labels: torch.Tensor  # [K] int64, 1..80


def iou_one_to_many(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Plain area-overlap / area-union (no +1 pixel convention)."""
    left_top = torch.maximum(box[:2], boxes[:, :2])
    right_bottom = torch.minimum(box[2:], boxes[:, 2:])
    overlap = (right_bottom - left_top).clamp(min=0).prod(dim=1)
    area = (box[2:] - box[:2]).prod()
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    return overlap / (area + areas - overlap)


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, criteria: float) -> list[int]:
    """Indices kept: each has IoU < criteria with every kept box of higher score (equal scores:
    the earlier index first).

    The comparison is NVIDIA's, on float32 tensors: criteria is rounded to float32 (0.45 becomes
    0.449999988…), and an undefined IoU (0/0, two zero-area boxes) is not below it, so it suppresses.
    """
    order = scores.argsort(descending=True, stable=True).tolist()
    kept: list[int] = []
    while order:
        best = order.pop(0)
        kept.append(best)
        if order:
            below = iou_one_to_many(boxes[best], boxes[order]) < criteria
            order = [i for i, keep in zip(order, below.tolist()) if keep]
    return kept


def decode_single(
    ploc: torch.Tensor,
    plabel: torch.Tensor,
    dboxes: torch.Tensor,
    *,
    criteria: float = 0.45,
    max_output: int = 200,
    score_threshold: float = SCORE_THRESHOLD,
) -> ReferenceDetections:
    """ploc: Tensor[4, 8732]; plabel: Tensor[81, 8732] logits; dboxes: Tensor[8732, 4] (cx, cy, w, h)."""
    offsets = ploc.t()
    centre = SCALE_XY * offsets[:, :2] * dboxes[:, 2:] + dboxes[:, :2]
    size = torch.exp(SCALE_WH * offsets[:, 2:]) * dboxes[:, 2:]
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    probabilities = torch.softmax(plabel, dim=0)
    return select_single(
        boxes, probabilities[1:], criteria=criteria, max_output=max_output, score_threshold=score_threshold
    )


def select_single(
    boxes: torch.Tensor,
    class_scores: torch.Tensor,
    *,
    criteria: float = 0.45,
    max_output: int = 200,
    score_threshold: float = SCORE_THRESHOLD,
    candidates_per_class: int = CANDIDATES_PER_CLASS,
) -> ReferenceDetections:
    """The selection after the decode. boxes: Tensor[A, 4] (x1, y1, x2, y2); class_scores:
    Tensor[C, A] probabilities of labels 1..C."""
    out_boxes, out_scores, out_labels = [], [], []
    for label, scores in enumerate(class_scores, start=1):
        candidates = (scores > score_threshold).nonzero().flatten()
        # Equal scores: the lower anchor first.
        candidates = candidates[scores[candidates].argsort(descending=True, stable=True)][
            :candidates_per_class
        ]
        kept = candidates[greedy_nms(boxes[candidates], scores[candidates], criteria)]
        out_boxes.append(boxes[kept])
        out_scores.append(scores[kept])
        out_labels.append(torch.full((len(kept),), label, dtype=torch.int64))

    scores = torch.cat(out_scores)
    best = scores.argsort(descending=True, stable=True)[:max_output]  # equal scores: the lower label first
    return ReferenceDetections(torch.cat(out_boxes)[best], scores[best], torch.cat(out_labels)[best])


def decode_batch(
    ploc: torch.Tensor, plabel: torch.Tensor, dboxes: torch.Tensor, **options
) -> list[ReferenceDetections]:
    """ploc: Tensor[N, 4, 8732]; plabel: Tensor[N, 81, 8732]. One result per image."""
    return [decode_single(loc, label, dboxes, **options) for loc, label in zip(ploc, plabel)]
