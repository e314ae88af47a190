"""Detections of one image, in pixels of the original (EXIF-upright) image.

What the server sends is kept whole: every detection scoring above the server's 0.05
(:data:`~ssd300_common.contract.SERVER_SCORE_THRESHOLD`, what COCO mAP evaluation wants).
Showing them is another matter: :data:`DEFAULT_DISPLAY_THRESHOLD` is for drawing and printing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from ssd300_common.labels import COCO_NAMES, coco_category_id, coco_category_ids

from .drawing import draw_boxes
from .preprocess import ImageInput, load_image

# The torch.hub notebook keeps detections above 0.40 (`utils.pick_best(results, 0.40)`) for display.
DEFAULT_DISPLAY_THRESHOLD = 0.40


class Detection(NamedTuple):
    """One detected object."""

    xyxy: tuple[float, float, float, float]  # (x1, y1, x2, y2) in pixels
    confidence: float
    class_id: int  # model label 1..80
    class_name: str
    coco_category_id: int  # 1..90 with gaps


@dataclass(frozen=True, eq=False)
class Detections:
    """All detections of one image, highest confidence first.

    ``xyxy`` float32 [K, 4] (x1, y1, x2, y2) pixels of the original image, clipped to it;
    ``confidence`` float32 [K]; ``class_id`` int32 [K] (1..80); ``image_size`` (height, width).
    The arrays are read-only.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    image_size: tuple[int, int]
    name: str = "image"

    def __post_init__(self) -> None:
        # Own copies (a few KB at most), so freezing them never touches the caller's arrays.
        arrays = {
            "xyxy": np.array(self.xyxy, dtype=np.float32).reshape(-1, 4),
            "confidence": np.array(self.confidence, dtype=np.float32).reshape(-1),
            "class_id": np.array(self.class_id, dtype=np.int32).reshape(-1),
        }
        if not len(arrays["xyxy"]) == len(arrays["confidence"]) == len(arrays["class_id"]):
            raise ValueError("xyxy, confidence and class_id must have the same length")
        for key, array in arrays.items():
            array.flags.writeable = False
            object.__setattr__(self, key, array)
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))

    @property
    def class_name(self) -> list[str]:
        return [COCO_NAMES[label - 1] for label in self.class_id.tolist()]

    @property
    def coco_category_id(self) -> np.ndarray:
        return coco_category_ids(self.class_id)

    def __len__(self) -> int:
        return len(self.confidence)

    def __getitem__(self, index: int) -> Detection:
        label = int(self.class_id[index])
        x1, y1, x2, y2 = (float(v) for v in self.xyxy[index])
        return Detection(
            (x1, y1, x2, y2),
            float(self.confidence[index]),
            label,
            COCO_NAMES[label - 1],
            coco_category_id(label),
        )

    def __iter__(self) -> Iterator[Detection]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        height, width = self.image_size
        return f"Detections(name={self.name!r}, {len(self)} detections, image {width}×{height})"

    def filter(self, threshold: float = 0.0, *, classes: Collection[int] | None = None) -> Detections:
        """The detections with ``confidence >= threshold`` (and, given ``classes``, whose model
        label 1..80 is one of them), as a new :class:`Detections`."""
        keep = self.confidence >= threshold
        if classes is not None:
            keep &= np.isin(self.class_id, np.fromiter(classes, dtype=np.int32))
        return Detections(
            self.xyxy[keep],
            self.confidence[keep],
            self.class_id[keep],
            self.image_size,
            self.name,
        )

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO detection results: ``image_id``, ``category_id``, ``bbox`` [x, y, w, h] (pixels),
        ``score``."""
        widths_heights = self.xyxy[:, 2:] - self.xyxy[:, :2]
        boxes = np.concatenate([self.xyxy[:, :2], widths_heights], axis=1).astype(np.float64)
        return [
            {
                "image_id": int(image_id),
                "category_id": int(category),
                "bbox": [round(v, 3) for v in box],
                "score": round(score, 6),
            }
            for box, category, score in zip(
                boxes.tolist(), self.coco_category_id.tolist(), self.confidence.tolist(), strict=True
            )
        ]

    def to_dict(self) -> dict:
        """A JSON-ready description: the image's name and size and one entry per detection."""
        height, width = self.image_size
        return {
            "image": self.name,
            "height": height,
            "width": width,
            "detections": [
                {
                    "xyxy": [round(v, 3) for v in d.xyxy],
                    "confidence": round(d.confidence, 6),
                    "class_id": d.class_id,
                    "class_name": d.class_name,
                    "coco_category_id": d.coco_category_id,
                }
                for d in self
            ],
        }

    def draw(self, image: ImageInput, *, threshold: float = DEFAULT_DISPLAY_THRESHOLD) -> Image.Image:
        """``image`` (what these detections came from: a path, bytes, a PIL image or an array)
        with the detections scoring ``>= threshold`` drawn on it, as a new RGB image."""
        picture = load_image(image, name=self.name)
        if (picture.height, picture.width) != self.image_size:
            height, width = self.image_size
            raise ValueError(
                f"image is {picture.width}×{picture.height}, detections are for {width}×{height}"
            )
        shown = self.filter(threshold)
        labels = [f"{d.class_name} {d.confidence:.2f}" for d in shown]
        return draw_boxes(picture, shown.xyxy, labels, shown.class_id.tolist())
