"""Batched score filtering, per-class NMS and top-K selection for SSD300 (no per-class loop).

Semantics are those of NVIDIA's reference decode: per image and class keep scores above a
threshold, take the highest ``candidates_per_class``, suppress greedily (a box survives if its
IoU with every kept, higher-scored box of its class is below the criteria), then keep the
``max_detections`` highest scores of the image. Pure torch, so it runs on CPU or GPU.
"""

from __future__ import annotations

import torch

# Config / request parameter of ssd300_postprocess -> (select_detections argument, type). The
# names are the client's contract (ssd300_client/contract.py; tests/test_client_contract.py).
SETTINGS = {
    "score_threshold": ("score_threshold", float),
    "candidates_per_class": ("candidates_per_class", int),
    "nms_iou_threshold": ("iou_threshold", float),
    "max_detections": ("max_detections", int),
}


def greedy_nms(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS for many groups at once.

    boxes: Tensor[G, K, 4] (x1, y1, x2, y2), each group's candidates sorted by score, high first.
    valid: Tensor[G, K] bool. Returns Tensor[G, K] bool: kept candidates.

    Sweeps the K ranks in order, each step vectorised over all groups: the candidate at rank r,
    if still kept, suppresses the lower-ranked candidates whose IoU with it reaches the
    threshold. Working on [G, K] slices keeps the data in cache; a dense [G, K, K] IoU matrix
    was 8x slower on 2 CPU cores. IoU is plain area ratio (no +1), computed in the same
    operation order as the reference, so results match it exactly.
    """
    keep = valid.clone()
    x1, y1, x2, y2 = (coordinate.contiguous() for coordinate in boxes.unbind(-1))
    area = (x2 - x1) * (y2 - y1)
    # Groups whose last valid candidate lies beyond each rank; with rows sorted by that, the
    # sweep at rank r only needs the first `active[r]` rows.
    last_valid = torch.where(valid, torch.arange(valid.shape[1], device=valid.device), -1).amax(dim=1)
    active = (
        (last_valid[None, :] > torch.arange(valid.shape[1], device=valid.device)[:, None]).sum(dim=1).tolist()
    )
    for rank in range(boxes.shape[1] - 1):
        rows, later = slice(0, active[rank]), slice(rank + 1, None)
        if active[rank] == 0:
            break
        width = torch.minimum(x2[rows, rank, None], x2[rows, later]) - torch.maximum(
            x1[rows, rank, None], x1[rows, later]
        )
        height = torch.minimum(y2[rows, rank, None], y2[rows, later]) - torch.maximum(
            y1[rows, rank, None], y1[rows, later]
        )
        overlap = width.clamp_(min=0).mul_(height.clamp_(min=0))
        iou = overlap / (area[rows, rank, None] + area[rows, later] - overlap)
        keep[rows, later] &= ~((iou >= iou_threshold) & keep[rows, rank, None])
    return keep


def _nms_per_group(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """boxes: Tensor[G, K, 4] score-sorted per group; valid: Tensor[G, K]."""
    keep = valid.clone()
    counts = valid.sum(dim=1)
    crowded = (counts > 1).nonzero().flatten()  # groups where something can be suppressed
    if crowded.numel() == 0:
        return keep
    # Most crowded groups first, so each rank of the sweep works on a prefix of the rows.
    crowded = crowded[counts[crowded].argsort(descending=True)]
    depth = int(valid[crowded].nonzero()[:, 1].max()) + 1
    keep[crowded, :depth] = greedy_nms(boxes[crowded, :depth], valid[crowded, :depth], iou_threshold)
    return keep


def select_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    score_threshold: float,
    candidates_per_class: int,
    iou_threshold: float,
    max_detections: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detections for a batch, padded to ``max_detections``.

    boxes: Tensor[B, A, 4] (x1, y1, x2, y2); scores: Tensor[B, C, A] class probabilities for
    labels 1..C. Returns boxes Tensor[B, K, 4] float32, scores Tensor[B, K] float32 (highest
    first), labels Tensor[B, K] int32 (0 = padding), counts Tensor[B, 1] int32.
    """
    batch, classes, anchors = scores.shape
    k = min(candidates_per_class, anchors)
    top_scores, top_anchors = scores.topk(k, dim=2)  # [B, C, k], sorted high to low
    if torch.isnan(top_scores).any():
        # topk ranks NaN above every number, so NaN anchors would crowd out real candidates.
        # Checked on the top-k slice: a full pass over the scores costs more than the NMS.
        top_scores, top_anchors = torch.nan_to_num(scores, nan=-1.0).topk(k, dim=2)
    top_boxes = torch.gather(
        boxes[:, None].expand(batch, classes, anchors, 4),
        2,
        top_anchors[..., None].expand(batch, classes, k, 4),
    )
    # NaN compares false and a non-finite box is refused: no NaN or inf reaches a response.
    valid = (top_scores > score_threshold) & (top_scores <= 1.0) & torch.isfinite(top_boxes).all(dim=-1)
    keep = _nms_per_group(top_boxes.flatten(0, 1), valid.flatten(0, 1), iou_threshold).view(batch, classes, k)

    # Rank all kept candidates of an image by score and keep the best max_detections.
    labels = torch.arange(1, classes + 1, device=scores.device, dtype=torch.int32)[None, :, None].expand_as(
        keep
    )
    ranked_scores = torch.where(keep, top_scores, torch.full_like(top_scores, -1.0)).flatten(1)
    out_k = min(max_detections, ranked_scores.shape[1])
    best_scores, best = ranked_scores.topk(out_k, dim=1)
    found = best_scores >= 0

    out_boxes = boxes.new_zeros(batch, max_detections, 4)
    out_scores = scores.new_zeros(batch, max_detections)
    out_labels = torch.zeros(batch, max_detections, dtype=torch.int32, device=scores.device)
    # torch.where, not multiplication by `found`: a non-finite unselected box times 0 is NaN.
    chosen_boxes = torch.gather(top_boxes.flatten(1, 2), 1, best[..., None].expand(batch, out_k, 4))
    out_boxes[:, :out_k] = torch.where(found[..., None], chosen_boxes, torch.zeros_like(chosen_boxes))
    out_scores[:, :out_k] = best_scores.clamp(min=0)
    out_labels[:, :out_k] = torch.gather(labels.flatten(1), 1, best) * found
    counts = found.sum(dim=1, keepdim=True, dtype=torch.int32)
    return out_boxes, out_scores, out_labels, counts
