"""Image decoding and resizing for SSD300, shared by the client and the server-side decode model.

``ssd300_image_preprocess`` imports this module too (from the models' Python environment), so
the server decodes exactly as the client does. It may only import the standard library, numpy
and Pillow.

Preprocessing follows NVIDIA's COCO evaluation, which the published accuracy refers to: resize
the whole image to 300×300 with bilinear filtering, aspect ratio not kept. Normalisation
(ImageNet mean/std) happens inside the served model.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

MODEL_INPUT_SIZE = 300


class ImageDecodeError(ValueError):
    """The bytes or file are not an image Pillow can decode."""


def decode_image(data: bytes, *, name: str = "image") -> Image.Image:
    """Decode encoded image bytes (JPEG, PNG, WebP, …) into an upright RGB image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"{name}: refused as a decompression bomb ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not an image file Pillow recognises ({len(data)} bytes)") from exc
    except Exception as exc:  # Pillow raises many types for bad data (OSError, SyntaxError, …)
        raise ImageDecodeError(f"{name}: not a decodable image ({type(exc).__name__}: {exc})") from exc
    return to_rgb(image, name=name)


def to_rgb(image: Image.Image, *, name: str = "image") -> Image.Image:
    """Apply EXIF orientation and convert any Pillow mode to 8-bit RGB.

    16- and 32-bit integer images (I;16, I) are scaled down by their bit depth rather than
    clipped; float images (F) are taken as [0, 1]; alpha is dropped.
    """
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not make a good picture unreadable
        pass
    if image.width < 1 or image.height < 1:
        raise ImageDecodeError(f"{name}: image has no pixels ({image.width}×{image.height})")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        pixels = np.asarray(image, dtype=np.uint16) >> 8
        return Image.fromarray(pixels.astype(np.uint8), "L").convert("RGB")
    if image.mode == "I":
        pixels = np.asarray(image, dtype=np.int64)
        top = 65535 if pixels.max(initial=0) > 255 else 255
        return Image.fromarray((np.clip(pixels, 0, top) * 255 // top).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0)
        return Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a transparent palette goes straight to RGB
    return image.convert("RGB")


def resize_for_model(image: Image.Image) -> np.ndarray:
    """RGB image → uint8 array [300, 300, 3], the model's input."""
    resized = image.resize((MODEL_INPUT_SIZE, MODEL_INPUT_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)
