"""The served postprocess's selection code (model_repository/ssd300_postprocess/1/
detection_selection.py, loaded by path as the Python backend loads it), its served defaults,
and inputs built to stress it.

The inputs here are every anchor's box and class scores, as NVIDIA's reference takes them;
``ranked`` turns them into what ssd300 hands the postprocess with the graph's own ranking
(``top_candidates``), over every anchor so that no tie falls at a cut the reference would
make elsewhere: the selection's ``candidates_per_class`` then makes the reference's cut."""

from __future__ import annotations

import torch

from ssd300_build.detector import top_candidates
from ssd300_common import contract
from ssd300_serving.served_code import load_selection

selection = load_selection()

# The served defaults as select_detections arguments.
DEFAULTS = {
    argument: contract.POSTPROCESS_DEFAULTS[name] for name, (argument, _) in selection.SETTINGS.items()
}


FUNCTIONS = ("select_detections", "select_detections_gpu")


def ranked(boxes, scores):
    """Every anchor ranked per class, as ssd300's graph ranks its best 200."""
    return top_candidates(boxes, scores, scores.shape[2])


def select_with(name, boxes, scores, **options):
    """Selection function ``name`` on every anchor's boxes and scores, served defaults unless overridden."""
    return getattr(selection, name)(*ranked(boxes, scores), **{**DEFAULTS, **options})


def served_selection(boxes, scores, **options):
    """``select_detections`` (what CPU instances serve) with the served defaults."""
    return selection.select_detections(boxes, scores, **{**DEFAULTS, **options})


def one_class(boxes, class_scores, classes=2, label=1):
    """Inputs for one image whose anchors score only for ``label``."""
    scores = torch.zeros(1, classes, len(boxes))
    scores[0, label - 1] = torch.tensor(class_scores)
    return torch.tensor([boxes], dtype=torch.float32), scores


def suppression_chain(length=200, step=0.3):
    """Unit squares each shifted by ``step`` from the one before, scores falling along the row:
    IoU 0.54 with a neighbour, 0.25 with the next but one. Greedy NMS keeps every other box,
    and each decision depends on the one before: the longest chain there can be."""
    boxes = [[i * step, 0.0, i * step + 1.0, 1.0] for i in range(length)]
    return one_class(boxes, [0.9 - i * 0.004 for i in range(length)])


def clustered(seed, batch=3, classes=4, anchors=300):
    """Boxes in a few tight clusters (long suppression chains), some zero-area duplicates, and
    scores on a coarse grid (many ties, some at the threshold)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(batch, 6, 2, generator=generator)
    which = torch.randint(0, 6, (batch, anchors), generator=generator)
    centre = centres.gather(1, which[..., None].expand(batch, anchors, 2))
    centre = centre + 0.03 * torch.randn(batch, anchors, 2, generator=generator)
    size = 0.05 + 0.2 * torch.rand(batch, anchors, 2, generator=generator)
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=2)
    boxes[:, :10, 2] = boxes[:, :10, 0]  # zero width: 0/0 IoU between two of them
    boxes[:, 10:20] = boxes[:, :10]
    scores = torch.randint(0, 20, (batch, classes, anchors), generator=generator).float() / 20
    return boxes, scores
