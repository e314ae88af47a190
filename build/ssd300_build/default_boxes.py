"""SSD300's default (anchor) boxes for COCO: the one definition the model, export and tests share.

Numbers are those of NVIDIA's ``dboxes300_coco`` (DeepLearningExamples, PyTorch/Detection/SSD).
"""

from __future__ import annotations

import itertools
import math

import torch

FIG_SIZE = 300
FEATURE_SIZES = (38, 19, 10, 5, 3, 1)
STEPS = (8, 16, 32, 64, 100, 300)
SCALES = (21, 45, 99, 153, 207, 261, 315)
ASPECT_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
# Offsets are regressed in units of 0.1·(box size) for centres and log(0.2·…) for sizes.
SCALE_XY = 0.1
SCALE_WH = 0.2

# Anchors per location: the square, the larger square, and two boxes per aspect ratio.
BOXES_PER_LOCATION = tuple(2 + 2 * len(ratios) for ratios in ASPECT_RATIOS)
NUM_DEFAULT_BOXES = sum(n * size * size for n, size in zip(BOXES_PER_LOCATION, FEATURE_SIZES))  # 8732


def _anchor_sizes(level: int) -> list[tuple[float, float]]:
    small = SCALES[level] / FIG_SIZE
    large = SCALES[level + 1] / FIG_SIZE
    mid = math.sqrt(small * large)
    sizes = [(small, small), (mid, mid)]
    for ratio in ASPECT_RATIOS[level]:
        root = math.sqrt(ratio)
        sizes += [(small * root, small / root), (small / root, small * root)]
    return sizes


def dboxes300_coco() -> torch.Tensor:
    """Tensor[8732, 4] of ``(cx, cy, w, h)`` in [0, 1].

    Enumerated per feature map, then anchor size, then row, then column: the order in which
    :class:`~ssd300_build.model.SSD300` flattens its head outputs.
    """
    boxes = []
    for level, size in enumerate(FEATURE_SIZES):
        # Centres step by STEPS/FIG_SIZE (e.g. 8/300 for the 38×38 map, not 1/38).
        cells_per_unit = FIG_SIZE / STEPS[level]
        for w, h in _anchor_sizes(level):
            for i, j in itertools.product(range(size), repeat=2):
                boxes.append(((j + 0.5) / cells_per_unit, (i + 0.5) / cells_per_unit, w, h))
    return torch.tensor(boxes, dtype=torch.float32).clamp_(0.0, 1.0)


def decode_boxes(ploc: torch.Tensor, dboxes: torch.Tensor) -> torch.Tensor:
    """Apply regressed offsets to the default boxes.

    ploc: Tensor[N, 4, 8732] raw offsets; dboxes: Tensor[8732, 4] ``(cx, cy, w, h)``.
    Returns Tensor[N, 8732, 4] ``(x1, y1, x2, y2)`` in [0, 1] units of the 300×300 input,
    deliberately not clipped (the reference decode does not clip either).
    """
    offsets = ploc.transpose(1, 2)
    centre = SCALE_XY * offsets[..., :2] * dboxes[:, 2:] + dboxes[:, :2]
    size = torch.exp(SCALE_WH * offsets[..., 2:]) * dboxes[:, 2:]
    return torch.cat([centre - 0.5 * size, centre + 0.5 * size], dim=-1)
