"""Batched score filtering, per-class NMS and top-K selection for SSD300 (no per-class loop).

Semantics are those of NVIDIA's reference decode: per image and class keep scores above a
threshold, take the highest ``candidates_per_class``, suppress greedily (a box survives only if
its IoU with every kept, higher-scored box of its class is below the criteria, compared in
float32; an undefined 0/0 IoU is not below it), then keep the ``max_detections`` highest scores
of the image. ssd300's graph has already ranked each class's 200 best candidates
(ssd300_build.detector.top_candidates), so selection starts from those. Pure torch, so it runs
on CPU or GPU.

Two functions with the same arguments and the same results:
- ``select_detections`` sweeps the candidate ranks one by one over [groups, K] slices: the
  fastest on a CPU, but ~50 small operations per rank and host syncs, each a kernel launch or a
  stall on a GPU;
- ``select_detections_gpu`` builds every group's [K, K] suppression matrix in a few large
  operations and resolves greedy NMS as a fixed-point iteration of two operations per step,
  with one host sync (a convergence check) per piece of matrices: what a GPU instance runs.
"""

from __future__ import annotations

import torch

# Config / request parameter of ssd300_postprocess -> (select_detections argument, type). The
# names are the contract's (ssd300_common/contract.py; tests/test_client_contract.py).
SETTINGS = {
    "score_threshold": ("score_threshold", float),
    "candidates_per_class": ("candidates_per_class", int),
    "nms_iou_threshold": ("iou_threshold", float),
    "max_detections": ("max_detections", int),
}
# Ranks the CPU sweep resolves per block of IoUs (fewer, larger operations than one per step).
SWEEP_TILE = 8
# The fixed-point iteration checks once, after this many steps, whether it has converged (a host
# sync); if not, it runs to K steps, where it is converged whatever the boxes. Suppression chains
# on real images are a few boxes long, so the check almost always ends it; a chain longer than
# this costs the remaining steps, never a wrong result.
CONVERGENCE_CHECK_AT = 16
# Elements of the [groups, K, K] suppression matrices built at once: batch 64 at 200 candidates
# per class (5,120 groups, 204.8 M elements) is one piece; more groups are split.
MATRIX_ELEMENTS = 1 << 28


