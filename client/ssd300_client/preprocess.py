"""Turning what a caller passes as an image into what the server needs, and boxes back.

Accepted images: a file path (``str`` or ``os.PathLike``), the file's bytes, a PIL image, or a
numpy ``uint8`` array (``[H, W, 3]`` RGB, ``[H, W, 4]`` RGBA or ``[H, W]`` / ``[H, W, 1]``
grayscale). Decoding, EXIF orientation, mode conversion and the 300×300 resize are
:mod:`ssd300_common.imaging`, the module the server-side decode model runs too (docs/reference-semantics.md:
NVIDIA's evaluation preprocessing, aspect ratio not kept). Pillow's decompression-bomb limit
(``PIL.Image.MAX_IMAGE_PIXELS``) is left as it is.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Union

import numpy as np
from PIL import Image

from ssd300_common.imaging import ImageDecodeError, decode_image, resize_for_model, to_rgb

from .errors import InvalidImageError

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, np.ndarray]

_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels → Pillow mode
# Server-side decode re-encodes in-memory images losslessly; fast compression keeps it cheap.
_PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class PreparedImage:
    """One image ready to send: model pixels (client decode) or file bytes (server decode)."""

    name: str
    pixels: np.ndarray | None = None  # uint8 [300, 300, 3]
    encoded: bytes | None = None
    size: tuple[int, int] | None = None  # (height, width) of the upright original image


def describe(image: object, *, fallback: str) -> str:
    """A name for messages: the path for files, ``fallback`` (e.g. ``images[3]``) otherwise."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return fallback


def read_file(path: str | os.PathLike, *, name: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise InvalidImageError(f"{name}: cannot read the file ({exc.strerror or exc})", name=name) from exc


def load_image(image: ImageInput, *, name: str = "image") -> Image.Image:
    """Any accepted image → an upright 8-bit RGB PIL image (raises :class:`InvalidImageError`)."""
    try:
        if isinstance(image, (str, os.PathLike)):
            return decode_image(read_file(image, name=name), name=name)
        if isinstance(image, (bytes, bytearray, memoryview)):
            return decode_image(bytes(image), name=name)
        if isinstance(image, Image.Image):
            return to_rgb(_loaded(image, name=name), name=name)
        if isinstance(image, np.ndarray):
            return to_rgb(_from_array(image, name=name), name=name)
    except ImageDecodeError as exc:
        raise InvalidImageError(str(exc), name=name) from exc
    raise TypeError(
        f"{name}: expected a path, bytes, a PIL image or a numpy array, got {type(image).__name__}"
    )


def _loaded(image: Image.Image, *, name: str) -> Image.Image:
    try:
        image.load()  # images from Image.open() decode lazily; surface a truncated file here
    except Exception as exc:
        raise ImageDecodeError(f"{name}: not a decodable image ({type(exc).__name__}: {exc})") from exc
    return image


def _from_array(array: np.ndarray, *, name: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageDecodeError(f"{name}: expected a uint8 array, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in _ARRAY_MODES:
        raise ImageDecodeError(
            f"{name}: expected an array [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {list(array.shape)}"
        )
    mode = _ARRAY_MODES[array.shape[2]]
    return Image.fromarray(np.ascontiguousarray(array[:, :, 0] if mode == "L" else array), mode)


def prepare_for_model(image: ImageInput, *, name: str) -> PreparedImage:
    """Decode and resize on the client: the input of ``ssd300_detector``."""
    rgb = load_image(image, name=name)
    return PreparedImage(name=name, pixels=resize_for_model(rgb), size=(rgb.height, rgb.width))


def prepare_for_server_decode(image: ImageInput, *, name: str) -> PreparedImage:
    """File bytes for ``ssd300_image``, which decodes them with the same imaging code.

    Files and bytes go as they are (no decoding here: that is the point of this mode);
    in-memory images are made upright RGB and sent as PNG.
    """
    if isinstance(image, (str, os.PathLike)):
        encoded = read_file(image, name=name)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        encoded = bytes(image)
    else:
        buffer = io.BytesIO()
        load_image(image, name=name).save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
        encoded = buffer.getvalue()
    if not encoded:
        raise InvalidImageError(f"{name}: empty file", name=name)
    return PreparedImage(name=name, encoded=encoded)


def boxes_to_pixels(boxes: np.ndarray, *, width: int, height: int) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) normalised to the 300×300 model input → pixels of the original.

    The whole image was resized to 300×300 without keeping its aspect ratio, so x scales by
    the width and y by the height independently; results are clipped to [0, W] and [0, H].
    Returns float32 [K, 4].
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    size = np.array([width, height, width, height], dtype=np.float32)
    return np.clip(boxes * size, 0, size)
