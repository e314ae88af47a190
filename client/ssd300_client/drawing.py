"""Boxes and labels drawn on a picture, one colour per class."""

from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from .results import Detections

_GOLDEN_RATIO = 0.618033988749895  # successive hues spread evenly round the colour wheel


def class_colour(label: int) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb((label * _GOLDEN_RATIO) % 1.0, 0.8, 1.0)
    return round(red * 255), round(green * 255), round(blue * 255)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_detections(picture: Image.Image, detections: Detections) -> Image.Image:
    """A copy of ``picture`` (RGB) with each detection's box and "name 0.87" label."""
    canvas = picture.convert("RGB") if picture.mode != "RGB" else picture.copy()
    draw = ImageDraw.Draw(canvas)
    short_side = min(canvas.size)
    line_width = max(2, round(short_side / 300))
    font = _font(max(11, round(short_side / 40)))
    for detection in detections:
        colour = class_colour(detection.class_id)
        x1, y1, x2, y2 = detection.xyxy
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line_width)
        text = f"{detection.class_name} {detection.confidence:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        # Label above the box when there is room, inside it otherwise.
        shift = bottom - top + 2 * line_width if y1 - (bottom - top) - 2 * line_width >= 0 else 0
        draw.rectangle((left, top - shift, right + 2 * line_width, bottom - shift + line_width), fill=colour)
        draw.text((x1 + line_width, y1 - shift), text, fill=(0, 0, 0), font=font)
    return canvas
