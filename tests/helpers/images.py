"""Images the tests send: batches built from the sample photos, and encoded files that are odd,
broken or hostile (built here, so no binary fixture is committed)."""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
import torch
from PIL import Image


def photo_batch(sample_paths, size):
    """``size`` real-looking uint8 images: the sample photos, then mirrored and shifted copies."""
    from ssd300_common.imaging import decode_image, resize_for_model

    photos = [torch.tensor(resize_for_model(decode_image(p.read_bytes()))) for p in sample_paths]
    variants = photos + [p.flip(1) for p in photos] + [p.roll(37, dims=0) for p in photos]
    return torch.stack(variants[:size])


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def noise(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def png_claiming(width: int, height: int, rows: int) -> bytes:
    """An 8-bit greyscale PNG whose header claims width × height but whose data holds ``rows`` rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (width + 1) * rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@cache
def jpeg_photo() -> bytes:
    return encode(noise(), "JPEG", quality=90)


@cache
def png_photo() -> bytes:
    return encode(noise(), "PNG")


@cache
def huge_jpeg() -> bytes:
    """8000 × 6000 (48 megapixels), smooth so the file stays ~1 MB."""
    ramp = Image.linear_gradient("L").resize((8000, 6000))
    return encode(
        Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp)), "JPEG", quality=80
    )


def animated_gif() -> bytes:
    frames = [noise(seed=seed).convert("P") for seed in range(2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def palette_with_transparency() -> bytes:
    return encode(noise().convert("P"), "PNG", transparency=0)


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 21), "PNG")


def float_tiff() -> bytes:
    pixels = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    return encode(Image.fromarray(pixels, "F"), "TIFF")
