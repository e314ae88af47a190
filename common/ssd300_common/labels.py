"""The 80 COCO classes SSD300 predicts: names and COCO category ids, shipped with the package.

Model label ``k`` (1..80) is row ``k - 1`` of :data:`COCO_CATEGORIES`. COCO category ids run
1..90 with ten gaps (12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused), so the label and the
category id differ from "stop sign" (label 12, category 13) onwards; COCO results JSON needs the
category id.
"""

from __future__ import annotations

import numpy as np

# (COCO category id, name) in category-id order: the order of the 2017 annotation files.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"),
    (6, "bus"), (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"),
    (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"),
    (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
    (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"),
    (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"),
    (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"),
    (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"),
    (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"),
    (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"),
    (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"),
    (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"), (85, "clock"),
    (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip

COCO_NAMES: tuple[str, ...] = tuple(name for _, name in COCO_CATEGORIES)
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(category for category, _ in COCO_CATEGORIES)
NUM_CLASSES = len(COCO_CATEGORIES)  # 80; the model's label 0 is background/padding

_CATEGORY_ID_BY_LABEL = np.array((0, *COCO_CATEGORY_IDS), dtype=np.int32)  # index = model label
_LABEL_BY_CATEGORY_ID = {category: label for label, category in enumerate(COCO_CATEGORY_IDS, start=1)}


def _check_label(label: int) -> int:
    if not 1 <= label <= NUM_CLASSES:
        raise ValueError(f"model label must be 1..{NUM_CLASSES}, got {label}")
    return label


def class_name(label: int) -> str:
    """Name of model label 1..80 (1 → "person", 80 → "toothbrush")."""
    return COCO_NAMES[_check_label(int(label)) - 1]


def coco_category_id(label: int) -> int:
    """COCO category id of model label 1..80 (1 → 1, 12 → 13, 80 → 90)."""
    return COCO_CATEGORY_IDS[_check_label(int(label)) - 1]


def coco_category_ids(labels: np.ndarray) -> np.ndarray:
    """Vectorised :func:`coco_category_id` for an int array of labels 1..80."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        raise ValueError(f"model labels must be 1..{NUM_CLASSES}")
    return _CATEGORY_ID_BY_LABEL[labels]


def label_for_category_id(category_id: int) -> int:
    """Model label 1..80 of a COCO category id (the inverse of :func:`coco_category_id`)."""
    try:
        return _LABEL_BY_CATEGORY_ID[int(category_id)]
    except KeyError:
        raise ValueError(f"{category_id} is not one of the 80 COCO detection category ids") from None


_LABEL_BY_NAME = {name: label for label, name in enumerate(COCO_NAMES, start=1)}


def parse_classes(text: str) -> frozenset[int]:
    """``"person,car"`` or ``"1,3"`` (COCO category ids) or a mix → model labels 1..80.

    Names are matched case-insensitively; ``traffic light`` and ``traffic_light`` are the same.
    Raises ValueError naming the first item that is neither.
    """
    labels: set[int] = set()
    for item in text.split(","):
        spec = item.strip()
        if not spec:
            continue
        if spec.isdigit():
            labels.add(label_for_category_id(int(spec)))
            continue
        name = spec.lower().replace("_", " ")
        if name not in _LABEL_BY_NAME:
            raise ValueError(f"{spec!r} is neither a COCO class name (person, traffic_light, …) nor an id")
        labels.add(_LABEL_BY_NAME[name])
    if not labels:
        raise ValueError(f"no class names or ids in {text!r}")
    return frozenset(labels)
