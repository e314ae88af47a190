"""Labelled boxes drawn on a picture, one colour per class. Knows nothing of detections:
:meth:`ssd300_client.Detections.draw` hands it boxes and label texts."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_GOLDEN_RATIO = 0.618033988749895  # successive hues spread evenly round the colour wheel


def class_colour(label: int) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb((label * _GOLDEN_RATIO) % 1.0, 0.8, 1.0)
    return round(red * 255), round(green * 255), round(blue * 255)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_boxes(
    picture: Image.Image, boxes: np.ndarray, labels: Sequence[str], classes: Sequence[int]
) -> Image.Image:
    """A copy of ``picture`` (RGB) with each box (x1, y1, x2, y2 pixels, float [K, 4]) outlined
    in its class's colour and its label text on a strip of that colour."""
    canvas = picture.convert("RGB") if picture.mode != "RGB" else picture.copy()
    draw = ImageDraw.Draw(canvas)
    short_side = min(canvas.size)
    line_width = max(2, round(short_side / 300))
    font = _font(max(11, round(short_side / 40)))
    for (x1, y1, x2, y2), text, label in zip(np.asarray(boxes).tolist(), labels, classes, strict=True):
        colour = class_colour(label)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line_width)
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        # Label above the box when there is room, inside it otherwise.
        shift = bottom - top + 2 * line_width if y1 - (bottom - top) - 2 * line_width >= 0 else 0
        draw.rectangle((left, top - shift, right + 2 * line_width, bottom - shift + line_width), fill=colour)
        draw.text((x1 + line_width, y1 - shift), text, fill=(0, 0, 0), font=font)
    return canvas


RANDOM_WEIGHTS_BANNER = "RANDOM WEIGHTS — detections are meaningless"
_BANNER_FILL = (200, 0, 0)


def draw_banner(picture: Image.Image, text: str) -> Image.Image:
    """``picture`` (RGB, drawn on in place and returned) with ``text`` in white on a red strip
    across its top: a warning nobody looking at the image can miss."""
    draw = ImageDraw.Draw(picture)
    font = _font(max(11, round(min(picture.size) / 25)))
    try:
        left, top, _, bottom = draw.textbbox((0, 0), text, font=font)
    except UnicodeEncodeError:  # the bitmap fallback font has no em dash
        text = text.replace("—", "-")
        left, top, _, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, (bottom - top) // 3)
    draw.rectangle((0, 0, picture.width, bottom - top + 2 * margin), fill=_BANNER_FILL)
    draw.text((margin - left, margin - top), text, fill=(255, 255, 255), font=font)
    return picture