def greedy_nms(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS for many groups at once.

    boxes: Tensor[G, K, 4] (x1, y1, x2, y2), each group's candidates sorted by score, high first.
    valid: Tensor[G, K] bool. Returns Tensor[G, K] bool: kept candidates.

    Sweeps the K ranks in order, SWEEP_TILE ranks at a time, each step vectorised over all groups:
    the IoUs of the tile's ranks with every rank from the tile on are one [G, T, K - start] block;
    the tile's own ranks are then resolved one by one (two small operations each), and its kept
    candidates suppress the later ranks in one go. Working on slices keeps the data in cache; a
    dense [G, K, K] IoU matrix was 8x slower on 2 CPU cores, and one rank per step dispatched
    three times the operations. IoU is plain area ratio (no +1), computed in the same operation
    order as the reference, so results match it exactly.
    """
    keep = valid.clone()
    k = valid.shape[1]
    x1, y1, x2, y2 = (coordinate.contiguous() for coordinate in boxes.unbind(-1))
    area = (x2 - x1) * (y2 - y1)
    # Groups whose last valid candidate lies beyond each rank; with rows sorted by that, the
    # sweep from rank r on only needs the first `active[r]` rows.
    ranks = torch.arange(k, device=valid.device)
    last_valid = torch.where(valid, ranks, -1).amax(dim=1)
    active = (last_valid[None, :] > ranks[:, None]).sum(dim=1).tolist()
    for start in range(0, k - 1, SWEEP_TILE):
        rows, size = active[start], min(SWEEP_TILE, k - start)
        if rows == 0:
            break
        tile, later = slice(start, start + size), slice(start, None)
        width = torch.minimum(x2[:rows, tile, None], x2[:rows, None, later]).sub_(
            torch.maximum(x1[:rows, tile, None], x1[:rows, None, later])
        )
        height = torch.minimum(y2[:rows, tile, None], y2[:rows, None, later]).sub_(
            torch.maximum(y1[:rows, tile, None], y1[:rows, None, later])
        )
        overlap = width.clamp_(min=0).mul_(height.clamp_(min=0))
        iou = overlap.div_((area[:rows, tile, None] + area[:rows, None, later]).sub_(overlap))
        # `iou < threshold` keeps, as the reference: a NaN IoU (0/0, two zero-area boxes) suppresses.
        suppresses = iou.lt(iou_threshold).logical_not_()  # [rows, T, K - start]
        kept = keep[:rows, later]
        for rank in range(size - 1):  # inside the tile, in order
            kept[:, rank + 1 : size].masked_fill_(
                suppresses[:, rank, rank + 1 : size] & kept[:, rank, None], False
            )
        if start + size < k:
            hit = (suppresses[:, :, size:] & kept[:, :size, None]).any(dim=1)
            kept[:, size:].masked_fill_(hit, False)
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


def suppression_matrix(boxes: torch.Tensor, iou_threshold: float, dtype: torch.dtype) -> torch.Tensor:
    """Tensor[G, K, K] of 0/1: entry (j, i) is 1 when rank j < i and IoU(j, i) is not below the
    threshold, i.e. candidate j suppresses candidate i if j is kept. boxes: Tensor[G, K, 4].

    Same operation order as ``greedy_nms`` and the reference, so every IoU is bit-identical.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    width = torch.minimum(x2[:, :, None], x2[:, None, :]).sub_(torch.maximum(x1[:, :, None], x1[:, None, :]))
    height = torch.minimum(y2[:, :, None], y2[:, None, :]).sub_(torch.maximum(y1[:, :, None], y1[:, None, :]))
    overlap = width.clamp_(min=0).mul_(height.clamp_(min=0))
    del height
    iou = overlap.div_((area[:, :, None] + area[:, None, :]).sub_(overlap))
    return iou.lt(iou_threshold).logical_not_().triu_(1).to(dtype)


def fixed_point_nms(
    boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Greedy NMS for many groups as a fixed-point iteration; same arguments and result as
    ``greedy_nms``.

    kept[i] = valid[i] and no kept j < i suppresses i. Iterating this map from kept = valid
    fixes rank 0 after one step, rank r after r + 1 steps (it only depends on ranks before it),
    so it reaches the greedy result in at most K steps, usually far fewer (the longest chain of
    suppressions decides), and the greedy result is its only fixed point: a step that changes
    nothing means done. Each step is one batched matrix product and one comparison over all
    groups; convergence is checked once per piece, after CONVERGENCE_CHECK_AT steps (one host
    sync), and a piece not converged then runs on to K steps unchecked.
    """
    groups, k = valid.shape
    # 0/1 sums of at most K terms: exact in float16 (and > 0 whenever any term is), which halves
    # the matrices' memory traffic on a GPU; CPUs multiply float32 faster.
    dtype = dtype or (torch.float16 if boxes.is_cuda else torch.float32)
    keep = torch.empty_like(valid)
    chunk = max(1, MATRIX_ELEMENTS // (k * k))
    for start in range(0, groups, chunk):
        part = slice(start, start + chunk)
        suppresses = suppression_matrix(boxes[part], iou_threshold, dtype)
        # An invalid candidate is never kept: it starts at 1 in the sum that must be 0 to keep.
        blocked = valid[part, None, :].logical_not().to(dtype)
        kept, previous = valid[part, None, :].to(dtype), torch.empty_like(blocked)
        for step in range(k):
            kept, previous = previous, kept
            torch.eq(torch.baddbmm(blocked, previous, suppresses), 0, out=kept)
            if step == CONVERGENCE_CHECK_AT - 1 and torch.equal(kept, previous):
                break
        keep[part] = kept[:, 0].bool()
    return keep


def _candidates(
    boxes: torch.Tensor, scores: torch.Tensor, k: int, score_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each class's first k candidates (scores Tensor[B, C, k], boxes Tensor[B, C, k, 4]) and
    whether each may be kept, Tensor[B, C, k] bool."""
    top_scores, top_boxes = scores[:, :, :k], boxes[:, :, :k]
    # NaN compares false and a non-finite box is refused: no NaN or inf reaches a response.
    valid = (top_scores > score_threshold) & (top_scores <= 1.0) & torch.isfinite(top_boxes).all(dim=-1)
    return top_scores, top_boxes, valid


def _best(
    top_scores: torch.Tensor, top_boxes: torch.Tensor, keep: torch.Tensor, max_detections: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank all kept candidates of an image by score and keep the best max_detections, padded.
    Equal scores keep class order, then rank order, as the reference's stable sort does."""
    batch, classes, _ = keep.shape
    device = keep.device
    labels = torch.arange(1, classes + 1, device=device, dtype=torch.int32)[None, :, None].expand_as(keep)
    flat_scores, flat_keep = top_scores.flatten(1), keep.flatten(1)
    # One int64 key per candidate, unique, so that topk's order is fully defined: the score
    # first (a kept score is a float32 in (0, 1], whose bits read as an integer grow with it),
    # then the lower index. A topk is ~10x cheaper than the stable sort of every candidate.
    index = torch.arange(flat_scores.shape[1], device=device)
    key = (flat_scores.view(torch.int32).long() << 31).sub_(index)
    key = torch.where(flat_keep, key, torch.iinfo(torch.int64).min)
    out_k = min(max_detections, key.shape[1])
    best = key.topk(out_k, dim=1).indices
    best_scores, found = flat_scores.gather(1, best), flat_keep.gather(1, best)

    out_boxes = top_boxes.new_zeros(batch, max_detections, 4)
    out_scores = top_scores.new_zeros(batch, max_detections)
    out_labels = torch.zeros(batch, max_detections, dtype=torch.int32, device=device)
    # torch.where, not multiplication by `found`: a non-finite unselected box times 0 is NaN.
    chosen_boxes = torch.gather(top_boxes.flatten(1, 2), 1, best[..., None].expand(batch, out_k, 4))
    out_boxes[:, :out_k] = torch.where(found[..., None], chosen_boxes, torch.zeros_like(chosen_boxes))
    out_scores[:, :out_k] = torch.where(found, best_scores, torch.zeros_like(best_scores))
    out_labels[:, :out_k] = torch.gather(labels.flatten(1), 1, best) * found
    counts = found.sum(dim=1, keepdim=True, dtype=torch.int32)
    return out_boxes, out_scores, out_labels, counts


def select_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    score_threshold: float,
    candidates_per_class: int,
    iou_threshold: float,
    max_detections: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detections for a batch, padded to ``max_detections``; the rank sweep (fastest on CPU).

    boxes: Tensor[B, C, N, 4] (x1, y1, x2, y2) and scores: Tensor[B, C, N], each class's N best
    candidates for labels 1..C, highest score first (ssd300's outputs). Returns boxes
    Tensor[B, M, 4] float32, scores Tensor[B, M] float32 (highest first), labels Tensor[B, M]
    int32 (0 = padding), counts Tensor[B, 1] int32, with M = max_detections.
    """
    batch, classes, ranked = scores.shape
    k = min(candidates_per_class, ranked)
    top_scores, top_boxes, valid = _candidates(boxes, scores, k, score_threshold)
    keep = _nms_per_group(top_boxes.flatten(0, 1), valid.flatten(0, 1), iou_threshold).view(batch, classes, k)
    return _best(top_scores, top_boxes, keep, max_detections)


def select_detections_gpu(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    score_threshold: float,
    candidates_per_class: int,
    iou_threshold: float,
    max_detections: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``select_detections`` in few large operations (fixed-point NMS): for GPU instances.

    Same arguments and results; no host sync but the NMS iteration's one convergence check.
    """
    batch, classes, ranked = scores.shape
    k = min(candidates_per_class, ranked)
    top_scores, top_boxes, valid = _candidates(boxes, scores, k, score_threshold)
    keep = fixed_point_nms(top_boxes.flatten(0, 1), valid.flatten(0, 1), iou_threshold).view(
        batch, classes, k
    )
    return _best(top_scores, top_boxes, keep, max_detections)


def to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """CPU copies of ``tensors`` for the price of one host sync: the copies are queued on the
    current stream (into pinned memory, so they run asynchronously) and the stream is waited on
    once. CPU tensors come back as they are."""
    if not any(tensor.is_cuda for tensor in tensors):
        return tensors
    copies = [tensor.to("cpu", non_blocking=True) for tensor in tensors]
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return copies


def selection_for(device: torch.device):
    """What an instance on ``device`` runs: the rank sweep on a CPU (faster there), the
    fixed-point NMS on a GPU (a tenth of the operations, few host syncs)."""
    return select_detections_gpu if device.type == "cuda" else select_detections
