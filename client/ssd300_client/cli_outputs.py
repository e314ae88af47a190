"""What ``ssd300-detect`` writes: annotated images in the input's format, COCO results with
their ``images`` list, and YOLO-style text files."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from ssd300_common.labels import COCO_CATEGORIES

from .results import Detections

# --format choices → file suffix. Other inputs (GIF, unknown suffixes, URLs without one) → PNG.
OUTPUT_FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}
_KEPT_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
_JPEG_QUALITY = 95


class OutputError(Exception):
    """An output path that cannot be created or written; the message names it and why."""


def prepare_folder(option: str, folder: Path) -> None:
    """Create ``folder`` (and its parents) for ``option``, or say why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{option}: {folder} exists and is not a folder") from None
    except OSError as exc:
        raise OutputError(f"{option}: cannot create the folder {folder} ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{option}: the folder {folder} is not writable")


def prepare_file(option: str, path: Path) -> None:
    """Create ``path``'s folder for ``option``, or say why ``path`` cannot be written."""
    if path.is_dir():
        raise OutputError(f"{option}: {path} is a folder, not a file")
    prepare_folder(option, path.parent)
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{option}: {path} is not writable")


@contextmanager
def writing(path: Path, option: str | None = None) -> Iterator[None]:
    """OSError while writing ``path`` becomes an OutputError naming it (and ``option``)."""
    try:
        yield
    except OSError as exc:
        prefix = f"{option}: " if option else ""
        raise OutputError(f"{prefix}cannot write {path} ({exc.strerror or exc})") from exc


def output_suffix(source_suffix: str, output_format: str | None) -> str:
    """The annotated image's suffix: ``--format``'s, else the input's when Pillow writes it."""
    if output_format:
        return OUTPUT_FORMATS[output_format]
    return source_suffix if source_suffix in _KEPT_SUFFIXES else ".png"


class OutputNames:
    """Output paths in one folder, never the same twice: photos/a.jpg and more/a.jpg give
    a.jpg and a_2.jpg (and a.txt, a_2.txt alike)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._taken: set[str] = set()

    def stem_for(self, stem: str) -> str:
        candidate, counter = stem, 1
        while candidate in self._taken:
            counter += 1
            candidate = f"{stem}_{counter}"
        self._taken.add(candidate)
        return candidate


def save_image(picture: Image.Image, path: Path) -> None:
    if path.suffix in (".jpg", ".jpeg"):
        picture.save(path, quality=_JPEG_QUALITY)
    else:
        picture.save(path)


def yolo_lines(detections: Detections) -> str:
    """``class cx cy w h confidence`` per detection, Ultralytics' ``save_txt --save-conf``
    layout: class is the 0-based index in the 80-class COCO list (model label − 1), the box
    centre and size are fractions of the image's width and height."""
    height, width = detections.image_size
    lines = []
    for d in detections:
        x1, y1, x2, y2 = d.xyxy
        centre_x, centre_y = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        box_w, box_h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(
            f"{d.class_id - 1} {centre_x:.6f} {centre_y:.6f} {box_w:.6f} {box_h:.6f} {d.confidence:.6f}\n"
        )
    return "".join(lines)


def coco_document(images: Sequence[dict], results: list[dict]) -> dict:
    """COCO results with what they refer to: ``images`` (id, file_name, width, height),
    ``annotations`` (the results, numbered, with their box area) and ``categories``.

    ``pycocotools.coco.COCO(path)`` loads it as a dataset, and
    ``COCO(ground_truth).loadRes(document["annotations"])`` scores it.
    """
    annotations = [
        {"id": number, **result, "area": round(result["bbox"][2] * result["bbox"][3], 3)}
        for number, result in enumerate(results, start=1)
    ]
    categories = [{"id": category, "name": name} for category, name in COCO_CATEGORIES]
    return {"images": list(images), "annotations": annotations, "categories": categories}
